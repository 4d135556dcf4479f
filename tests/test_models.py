"""EfficientNetV2 family against the official definition (SPEC section 2)."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from effv2.models import VARIANTS, EfficientNetV2, init_weights
from effv2.models.activation import SiLU
from effv2.models.blocks import AdjustableDropout, ConvBNAct, DropPath, FusedMBConv, MBConv
from effv2.models.noise import counter_uniform_numpy
from effv2.models.registry import count_parameters

# exact for S (the figure); the others match the published table to its precision
PUBLISHED_PARAMS_M = {
    "effnetv2_s": 21.458488, "effnetv2_m": 54.14, "effnetv2_l": 118.52, "effnetv2_xl": 208.12,
    "effnetv2_b0": 7.1, "effnetv2_b1": 8.1, "effnetv2_b2": 10.1, "effnetv2_b3": 14.4,
}  # fmt: skip
EXACT_PARAMS = {
    "effnetv2_s": 21_458_488, "effnetv2_m": 54_139_356, "effnetv2_l": 118_515_272, "effnetv2_xl": 208_119_808,
    "effnetv2_b0": 7_139_704, "effnetv2_b1": 8_141_052, "effnetv2_b2": 10_096_086, "effnetv2_b3": 14_358_406,
}  # fmt: skip


# SPEC section 2 / effnetv2_configs.py: (train size, eval size)
OFFICIAL_SIZES = {
    "effnetv2_s": (300, 384), "effnetv2_m": (384, 480), "effnetv2_l": (384, 480), "effnetv2_xl": (384, 512),
    "effnetv2_b0": (192, 224), "effnetv2_b1": (192, 240), "effnetv2_b2": (208, 260), "effnetv2_b3": (240, 300),
}  # fmt: skip


@pytest.fixture(autouse=True)
def _graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parameter_counts_match_the_published_table(name: str) -> None:
    count = count_parameters(EfficientNetV2(VARIANTS[name], num_classes=1000))
    assert count == EXACT_PARAMS[name]
    decimals = len(str(PUBLISHED_PARAMS_M[name]).split(".")[1])
    assert round(count / 1e6, decimals) == PUBLISHED_PARAMS_M[name]


def test_model_configs_are_the_variant_table_with_the_official_sizes() -> None:
    """conf/model/ holds one file per variant (the micro network besides), carrying the official
    sizes: the one place the train and eval sizes come from."""
    from omegaconf import OmegaConf

    from conftest import CONF_DIR
    from effv2.models.variants import MICRO

    files = {p.stem: OmegaConf.load(p) for p in (CONF_DIR / "model").glob("*.yaml")}
    assert set(files) == {*VARIANTS, MICRO.name}
    for name, config in files.items():
        assert config.name == name
        assert (config.train_size, config.eval_size) == OFFICIAL_SIZES.get(name, (32, 32)), name


def test_stage_channels_and_depth_rounding_of_b3() -> None:
    spec = VARIANTS["effnetv2_b3"]
    # width 1.2: 32 -> 40 (stem), 16 -> 16 (19.2 rounds down: the official V2 rounding has no
    # 90 % floor, and the released B3 checkpoint's first stage has 16 channels), 1280 -> 1536
    assert spec.stem_channels == 40
    assert spec.round_channels(16) == 16
    assert spec.round_channels(1280) == 1536
    # depth 1.4: ceil(1.4 * r)
    assert [spec.round_repeats(s.repeats) for s in spec.stages] == [2, 3, 3, 5, 7, 12]


def test_channel_rounding_is_to_the_nearest_multiple_of_8() -> None:
    spec = VARIANTS["effnetv2_b2"]  # width 1.1
    for channels in range(8, 2000, 4):
        rounded = spec.round_channels(channels)
        assert rounded % 8 == 0 and abs(rounded - channels * spec.width) <= 4


@pytest.mark.parametrize(
    "name,size,published,tolerance", [("effnetv2_s", 384, 8.4e9, 0.05), ("effnetv2_b0", 224, 0.72e9, 0.05)]
)
def test_flops_within_5_percent_of_published(name: str, size: int, published: float, tolerance: float) -> None:
    macs = EfficientNetV2(VARIANTS[name]).macs(size)
    assert abs(macs - published) / published < tolerance


def test_block_structure_follows_the_official_definition() -> None:
    net = EfficientNetV2(VARIANTS["effnetv2_s"])
    blocks = list(net.blocks)
    assert len(blocks) == 2 + 4 + 4 + 6 + 9 + 15
    assert all(isinstance(b, FusedMBConv) for b in blocks[:10])
    assert all(isinstance(b, MBConv) for b in blocks[10:])
    # expansion-1 fused block: a single 3x3 conv + BN + SiLU
    assert not blocks[0].has_expand and blocks[0].project.kernel == 3
    assert isinstance(blocks[0].project.act, SiLU)
    # MBConv SE reduces to 0.25 of the block INPUT channels (64 -> 16), not of the expanded ones
    first_mb = blocks[10]
    assert first_mb.se.channels == 256 and first_mb.se.reduced == 16
    # residual only where stride 1 and channels unchanged
    assert not blocks[2].has_residual and blocks[3].has_residual
    # BN eps and momentum as in the official code: running = 0.9 * running + 0.1 * batch
    bn = net.stem.bn
    assert bn.eps == pytest.approx(1e-3)
    bn.set_train(True)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    bn(Tensor(np.full((2, 24, 3, 3), 10.0, np.float32)))
    np.testing.assert_allclose(bn.moving_mean.asnumpy(), 1.0, rtol=1e-6)


def test_stochastic_depth_schedule_is_linear_over_blocks() -> None:
    net = EfficientNetV2(VARIANTS["effnetv2_b0"], drop_path_rate=0.2)
    blocks = list(net.blocks)
    for index, block in enumerate(blocks):
        expected = 0.2 * index / len(blocks) if block.has_residual else 0.0
        assert block.drop_path.rate == pytest.approx(expected)
        assert block.drop_path.salt == index


def test_parameter_names_are_stable() -> None:
    names = {p.name for p in EfficientNetV2(VARIANTS["effnetv2_b0"]).get_parameters()}
    for expected in (
        "stem.conv.weight", "stem.bn.gamma", "stem.bn.moving_mean", "stem.bn.moving_variance",
        "blocks.0.project.conv.weight", "blocks.1.expand.conv.weight", "blocks.5.dw.conv.weight",
        "blocks.5.se.reduce.weight", "blocks.5.se.expand.bias", "blocks.5.project.bn.beta",
        "head.conv.weight", "classifier.weight", "classifier.bias",
    ):  # fmt: skip
        assert expected in names


@pytest.mark.parametrize("size", [32, 65, 97])
def test_output_shape_at_any_input_size(size: int) -> None:
    ms.set_context(mode=ms.PYNATIVE_MODE)  # no graph compilation per size; the modes agree (below)
    net = EfficientNetV2(VARIANTS["effnetv2_b0"], num_classes=7)
    net.set_train(False)
    out = net(Tensor(np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)))
    assert out.shape == (2, 7)
    assert net.forward_features(Tensor(np.zeros((1, 3, size, size), np.float32))).shape == (1, 1280)


def test_in_channels_and_classifier_swap() -> None:
    net = EfficientNetV2(VARIANTS["effnetv2_b0"], num_classes=1000, in_channels=1)
    net.reset_classifier(5)
    net.set_train(False)
    assert net(Tensor(np.zeros((1, 1, 40, 40), np.float32))).shape == (1, 5)
    assert net.classifier.weight.shape == (5, 1280)


@pytest.mark.parametrize("size,stride", [(8, 2), (9, 2), (7, 1), (10, 2)])
def test_same_padding_equals_explicit_bottom_right_pad(size: int, stride: int) -> None:
    block = ConvBNAct(3, 4, 3, stride=stride, act=False)
    rng = np.random.default_rng(size)
    x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    out = block.conv(Tensor(x)).asnumpy()
    # TensorFlow: total = max((ceil(n/s) - 1) * s + k - n, 0); top = total // 2, extra at the bottom/right
    total = max((-(-size // stride) - 1) * stride + 3 - size, 0)
    before, after = total // 2, total - total // 2
    padded = np.pad(x, ((0, 0), (0, 0), (before, after), (before, after)))
    reference = nn.Conv2d(
        3, 4, 3, stride=stride, pad_mode="valid", has_bias=False, weight_init=Tensor(block.conv.weight.asnumpy())
    )
    np.testing.assert_allclose(out, reference(Tensor(padded)).asnumpy(), atol=1e-5)


def test_initialisation_is_official_and_deterministic() -> None:
    a = EfficientNetV2(VARIANTS["effnetv2_b0"])
    b = EfficientNetV2(VARIANTS["effnetv2_b0"])
    init_weights(a, 3)
    init_weights(b, 3)
    for pa, pb in zip(a.get_parameters(), b.get_parameters(), strict=True):
        np.testing.assert_array_equal(pa.asnumpy(), pb.asnumpy())
    head = a.head.conv.weight.asnumpy()  # 1x1, fan_out = 1280
    assert head.std() == pytest.approx(np.sqrt(2.0 / 1280), rel=0.02)
    dw = a.blocks[5].dw.conv.weight.asnumpy()  # depthwise 3x3: fan_out = 9
    assert dw.std() == pytest.approx(np.sqrt(2.0 / 9), rel=0.05)
    dense = a.classifier.weight.asnumpy()
    assert np.abs(dense).max() <= 1.0 / np.sqrt(1000) and dense.std() > 0.5 / np.sqrt(3 * 1000)
    assert not np.array_equal(head, _fresh(4).head.conv.weight.asnumpy())


def _fresh(seed: int) -> EfficientNetV2:
    net = EfficientNetV2(VARIANTS["effnetv2_b0"])
    init_weights(net, seed)
    return net


def _step(value: int) -> Tensor:
    return Tensor(np.array([value], np.int64))


def test_drop_path_and_dropout_only_in_training() -> None:
    ms.set_context(mode=ms.PYNATIVE_MODE)
    drop = DropPath(0.5, salt=7)
    x = Tensor(np.ones((4000, 1, 1, 1), np.float32))
    drop.set_train(False)
    np.testing.assert_array_equal(drop(x, _step(0)).asnumpy(), x.asnumpy())
    drop.set_train(True)
    out = drop(x, _step(0)).asnumpy().ravel()
    assert set(np.unique(out)) == {0.0, 2.0}  # dropped or rescaled by 1 / keep_prob
    assert abs((out == 0).mean() - 0.5) < 0.05
    net = EfficientNetV2(VARIANTS["effnetv2_b0"], num_classes=10, drop_rate=0.5, drop_path_rate=0.5)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    net.set_train(False)
    np.testing.assert_array_equal(net(x).asnumpy(), net(x).asnumpy())
    net.set_train(True)
    first = net(x).asnumpy()
    net.rng_step.set_data(_step(1))
    assert not np.allclose(first, net(x).asnumpy())


def test_masks_are_a_pure_function_of_the_step() -> None:
    """What makes resume exact: the same rng_step replays the same masks."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    drop = DropPath(0.3, salt=11)
    drop.set_train(True)
    x = Tensor(np.ones((512, 1, 1, 1), np.float32))
    masks = [drop(x, _step(s)).asnumpy().ravel() for s in (5, 6, 5)]
    np.testing.assert_array_equal(masks[0], masks[2])
    assert not np.array_equal(masks[0], masks[1])
    expected = (counter_uniform_numpy((512, 1, 1, 1), 5, 11).ravel() >= 0.3) / 0.7
    np.testing.assert_allclose(masks[0], expected, rtol=1e-6)
    uniform = counter_uniform_numpy((100_000,), 3, 1)
    assert abs(uniform.mean() - 0.5) < 0.01 and uniform.min() >= 0.0 and uniform.max() < 1.0


