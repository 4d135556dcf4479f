"""The seed's own checkpoints (MindSpore ModelZoo ``official/cv/EfficientNetV2``) into effv2.

The seed's network is written here anew to its model file's published layout (``effnetv2.py``:
every block one SequentialCell ``conv``, SE as ``conv.6.fc`` with two biased 1x1 convolutions, the
stage tables of S, M, L and XL), with random weights and BN statistics, and saved with
``mindspore.save_checkpoint`` beside training state like the seed's optimizer writes. Converted
(``task=convert``) or loaded directly (``model.pretrained=``), effv2's network gives its logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from conftest import one_line_error, run_cli
from effv2.checkpoints import BOOKKEEPING, model_entries
from effv2.conversion.convert import convert
from effv2.conversion.names import seed_names
from effv2.conversion.seed import load_pretrained_weights
from effv2.errors import UserError
from effv2.models import VARIANTS, EfficientNetV2

# the seed's stage tables (t: expansion, c: channels, n: repeats, s: stride, SE), per model function
SEED_TABLES = {
    "effnetv2_s": [(1, 24, 2, 1, 0), (4, 48, 4, 2, 0), (4, 64, 4, 2, 0), (4, 128, 6, 2, 1), (6, 160, 9, 1, 1),
                   (6, 256, 15, 2, 1)],
    "effnetv2_m": [(1, 24, 3, 1, 0), (4, 48, 5, 2, 0), (4, 80, 5, 2, 0), (4, 160, 7, 2, 1), (6, 176, 14, 1, 1),
                   (6, 304, 18, 2, 1), (6, 512, 5, 1, 1)],
    "effnetv2_l": [(1, 32, 4, 1, 0), (4, 64, 7, 2, 0), (4, 96, 7, 2, 0), (4, 192, 10, 2, 1), (6, 224, 19, 1, 1),
                   (6, 384, 25, 2, 1), (6, 640, 7, 1, 1)],
    "effnetv2_xl": [(1, 32, 4, 1, 0), (4, 64, 8, 2, 0), (4, 96, 8, 2, 0), (4, 192, 16, 2, 1), (6, 256, 24, 1, 1),
                    (6, 512, 32, 2, 1), (6, 640, 8, 1, 1)],
}  # fmt: skip
HEAD = 1280


def seed_layout(variant: str, classes: int) -> dict[str, tuple[int, ...]]:
    """Every model tensor of the seed's network for ``variant``: name -> shape, from its model file."""
    table = SEED_TABLES[variant]
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(conv: str, bn: str, cin: int, cout: int, k: int, group: int = 1) -> None:
        shapes[f"{conv}.weight"] = (cout, cin // group, k, k)
        shapes.update({f"{bn}.{p}": (cout,) for p in ("gamma", "beta", "moving_mean", "moving_variance")})

    cin = table[0][1]
    conv_bn("features.0.0", "features.0.1", 3, cin, 3)
    index = 1
    for t, c, n, _, se in table:
        for _ in range(n):
            hidden, p = round(cin * t), f"features.{index}.conv"
            if se:
                conv_bn(f"{p}.0", f"{p}.1", cin, hidden, 1)
                conv_bn(f"{p}.3", f"{p}.4", hidden, hidden, 3, group=hidden)
                shapes |= {f"{p}.6.fc.0.weight": (cin // 4, hidden, 1, 1), f"{p}.6.fc.0.bias": (cin // 4,),
                           f"{p}.6.fc.2.weight": (hidden, cin // 4, 1, 1), f"{p}.6.fc.2.bias": (hidden,)}  # fmt: skip
                conv_bn(f"{p}.7", f"{p}.8", hidden, c, 1)
            elif t == 1:
                conv_bn(f"{p}.0", f"{p}.1", hidden, c, 3)
            else:
                conv_bn(f"{p}.0", f"{p}.1", cin, hidden, 3)
                conv_bn(f"{p}.3", f"{p}.4", hidden, c, 1)
            cin, index = c, index + 1
    conv_bn("conv.0", "conv.1", cin, HEAD, 1)
    shapes |= {"classifier.weight": (classes, HEAD), "classifier.bias": (classes,)}
    return shapes


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=0.9, eps=1e-3)


def _conv(cin: int, cout: int, k: int, stride: int = 1, group: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, pad_mode="same", group=group, has_bias=bias)


class _SeedSE(nn.Cell):
    def __init__(self, inp: int, hidden: int) -> None:
        super().__init__()
        self.fc = nn.SequentialCell(
            [_conv(hidden, inp // 4, 1, bias=True), nn.SiLU(), _conv(inp // 4, hidden, 1, bias=True), nn.Sigmoid()]
        )

    def construct(self, x):
        return x * self.fc(x.mean(axis=(2, 3), keep_dims=True))


class _SeedBlock(nn.Cell):
    def __init__(self, inp: int, oup: int, stride: int, t: int, se: int) -> None:
        super().__init__()
        hidden = round(inp * t)
        self.residual = stride == 1 and inp == oup
        if se:
            layers = [_conv(inp, hidden, 1), _bn(hidden), nn.SiLU(), _conv(hidden, hidden, 3, stride, group=hidden),
                      _bn(hidden), nn.SiLU(), _SeedSE(inp, hidden), _conv(hidden, oup, 1), _bn(oup)]  # fmt: skip
        elif t == 1:  # the seed's expansion-1 Fused-MBConv: one 3x3 convolution at stride 1
            layers = [_conv(hidden, oup, 3), _bn(oup), nn.SiLU()]
        else:
            layers = [_conv(inp, hidden, 3, stride), _bn(hidden), nn.SiLU(), _conv(hidden, oup, 1), _bn(oup)]
        self.conv = nn.SequentialCell(layers)

    def construct(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class SeedNetwork(nn.Cell):
    """The seed's EffNetV2 in eval mode (dropout and drop path are identities there)."""

    def __init__(self, variant: str, classes: int) -> None:
        super().__init__()
        table = SEED_TABLES[variant]
        cin = table[0][1]
        layers = [nn.SequentialCell([_conv(3, cin, 3, 2), _bn(cin), nn.SiLU()])]
        for t, c, n, s, se in table:
            for i in range(n):
                layers.append(_SeedBlock(cin, c, s if i == 0 else 1, t, se))
                cin = c
        self.features = nn.CellList(layers)
        self.conv = nn.SequentialCell([_conv(cin, HEAD, 1), _bn(HEAD), nn.SiLU()])
        self.classifier = nn.Dense(HEAD, classes)

    def construct(self, x):
        for feature in self.features:
            x = feature(x)
        return self.classifier(self.conv(x).mean(axis=(2, 3)))


@pytest.fixture(scope="module")
def seed_s(tmp_path_factory: pytest.TempPathFactory) -> tuple[SeedNetwork, Path]:
    """A seed-layout S with random weights and BN statistics, saved with optimizer state."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net = SeedNetwork("effnetv2_s", 1000)
    rng = np.random.default_rng(0)
    for name, param in net.parameters_and_names():
        shape = param.shape
        if name.endswith(("gamma", "moving_variance")):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("beta", "moving_mean", "bias")):
            value = rng.normal(0, 0.1, shape)
        else:  # the seed's initialisation: N(0, sqrt(2 / fan_out))
            value = rng.normal(0, np.sqrt(2 / (shape[0] * int(np.prod(shape[2:], dtype=np.int64)))), shape)
        param.set_data(Tensor(value.astype(np.float32)))
    entries = [{"name": name, "data": param} for name, param in net.parameters_and_names()]
    # what the seed's training adds: Momentum's slots, the step and the learning rate
    entries += [{"name": f"moments.{name}", "data": Parameter(Tensor(np.zeros(p.shape, np.float32)), name=f"m.{name}")}
                for name, p in list(net.parameters_and_names())[:3]]  # fmt: skip
    entries += [{"name": "global_step", "data": Tensor(np.array([1000], np.int32))},
                {"name": "learning_rate", "data": Tensor(np.array(0.01, np.float32))}]  # fmt: skip
    path = tmp_path_factory.mktemp("seed") / "effnetv2_s_seed.ckpt"
    ms.save_checkpoint(entries, str(path))
    return net.set_train(False), path


@pytest.mark.parametrize("variant", list(SEED_TABLES))
def test_every_seed_tensor_has_one_effv2_tensor_of_its_shape(variant: str) -> None:
    seed = seed_layout(variant, 1000)
    net = EfficientNetV2(VARIANTS[variant], num_classes=1000)
    ours = {name: tuple(p.shape) for name, p in model_entries(net).items() if name not in BOOKKEEPING}
    mapping = seed_names(net)
    assert set(mapping) == set(ours)  # every effv2 tensor has a source ...
    assert sorted(src.name for src in mapping.values()) == sorted(seed)  # ... and every seed tensor one use
    for name, source in mapping.items():
        assert seed[source.name] == ours[name], (name, source.name)


def test_the_seed_network_written_here_has_the_published_layout(seed_s: tuple[SeedNetwork, Path]) -> None:
    net, _ = seed_s
    assert {name: tuple(p.shape) for name, p in net.parameters_and_names()} == seed_layout("effnetv2_s", 1000)


def test_a_seed_checkpoint_converts_and_computes_the_seeds_logits(
    seed_s: tuple[SeedNetwork, Path], tmp_path: Path
) -> None:
    seed_net, path = seed_s
    output = tmp_path / "converted.ckpt"
    result = run_cli("task=convert", "model=effnetv2_s", f"convert.source={path}", f"convert.output={output}",
                     f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.with_suffix(".json").read_text())
    assert report["format"] == "modelzoo" and report["num_classes"] == 1000 and report["weights"] == "raw"
    assert report["tensors"] == len(seed_layout("effnetv2_s", 1000)) and report["training_state_ignored"] == 5
    ms.set_context(mode=ms.PYNATIVE_MODE)
    images = Tensor(np.random.default_rng(1).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32))
    expected = seed_net(images).asnumpy()
    assert np.abs(expected).max() > 1e-2  # the logits carry the weights through 40 blocks
    for source in (output, path):  # converted, and the seed's own file as model.pretrained
        net = EfficientNetV2(VARIANTS["effnetv2_s"], num_classes=1000)
        meta = load_pretrained_weights(net, source)
        assert meta["weights"] == "raw" and meta["reinitialised_classifier"] is False
        net.set_train(False)
        actual = net(images).asnumpy()
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_a_seed_checkpoint_of_another_variant_or_with_a_missing_tensor_is_one_line(
    seed_s: tuple[SeedNetwork, Path], tmp_path: Path
) -> None:
    _, path = seed_s
    with pytest.raises(UserError, match=r"does not fit effnetv2_m: \d+ missing: .* shape mismatch: ") as info:
        convert(str(path), "effnetv2_m", use_ema=False, output=tmp_path / "m.ckpt")
    assert "\n" not in str(info.value) and not (tmp_path / "m.ckpt").exists()
    params = ms.load_checkpoint(str(path))
    del params["features.5.conv.3.weight"]
    broken = tmp_path / "broken.ckpt"
    ms.save_checkpoint([{"name": k, "data": v} for k, v in params.items()], str(broken))
    line = one_line_error(run_cli("task=convert", "model=effnetv2_s", f"convert.source={broken}",
                                  f"hydra.run.dir={tmp_path / 'run'}"))  # fmt: skip
    assert "does not fit effnetv2_s: 1 missing: features.5.conv.3.weight; nothing written" in line
    net = EfficientNetV2(VARIANTS["effnetv2_s"], num_classes=1000)
    with pytest.raises(UserError, match="1 missing: blocks.4.project.conv.weight"):
        load_pretrained_weights(net, broken)
