"""Training engine pieces against their formulas, on real MindSpore graphs."""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from types import SimpleNamespace

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from effv2.checkpoints import read_checkpoint, save_atomic
from effv2.kernels.build import compiler
from effv2.models import VARIANTS, EfficientNetV2, init_weights
from effv2.models.variants import MICRO
from effv2.training.ema import EMA
from effv2.training.loss import SoftTargetCrossEntropy, smoothed_one_hot
from effv2.training.mixing import BatchMixer
from effv2.training.optim import build_optimizer, parameter_groups, scaled_lr, uses_weight_decay
from effv2.training.precision import apply_amp
from effv2.training.rmsprop_tf import use_fused_update
from effv2.training.schedules import learning_rates
from effv2.training.step import ACCUMULATE, APPLY, TrainStep


@pytest.fixture(autouse=True)
def _cpu_graph():
    ms.set_context(mode=ms.GRAPH_MODE)


def _sched(name: str, warmup_epochs: float = 0.0, **kw) -> SimpleNamespace:
    return SimpleNamespace(name=name, warmup_epochs=warmup_epochs, warmup_lr=0.0, **kw)


# ---- schedules ------------------------------------------------------------------------------
def test_constant_with_linear_warmup_from_zero() -> None:
    lrs = learning_rates(_sched("constant", warmup_epochs=1), 0.1, steps_per_epoch=10, total_steps=30)
    assert len(lrs) == 30
    np.testing.assert_allclose(lrs[:10], 0.1 * np.arange(10) / 10, rtol=1e-6)
    np.testing.assert_allclose(lrs[10:], 0.1)


def test_cosine_with_floor() -> None:
    lrs = learning_rates(_sched("cosine", min_lr=0.01), 1.0, steps_per_epoch=4, total_steps=20)
    for step in (0, 7, 10, 19):
        expected = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / 20))
        assert lrs[step] == pytest.approx(expected, rel=1e-6)
    assert lrs.min() >= 0.01