def test_graph_and_pynative_outputs_are_equal() -> None:
    net = _fresh(1)
    net.set_train(False)
    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 48, 48)).astype(np.float32))
    ms.set_context(mode=ms.GRAPH_MODE)
    graph_out = net(x).asnumpy()
    ms.set_context(mode=ms.PYNATIVE_MODE)
    pynative_out = net(x).asnumpy()
    np.testing.assert_allclose(graph_out, pynative_out, atol=1e-5)


def test_sync_bn_conversion_keeps_parameters_and_names() -> None:
    from effv2.models.blocks import convert_to_sync_bn

    net = EfficientNetV2(VARIANTS["effnetv2_b0"], num_classes=10)
    net.stem.fused_bn = nn.Identity()  # as effv2.models.fused_bn sets it: it would bypass the SyncBatchNorm
    before = {p.name: id(p) for p in net.get_parameters()}
    assert convert_to_sync_bn(net) == 59
    assert net.stem.fused_bn is None
    assert isinstance(net.stem.bn, nn.SyncBatchNorm) and isinstance(net.blocks[5].dw.bn, nn.SyncBatchNorm)
    assert {p.name: id(p) for p in net.get_parameters()} == before
    assert net.stem.bn.eps == pytest.approx(1e-3) and net.stem.bn.momentum == pytest.approx(0.1)  # 1 - 0.9


def test_head_dropout_rate_changes_without_a_stale_compiled_graph() -> None:
    """Progressive learning sets the rate between stages; the compiled graph must see it."""
    ms.set_context(mode=ms.GRAPH_MODE)
    drop = AdjustableDropout(0.0, salt=3)
    drop.set_train(True)
    x = Tensor(np.ones((64, 1280), np.float32))
    np.testing.assert_array_equal(drop(x, _step(0)).asnumpy(), x.asnumpy())
    drop.set_rate(0.5)
    out = drop(x, _step(0)).asnumpy()
    assert set(np.unique(out)) == {0.0, 2.0}
    expected = (counter_uniform_numpy((64, 1280), 0, 3) >= 0.5) / 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        drop.set_rate(1.0)