def test_official_exponential_decay() -> None:
    lrs = learning_rates(_sched("exponential", decay_rate=0.97, decay_epochs=2.4, warmup_epochs=5), 0.016, 10, 200)
    # warmup: linear from 0 over 5 epochs; then 0.016 * 0.97 ** floor(step / 24) on the global step
    assert lrs[25] == pytest.approx(0.016 * 25 / 50, rel=1e-6)
    for step in (50, 71, 72, 199):
        assert lrs[step] == pytest.approx(0.016 * 0.97 ** (step // 24), rel=1e-6)


def test_multistep() -> None:
    lrs = learning_rates(_sched("multistep", milestones=[2, 4], gamma=0.1), 1.0, 5, 30)
    assert [lrs[i] for i in (0, 9, 10, 19, 20, 29)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01], rel=1e-6)


def test_lr_is_given_per_256_images() -> None:
    assert scaled_lr(SimpleNamespace(lr=5e-4), 32 * 16) == pytest.approx(1e-3)


# ---- optimizers -----------------------------------------------------------------------------
def test_weight_decay_skips_bn_and_biases() -> None:
    net = EfficientNetV2(VARIANTS["effnetv2_b0"], num_classes=10)
    decayed, plain = parameter_groups(net.trainable_params(), 1e-5)
    decayed_names = {p.name for p in decayed["params"]}
    plain_names = {p.name for p in plain["params"]}
    assert "stem.conv.weight" in decayed_names and "classifier.weight" in decayed_names
    assert "blocks.5.se.reduce.weight" in decayed_names
    for name in ("stem.bn.gamma", "stem.bn.beta", "classifier.bias", "blocks.5.se.reduce.bias"):
        assert name in plain_names
    assert all(not n.endswith(("gamma", "beta", "bias")) for n in decayed_names)
    assert plain["weight_decay"] == 0.0 and decayed["weight_decay"] == 1e-5
    assert uses_weight_decay(Parameter(Tensor(np.ones((3, 3), np.float32)), name="x.weight"))


def test_rmsprop_has_tensorflow_semantics() -> None:
    """TF1 RMSProp: ms starts at 1, eps inside the sqrt, lr inside the momentum buffer."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(0)
    w0, b0 = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    weight, bias = Parameter(Tensor(w0), name="dense.weight"), Parameter(Tensor(b0), name="dense.bias")
    cfg = SimpleNamespace(name="rmsprop", lr=0.0, weight_decay=1e-2, decay=0.9, momentum=0.9, eps=1e-3)
    lr = 0.05
    optimizer = build_optimizer(cfg, [weight, bias], np.full(10, lr, np.float32))
    ref = {"w": [w0.astype(np.float64), np.ones_like(w0, np.float64), np.zeros_like(w0, np.float64)]}
    ref["b"] = [b0.astype(np.float64), np.ones_like(b0, np.float64), np.zeros_like(b0, np.float64)]
    for _ in range(3):
        gw, gb = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
        optimizer((Tensor(gw), Tensor(gb)))
        for key, grad, decay in (("w", gw, 1e-2), ("b", gb, 0.0)):
            value, mean_square, moment = ref[key]
            grad = grad + decay * value
            mean_square = 0.9 * mean_square + 0.1 * grad**2
            moment = 0.9 * moment + lr * grad / np.sqrt(mean_square + 1e-3)
            ref[key] = [value - moment, mean_square, moment]
    np.testing.assert_allclose(weight.asnumpy(), ref["w"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias.asnumpy(), ref["b"][0], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(compiler() is None, reason="no C++ compiler (g++ or $CXX): the fused RMSProp step cannot build")
def test_fused_rmsprop_inside_the_train_step_equals_mindspores_operators_with_the_ema() -> None:
    """The fused step writes the parameters and slots in place: the EMA after it, in the same
    graph, must average the updated weights (it would see the old ones if the graph ordered its
    reads before the kernel). Everything bit for bit against MindSpore's operators, three steps."""
    results = []
    for fused in (False, True):
        net, shadow = EfficientNetV2(MICRO, num_classes=10), EfficientNetV2(MICRO, num_classes=10)
        init_weights(net, 0)
        init_weights(shadow, 0)
        ema = EMA(net, shadow, decay=0.9, warmup=False)
        cfg = SimpleNamespace(name="rmsprop", lr=0.0, weight_decay=1e-5, decay=0.9, momentum=0.9, eps=1e-3)
        optimizer = build_optimizer(cfg, net.trainable_params(), np.full(10, 0.05, np.float32))
        if fused:
            assert use_fused_update(optimizer).startswith("the fused update over")
        scale = SimpleNamespace(kind=SimpleNamespace(name="none"), value=1.0, factor=2.0, window=1000)
        step = TrainStep(net, net, SoftTargetCrossEntropy(), optimizer, clip_grad_norm=None, loss_scale=scale, ema=ema)
        step.set_train(True)
        for seed in range(3):
            step(*_batch(seed))
        results.append({p.name: p.asnumpy().copy() for p in (*net.get_parameters(), *shadow.get_parameters(),
                                                            optimizer.mean_square, optimizer.moment)})  # fmt: skip
    stock, fused = results
    assert stock.keys() == fused.keys()
    assert not np.array_equal(stock["ema.stem.conv.weight"], stock["stem.conv.weight"])  # the EMA lags the weights
    for name, expected in stock.items():
        np.testing.assert_array_equal(fused[name], expected, err_msg=name)


@pytest.mark.skipif(compiler() is None, reason="no C++ compiler (g++ or $CXX): the fused RMSProp step cannot build")
def test_an_overflowed_step_leaves_the_fused_rmsprop_state_untouched() -> None:
    """The fused step runs inside the dynamic loss scale's skip branch: an overflow changes nothing
    it writes in place (parameters, slots); the first finite step after the halvings moves them."""
    net = EfficientNetV2(MICRO, num_classes=10)
    init_weights(net, 0)
    cfg = SimpleNamespace(name="rmsprop", lr=0.0, weight_decay=1e-5, decay=0.9, momentum=0.9, eps=1e-3)
    optimizer = build_optimizer(cfg, net.trainable_params(), np.full(10, 0.05, np.float32))
    assert use_fused_update(optimizer).startswith("the fused update over")
    scale = SimpleNamespace(kind=SimpleNamespace(name="dynamic"), value=3.0e38, factor=2.0, window=1000)
    step = TrainStep(net, net, SoftTargetCrossEntropy(), optimizer, clip_grad_norm=5.0, loss_scale=scale)
    step.set_train(True)

    def state():
        return [p.asnumpy().copy() for p in (*net.trainable_params(), optimizer.mean_square, optimizer.moment)]

    before = state()
    _, finite = step(*_batch())
    assert not bool(finite.asnumpy())
    assert all(np.array_equal(a, b) for a, b in zip(before, state(), strict=True))
    for _ in range(140):  # the scale halves from 3e38 until the loss fits
        _, finite = step(*_batch())
        if bool(finite.asnumpy()):
            break
    assert bool(finite.asnumpy())
    after = state()
    assert not np.array_equal(before[0], after[0]) and not np.array_equal(before[-2], after[-2])


# ---- loss, mixing, EMA ------------------------------------------------------------------------
def test_smoothed_targets_and_soft_cross_entropy() -> None:
    targets = smoothed_one_hot(np.array([2, 0]), 4, 0.1)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
    assert targets[0, 2] == pytest.approx(0.925) and targets[0, 0] == pytest.approx(0.025)
    logits = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    loss = float(SoftTargetCrossEntropy()(Tensor(logits), Tensor(targets)).asnumpy())
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert loss == pytest.approx(float(-(targets * log_softmax).sum(1).mean()), rel=1e-5)


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixed_labels_sum_to_one_and_match_the_pixels(mixup: float, cutmix: float) -> None:
    augment = SimpleNamespace(mixup_alpha=mixup, cutmix_alpha=cutmix, mix_prob=1.0, switch_prob=0.5, mix_mode="timm")
    mixer = BatchMixer(augment, seed=0)
    images = np.stack([np.full((3, 16, 16), float(i), np.float32) for i in range(4)])
    targets = smoothed_one_hot(np.arange(4), 4, 0.0)
    for step in range(20):
        mixed, soft = mixer(images, targets, step)
        np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)
        # sample 0 is mixed with sample 3: its mean pixel equals 3 * (weight of label 3)
        assert mixed[0].mean() == pytest.approx(3.0 * soft[0, 3], abs=1e-5)
    again, _ = mixer(images, targets, 7)
    np.testing.assert_array_equal(again, mixer(images, targets, 7)[0])


def test_official_mixing_mixes_each_image_and_splits_the_batch() -> None:
    """google/automl datasets.py: mixup draws a weight per image (at least 0.5 for the image
    itself); with both alphas the first half gets mixup, the second cutmix, each within its half."""
    augment = SimpleNamespace(mixup_alpha=0.5, cutmix_alpha=0.5, mix_prob=1.0, switch_prob=0.5, mix_mode="official")
    images = np.stack([np.full((3, 16, 16), float(i), np.float32) for i in range(8)])
    targets = smoothed_one_hot(np.arange(8), 8, 0.0)
    mixed, soft = BatchMixer(augment, seed=0)(images, targets, 3)
    np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)
    for i in range(4):  # mixup within images 0-3: i is mixed with 3 - i, by its own weight
        assert soft[i, i] >= 0.5 - 1e-6 and soft[i, i] + soft[i, 3 - i] == pytest.approx(1.0)
        assert mixed[i].mean() == pytest.approx(i * soft[i, i] + (3 - i) * soft[i, 3 - i], abs=1e-4)
    assert len({round(float(soft[i, i]), 6) for i in range(4)}) > 1  # a weight per image
    for i in range(4, 8):  # cutmix within images 4-7: pixels are only the image's or its partner's
        assert set(np.unique(mixed[i])) <= {float(i), float(11 - i)}
        assert soft[i, i] + soft[i, 11 - i] == pytest.approx(1.0)
    # the labels of the cutmix half mix by one fraction, the pasted share of the whole half
    pasted = np.mean([(mixed[i] == 11 - i).mean() for i in range(4, 8) if i != 11 - i])
    assert soft[4, 7] == pytest.approx(pasted, abs=1e-6)


class _Toy(nn.Cell):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.w = Parameter(Tensor(np.array([value], np.float32)), name="w")

    def construct(self):
        return self.w


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_math_on_a_toy_parameter(warmup: bool) -> None:
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net, shadow = _Toy(0.0), _Toy(123.0)
    ema = EMA(net, shadow, decay=0.9, warmup=warmup)
    assert shadow.w.name == "ema.w" and shadow.w.asnumpy()[0] == 0.0  # starts as a copy
    expected = 0.0
    for t, value in enumerate([1.0, 2.0, 4.0]):
        net.w.set_data(Tensor(np.array([value], np.float32)))
        ema()
        decay = min(0.9, (1 + t) / (10 + t)) if warmup else 0.9
        expected = decay * expected + (1 - decay) * value
        assert shadow.w.asnumpy()[0] == pytest.approx(expected, rel=1e-6)


# ---- the compiled step: amp levels, loss scaling, accumulation --------------------------------
def _step(amp: str = "O0", kind: str = "none", value: float = 1.0, accumulation: int = 1, clip: float | None = 5.0):
    net = EfficientNetV2(MICRO, num_classes=10)
    init_weights(net, 0)
    forward = apply_amp(net, amp, Path(tempfile.mkdtemp()))
    cfg = SimpleNamespace(name="sgd", lr=0.1, weight_decay=0.0, momentum=0.9, nesterov=True)
    optimizer = build_optimizer(cfg, net.trainable_params(), np.full(100, 0.01, np.float32))
    scale = SimpleNamespace(kind=SimpleNamespace(name=kind), value=value, factor=2.0, window=1000)
    step = TrainStep(
        net, forward, SoftTargetCrossEntropy(), optimizer, clip_grad_norm=clip, loss_scale=scale,
        accumulation_steps=accumulation,
    )  # fmt: skip
    step.set_train(True)
    return net, step


def _batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = Tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    return images, Tensor(smoothed_one_hot(rng.integers(0, 10, 4), 10, 0.1))


@pytest.mark.parametrize("amp", ["O0", "O1", "O2", "O3"])
def test_every_amp_level_runs_a_step_on_cpu(amp: str) -> None:
    kind = "none" if amp == "O0" else "dynamic"
    net, step = _step(amp, kind=kind, value=1024.0)
    before = net.stem.conv.weight.asnumpy().copy()
    # half precision may overflow at the first scales: dynamic scaling halves until a step fits
    attempt = 0
    while attempt < 15:
        attempt += 1
        loss, finite = step(*_batch())
        if bool(finite.asnumpy()):
            break
        np.testing.assert_array_equal(before, net.stem.conv.weight.asnumpy())
    assert bool(finite.asnumpy()) and math.isfinite(float(loss.asnumpy()))
    assert not np.array_equal(before, net.stem.conv.weight.asnumpy())
    assert int(net.rng_step.asnumpy()[0]) == attempt


def test_dynamic_loss_scale_skips_and_counts_overflow() -> None:
    net, step = _step(kind="dynamic", value=3.0e38)  # loss x scale overflows float32
    before = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    loss, finite = step(*_batch())
    assert not bool(finite.asnumpy())
    assert all(np.array_equal(before[p.name], p.asnumpy()) for p in net.trainable_params())
    assert float(step.scale.asnumpy()[0]) == pytest.approx(1.5e38, rel=1e-6)
    loss, finite = step(*_batch())  # 1.5e38 still overflows; a third halving follows
    assert float(step.scale.asnumpy()[0]) == pytest.approx(7.5e37, rel=1e-6)


def test_fixed_loss_scale_is_honoured_and_unscaled() -> None:
    plain_net, plain = _step(kind="none", clip=None)
    scaled_net, scaled = _step(kind="fixed", value=1024.0, clip=None)
    loss_plain, _ = plain(*_batch())
    loss_scaled, _ = scaled(*_batch())
    assert float(scaled.scale.asnumpy()[0]) == 1024.0
    assert float(loss_scaled.asnumpy()) == pytest.approx(float(loss_plain.asnumpy()), rel=1e-5)
    np.testing.assert_allclose(scaled_net.stem.conv.weight.asnumpy(), plain_net.stem.conv.weight.asnumpy(), atol=1e-6)


def test_gradient_accumulation_updates_every_k_micro_batches() -> None:
    net, step = _step(accumulation=2)
    before = net.stem.conv.weight.asnumpy().copy()
    step(*_batch(0), ACCUMULATE)
    np.testing.assert_array_equal(before, net.stem.conv.weight.asnumpy())
    accumulated = next(p for p in step.accumulated if p.name.endswith("stem.conv.weight"))
    assert np.abs(accumulated.asnumpy()).max() > 0
    step(*_batch(1), ACCUMULATE)
    np.testing.assert_array_equal(before, net.stem.conv.weight.asnumpy())
    assert bool(step(None, None, APPLY).asnumpy())
    assert not np.array_equal(before, net.stem.conv.weight.asnumpy())
    assert np.abs(accumulated.asnumpy()).max() == 0  # emptied after the update
    assert int(net.rng_step.asnumpy()[0]) == 2  # one number per micro-batch


def test_accumulated_micro_batches_equal_one_step_on_their_average_gradient() -> None:
    """Accumulating two halves of a batch is the step on the mean of their gradients: with BN
    frozen (eval-mode statistics would differ per half), one step on the whole batch."""
    images, targets = _batch(0)
    whole_net, whole = _step(kind="dynamic", value=1024.0)
    split_net, split = _step(kind="dynamic", value=1024.0, accumulation=2)
    for cell in (whole, split):
        cell.set_train(False)  # BN from running statistics, no masks: the loss is per-sample
    whole(images, targets)
    split(images[:2], targets[:2], ACCUMULATE)
    split(images[2:], targets[2:], ACCUMULATE)
    assert bool(split(None, None, APPLY).asnumpy())
    for mine, theirs in zip(split_net.trainable_params(), whole_net.trainable_params(), strict=True):
        np.testing.assert_allclose(mine.asnumpy(), theirs.asnumpy(), rtol=1e-5, atol=1e-7, err_msg=mine.name)
    assert float(split.scale.asnumpy()[0]) == float(whole.scale.asnumpy()[0]) == 1024.0


# ---- atomic checkpoints ---------------------------------------------------------------------
def test_a_checkpoint_write_killed_midway_leaves_the_previous_one_loadable(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    script = textwrap.dedent(
        f"""
        import os, sys
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
        import numpy as np
        from mindspore import Parameter, Tensor
        from effv2.checkpoints import save_atomic
        for i in range(10_000):
            big = Parameter(Tensor(np.full((4096, 4096), i, np.float32)), name="big")
            save_atomic({{"big": big}}, {str(target)!r}, {{"round": i}})
            print(i, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    rounds = [proc.stdout.readline() for _ in range(3)]  # three complete files written
    proc.kill()
    proc.wait()
    assert all(r.strip() for r in rounds)
    params, meta = read_checkpoint(target)
    assert float(params["big"].asnumpy()[0, 0]) == meta["round"]
    assert params["big"].shape == (4096, 4096)


def test_save_atomic_replaces_in_one_step(tmp_path: Path) -> None:
    target = tmp_path / "x.ckpt"
    for value in (1.0, 2.0):
        save_atomic({"p": Parameter(Tensor(np.full((2,), value, np.float32)), name="p")}, target, {"v": value})
    params, meta = read_checkpoint(target)
    assert meta == {"v": 2.0} and params["p"].asnumpy().tolist() == [2.0, 2.0]
    assert [p.name for p in tmp_path.iterdir()] == ["x.ckpt"]


# ---- normalisation in the compiled step --------------------------------------------------------
class _Identity(nn.Cell):
    def construct(self, x):
        return x


@pytest.mark.parametrize("mean,std", [([127.5] * 3, [127.5] * 3), ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])])
def test_device_normalise_equals_the_host_normalisation_bit_for_bit(mean, std) -> None:
    from effv2.data.transforms import Normalise
    from effv2.training.step import DeviceNormalise

    images = np.random.default_rng(0).integers(0, 256, (3, 17, 23, 3), dtype=np.uint8)
    images[0, 0, :3, 0] = [0, 128, 255]
    on_device = DeviceNormalise(_Identity(), mean, std)(Tensor(images)).asnumpy()
    host = Normalise(tuple(mean), tuple(std))
    np.testing.assert_array_equal(on_device, np.stack([host.to_chw(image) for image in images]))
    np.testing.assert_array_equal(on_device, np.stack([host.to_chw(image.astype(np.float32)) for image in images]))


def test_training_with_device_normalisation_equals_the_host_path(tiny_folder: Path, tmp_path: Path) -> None:
    """The same run with uint8 batches normalised in the step and with host-normalised float
    batches: bit-identical weights; a recipe that needs normalised floats on the host says so."""
    from conftest import resumable, run_cli

    overrides = (*resumable(tiny_folder), "train.epochs=1")
    runs = {}
    for on_device in (True, False):
        run_dir = tmp_path / f"device_{on_device}"
        result = run_cli(*overrides, f"data.normalise_on_device={on_device}", f"hydra.run.dir={run_dir}")
        assert result.returncode == 0, result.stderr[-3000:]
        runs[on_device] = run_dir
    assert "handed to the step as uint8" in (runs[True] / "run.log").read_text()
    assert "handed to the step as uint8" not in (runs[False] / "run.log").read_text()
    expected = ms.load_checkpoint(str(runs[False] / "checkpoints" / "last.ckpt"))
    actual = ms.load_checkpoint(str(runs[True] / "checkpoints" / "last.ckpt"))
    for name in sorted(set(expected) - {"effv2_meta"}):
        np.testing.assert_array_equal(actual[name].asnumpy(), expected[name].asnumpy(), err_msg=name)
    cutout = tmp_path / "cutout"
    result = run_cli(*overrides, "data.augment.cutout_ratio=0.5", "train.epochs=1", f"hydra.run.dir={cutout}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "normalised on the host: data.augment.cutout_ratio" in (cutout / "run.log").read_text()
