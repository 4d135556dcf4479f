"""effv2's own CPU kernels against MindSpore's operators: equal outputs and gradients (stated
tolerances), in PyNative and in a compiled graph, alone and inside the network; the build cache
and the fallbacks without a compiler or without oneDNN."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from effv2.kernels.build import compiler, kernel_library, onednn_flags
from effv2.models.activation import SigmoidMul, SiLU, fused_silu, use_fastest_silu
from effv2.models.blocks import ConvBNAct, SqueezeExcite
from effv2.models.convolution import OneDNNConv, OneDNNConv2d, conv_kind, onednn_conv_library
from effv2.models.cpu_kernels import use_cpu_kernels
from effv2.models.fused_bn import FusedBatchNormAct, use_fused_bn
from effv2.models.fused_se import fused_se
from effv2.training.rmsprop_tf import TFRMSProp, use_fused_update

needs_compiler = pytest.mark.skipif(compiler() is None, reason="no C++ compiler (g++ or $CXX) on this machine")
needs_onednn = pytest.mark.skipif(
    compiler() is None or onednn_flags() is None,
    reason="no C++ compiler, or oneDNN is not installed (onednn-devel-cpu-gomp is in the base install)",
)


@pytest.fixture(autouse=True)
def _pynative():
    """The "pynative" cases run eagerly, the "graph" ones through ms.jit: whatever mode a test of
    another file left this worker in (test_training sets GRAPH_MODE)."""
    ms.set_context(mode=ms.PYNATIVE_MODE)


# glibc's vector expf is within 4 ulp; one division and two products add a few more
FORWARD_RTOL, GRAD_RTOL, ATOL = 2e-6, 4e-6, 1e-7


def _reference(x: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x64 = x.astype(np.float64)
    s = 1.0 / (1.0 + np.exp(-x64))
    return x64 * s, dy * s * (1.0 + x64 * (1.0 - s))


@needs_compiler
@pytest.mark.parametrize("compiled", [False, True], ids=["pynative", "graph"])
def test_fused_silu_equals_x_sigmoid_x_and_its_gradient(compiled: bool) -> None:
    rng = np.random.default_rng(0)
    # the range the network sees, the clamp's edges, and the extremes (no inf / nan)
    x = np.concatenate([rng.normal(0, 4, 4093), [-120.0, -88.0, -80.5, -80.0, -20.0, 0.0, 20.0, 80.0, 88.0, 120.0]])
    x = x.astype(np.float32).reshape(1, 1, 1, -1)
    dy = rng.normal(0, 1, x.shape).astype(np.float32)
    silu = fused_silu()
    assert silu is not None

    def weighted_sum(inputs, sens):
        return (silu(inputs) * sens).sum()

    def forward_and_grad(inputs, sens):
        return silu(inputs), ms.grad(weighted_sum, grad_position=0)(inputs, sens)

    run = ms.jit(forward_and_grad) if compiled else forward_and_grad
    y, dx = (t.asnumpy() for t in run(Tensor(x), Tensor(dy)))
    expected_y, expected_dx = _reference(x, dy)
    np.testing.assert_allclose(y, expected_y, rtol=FORWARD_RTOL, atol=ATOL)
    np.testing.assert_allclose(dx, expected_dx, rtol=GRAD_RTOL, atol=ATOL)
    stock_y = ops.silu(Tensor(x)).asnumpy()
    np.testing.assert_allclose(y, stock_y, rtol=FORWARD_RTOL, atol=ATOL)


def _gate_reference(x: np.ndarray, s: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, ...]:
    x64, s64, dy64 = (a.astype(np.float64) for a in (x, s, dy))
    gate = 1.0 / (1.0 + np.exp(-s64))
    ds = (dy64 * x64).sum(axis=(2, 3), keepdims=True) * gate * (1.0 - gate)
    return x64 * gate, dy64 * gate, ds


@needs_compiler
@pytest.mark.parametrize("compiled", [False, True], ids=["pynative", "graph"])
def test_fused_se_gate_equals_x_sigmoid_s_and_its_gradients(compiled: bool) -> None:
    rng = np.random.default_rng(0)
    # 3 samples x 5 channels of 7x9 pixels (rows that are no multiple of a vector); s in the range
    # the network sees, at the clamp's edges and beyond (no inf / nan)
    x = rng.normal(0, 2, (3, 5, 7, 9)).astype(np.float32)
    s = rng.normal(0, 4, (3, 5, 1, 1)).astype(np.float32)
    s.reshape(-1)[:6] = [-120.0, -80.5, 0.0, 20.0, 80.5, 120.0]
    dy = rng.normal(0, 1, x.shape).astype(np.float32)
    kernels = fused_se()
    assert kernels is not None
    gate = kernels[1]

    def weighted_sum(inputs, scale, sens):
        return (gate(inputs, scale) * sens).sum()

    def forward_and_grads(inputs, scale, sens):
        return gate(inputs, scale), *ms.grad(weighted_sum, grad_position=(0, 1))(inputs, scale, sens)

    run = ms.jit(forward_and_grads) if compiled else forward_and_grads
    y, dx, ds = (t.asnumpy() for t in run(Tensor(x), Tensor(s), Tensor(dy)))
    expected_y, expected_dx, expected_ds = _gate_reference(x, s, dy)
    np.testing.assert_allclose(y, expected_y, rtol=FORWARD_RTOL, atol=ATOL)
    np.testing.assert_allclose(dx, expected_dx, rtol=GRAD_RTOL, atol=ATOL)
    # ds sums 63 products in float32: 1e-5 of the largest |ds|
    np.testing.assert_allclose(ds, expected_ds, rtol=0, atol=1e-5 * np.abs(expected_ds).max())
    stock = (Tensor(x) * ops.sigmoid(Tensor(s))).asnumpy()
    np.testing.assert_allclose(y, stock, rtol=FORWARD_RTOL, atol=ATOL)


@needs_compiler
@pytest.mark.parametrize("compiled", [False, True], ids=["pynative", "graph"])
def test_fused_se_squeeze_equals_the_mean_over_the_pixels_and_its_gradient(compiled: bool) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 2, (3, 5, 7, 9)).astype(np.float32)
    dm = rng.normal(0, 1, (3, 5, 1, 1)).astype(np.float32)
    kernels = fused_se()
    assert kernels is not None
    squeeze = kernels[0]

    def weighted_sum(inputs, sens):
        return (squeeze(inputs) * sens).sum()

    def forward_and_grad(inputs, sens):
        return squeeze(inputs), ms.grad(weighted_sum, grad_position=0)(inputs, sens)

    run = ms.jit(forward_and_grad) if compiled else forward_and_grad
    m, dx = (t.asnumpy() for t in run(Tensor(x), Tensor(dm)))
    np.testing.assert_allclose(m, x.astype(np.float64).mean(axis=(2, 3), keepdims=True), rtol=0, atol=1e-6)
    np.testing.assert_allclose(dx, np.broadcast_to(dm.astype(np.float64) / 63, x.shape), rtol=FORWARD_RTOL, atol=ATOL)

    # MindSpore's own mean and its gradient
    def stock_weighted_sum(inputs, sens):
        return (inputs.mean(axis=(2, 3), keep_dims=True) * sens).sum()

    stock_dx = ms.grad(stock_weighted_sum)(Tensor(x), Tensor(dm)).asnumpy()
    np.testing.assert_allclose(dx, stock_dx, rtol=FORWARD_RTOL, atol=ATOL)


class _SquaredOutput(nn.Cell):
    def __init__(self, net: nn.Cell) -> None:
        super().__init__()
        self.net = net

    def construct(self, x):
        return self.net(x).square().mean()


# (in, out, kernel, stride, groups, size): depthwise at stride 1 and 2 on even and odd sizes (the
# odd pixel of "same" padding goes to the bottom/right), 5x5 depthwise, a regular and a 1x1 convolution
CONVOLUTIONS = {
    "depthwise-s1": (24, 24, 3, 1, 24, 15),
    "depthwise-s2-even": (16, 16, 3, 2, 16, 16),
    "depthwise-s2-odd": (16, 16, 3, 2, 16, 15),
    "depthwise-5x5-s2": (8, 8, 5, 2, 8, 14),
    "regular-s2": (8, 16, 3, 2, 1, 16),
    "pointwise": (16, 32, 1, 1, 1, 9),
}
# oneDNN sums in another order than MindSpore's kernel: 1e-5 of the largest value of each tensor
CONV_RTOL = 1e-5


@needs_onednn
@pytest.mark.parametrize("spec", CONVOLUTIONS.values(), ids=CONVOLUTIONS.keys())
def test_onednn_convolution_equals_mindspore_conv2d_and_its_gradients(spec: tuple[int, ...]) -> None:
    in_channels, out_channels, kernel, stride, groups, size = spec
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, pad_mode="same", group=groups, has_bias=False)
    library = onednn_conv_library()
    assert library is not None
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(0, 1, (3, in_channels, size, size)).astype(np.float32))
    out_size = -(-size // stride)
    dy = Tensor(rng.normal(0, 1, (3, out_channels, out_size, out_size)).astype(np.float32))

    class Convolution(nn.Cell):  # conv's weight, through MindSpore's operator or ours
        def __init__(self, kernel: nn.Cell | None) -> None:
            super().__init__()
            self.conv, self.kernel = conv, kernel

        def construct(self, inputs):
            return self.conv(inputs) if self.kernel is None else self.kernel(inputs, self.conv.weight)

    def results(kernel: nn.Cell | None) -> list[np.ndarray]:
        net = Convolution(kernel)

        def weighted_sum(inputs, sens):
            return (net(inputs) * sens).sum()

        step = ms.jit(ms.value_and_grad(weighted_sum, grad_position=0, weights=[conv.weight]))
        _, (d_input, (d_weight,)) = step(x, dy)
        return [net(x).asnumpy(), d_input.asnumpy(), d_weight.asnumpy()]

    stock, ours = results(None), results(OneDNNConv(library, stride))
    for name, actual, expected in zip(("output", "d input", "d weight"), ours, stock, strict=True):
        assert actual.shape == expected.shape, name
        np.testing.assert_allclose(actual, expected, rtol=CONV_RTOL, atol=CONV_RTOL * np.abs(expected).max(),
                                   err_msg=name)  # fmt: skip


def _batch_norm_reference(x, gamma, beta, moving, dy, eps: float, momentum: float, act: bool):
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    gamma, beta = gamma.astype(np.float64).reshape(1, -1, 1, 1), beta.astype(np.float64).reshape(1, -1, 1, 1)
    axes, count = (0, 2, 3), x.size // x.shape[1]
    mean, var = x64.mean(axis=axes, keepdims=True), x64.var(axis=axes, keepdims=True)
    xhat = (x64 - mean) / np.sqrt(var + eps)
    z = xhat * gamma + beta
    sig = 1.0 / (1.0 + np.exp(-z))
    y, dz = (z * sig, dy64 * sig * (1.0 + z * (1.0 - sig))) if act else (z, dy64)
    dx = (
        gamma
        / np.sqrt(var + eps)
        * (dz - dz.mean(axis=axes, keepdims=True) - xhat * (dz * xhat).mean(axis=axes, keepdims=True))
    )
    moving_mean = moving[0] * (1 - momentum) + mean.reshape(-1) * momentum
    moving_variance = moving[1] * (1 - momentum) + var.reshape(-1) * count / (count - 1) * momentum  # unbiased
    return y, dx, (dz * xhat).sum(axis=axes), dz.sum(axis=axes), moving_mean, moving_variance


@needs_compiler
@pytest.mark.parametrize("act", [True, False], ids=["silu", "no-act"])
@pytest.mark.parametrize("compiled", [False, True], ids=["pynative", "graph"])
def test_fused_batch_norm_equals_training_batch_norm_and_its_gradients(compiled: bool, act: bool) -> None:
    """Against float64 numpy: the output, the gradients for x, gamma and beta, and the moving
    statistics the kernel updates in place (MindSpore's: the unbiased batch variance)."""
    rng = np.random.default_rng(0)
    # 3 samples x 5 channels of 7x9 pixels; channels far from zero mean (the one-pass variance's risk)
    spread = np.array([0.5, 2.0, 1.0, 0.1, 4.0]).reshape(1, 5, 1, 1)
    offset = np.array([3.0, -1.0, 0.0, 10.0, 0.5]).reshape(1, 5, 1, 1)
    x = rng.normal(0, 1, (3, 5, 7, 9)) * spread + offset
    x = x.astype(np.float32)
    gamma, beta = np.linspace(0.5, 1.5, 5).astype(np.float32), np.linspace(-1, 1, 5).astype(np.float32)
    moving = (rng.normal(0, 1, 5).astype(np.float32), rng.uniform(0.5, 2, 5).astype(np.float32))
    dy = rng.normal(0, 1, x.shape).astype(np.float32)
    library = kernel_library("batchnorm_silu")
    assert library is not None
    cell = FusedBatchNormAct(str(library), eps=1e-3, momentum=0.1, act=act)
    weights = [ms.Parameter(Tensor(v), name=n) for v, n in ((gamma, "gamma"), (beta, "beta"))]
    stats = [ms.Parameter(Tensor(moving[i].copy()), name=f"moving_{i}", requires_grad=False) for i in range(2)]

    def weighted_sum(inputs, sens):
        return (cell(inputs, *weights, *stats) * sens).sum()

    def forward_and_grads(inputs, sens):
        return ms.value_and_grad(weighted_sum, 0, weights)(inputs, sens)

    run = ms.jit(forward_and_grads) if compiled else forward_and_grads
    loss, (dx, (dgamma, dbeta)) = run(Tensor(x), Tensor(dy))
    y, expected_dx, expected_dgamma, expected_dbeta, expected_mean, expected_var = _batch_norm_reference(
        x, gamma, beta, moving, dy, 1e-3, 0.1, act
    )
    np.testing.assert_allclose(float(loss.asnumpy()), (y * dy).sum(), rtol=1e-5)
    np.testing.assert_allclose(dx.asnumpy(), expected_dx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dgamma.asnumpy(), expected_dgamma, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dbeta.asnumpy(), expected_dbeta, rtol=1e-4, atol=1e-4)
    # the forward ran once (the gradient reuses its outputs): one update of the moving statistics
    np.testing.assert_allclose(stats[0].asnumpy(), expected_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats[1].asnumpy(), expected_var, rtol=1e-5)
    forward = cell(Tensor(x), *weights, *stats).asnumpy()
    np.testing.assert_allclose(forward, y, rtol=1e-5, atol=1e-5)


class _Weighted(nn.Cell):
    def __init__(self, net: nn.Cell) -> None:
        super().__init__()
        self.net = net

    def construct(self, x, sens):
        return (self.net(x) * sens).sum()


@needs_compiler
def test_conv_bn_act_with_the_fused_batch_norm_trains_and_evaluates_as_mindspores() -> None:
    """The layer as the network runs it: two training steps (moving statistics included) against
    MindSpore's BatchNorm and SiLU, then eval mode, which normalises with the moving statistics."""
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(0.5, 2, (4, 8, 16, 16)).astype(np.float32))
    dy = Tensor(rng.normal(0, 1, (4, 16, 16, 16)).astype(np.float32))
    weight = rng.normal(0, 0.1, (16, 8, 3, 3)).astype(np.float32)
    results = []
    for fused in (False, True):
        layer = ConvBNAct(8, 16, 3)
        layer.conv.weight.set_data(Tensor(weight))
        if fused:
            assert use_fused_bn(layer) == "the fused batch norm in 1 layers (1 with their SiLU) at 16+ pixels"
        layer.set_train(True)
        step = ms.jit(ms.value_and_grad(_Weighted(layer), 0, layer.trainable_params()))
        for _ in range(2):
            _, (dx, grads) = step(x, dy)
        layer.set_train(False)
        results.append([dx.asnumpy(), *(g.asnumpy() for g in grads), layer.bn.moving_mean.asnumpy(),
                        layer.bn.moving_variance.asnumpy(), layer(x).asnumpy()])  # fmt: skip
    for expected, actual in zip(*results, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@needs_compiler
def test_below_16_pixels_the_layer_trains_through_mindspores_batch_norm() -> None:
    """2x2 pixels (the demo's last stages at 32 px), where the fused kernel loses: the very output
    of MindSpore's BatchNorm and SiLU, bit for bit."""
    x = Tensor(np.random.default_rng(0).normal(0.5, 2, (4, 8, 2, 2)).astype(np.float32))
    outputs = []
    for fused in (False, True):
        layer = ConvBNAct(8, 16, 1)
        layer.conv.weight.set_data(Tensor(np.linspace(-0.3, 0.3, 16 * 8).astype(np.float32).reshape(16, 8, 1, 1)))
        if fused:
            use_fused_bn(layer)
            assert layer.fused_bn is not None
        layer.set_train(True)
        outputs.append(layer(x).asnumpy())
    np.testing.assert_array_equal(outputs[1], outputs[0])


def _rmsprop(weight_decay: float) -> tuple[list[ms.Parameter], TFRMSProp]:
    rng = np.random.default_rng(0)
    shapes = [(64, 32, 3, 3), (64,), (1000, 300), (7,)]
    params = [ms.Parameter(Tensor(rng.normal(0, 1, s).astype(np.float32)), name=f"p{i}") for i, s in enumerate(shapes)]
    groups = [{"params": params[0::2], "weight_decay": weight_decay}, {"params": params[1::2], "weight_decay": 0.0}]
    return params, TFRMSProp(groups, learning_rate=Tensor(np.array([0.016, 0.01, 0.02], np.float32)))


@needs_compiler
@pytest.mark.parametrize("weight_decay", [1e-5, 0.0], ids=["decayed", "no-decay"])
@pytest.mark.parametrize("compiled", [False, True], ids=["pynative", "graph"])
def test_fused_rmsprop_update_equals_mindspores_operators_bit_for_bit(compiled: bool, weight_decay: float) -> None:
    """Three steps with gradients from 1e-6 to 10 (where a rounding of 1 - decay or a fused
    multiply-add shows): the slots and the parameters equal MindSpore's graph of the update."""
    results = []
    for fused in (False, True):
        params, optimizer = _rmsprop(weight_decay)
        if fused:
            assert use_fused_update(optimizer) == "the fused update over 318,503 values"
        assert optimizer.has_decay == (weight_decay > 0)

        def step(gradients, optimizer=optimizer):
            return optimizer(gradients)

        run = ms.jit(step) if compiled else step
        rng = np.random.default_rng(1)
        for scale in (1e-6, 1.0, 10.0):
            run(tuple(Tensor(rng.normal(0, scale, p.shape).astype(np.float32)) for p in optimizer.parameters))
        results.append([t.asnumpy() for t in (*params, optimizer.mean_square, optimizer.moment)])
    stock, fused = results
    assert not np.all(stock[-2] == 1.0)  # the slots moved
    for expected, actual in zip(stock, fused, strict=True):
        np.testing.assert_array_equal(actual, expected)


@needs_onednn
def test_network_with_cpu_kernels_matches_mindspore_ops() -> None:
    from effv2.config.schema import ModelConfig
    from effv2.models import build_model

    cfg = ModelConfig(name="effnetv2_micro", num_classes=10, train_size=32, eval_size=32, drop_path_rate=0.0)
    stock, fused = build_model(cfg, seed=3), build_model(cfg, seed=3)
    activations = sum(isinstance(c, SiLU) for _, c in fused.cells_and_names())
    kinds = [conv_kind(c.conv) for _, c in fused.cells_and_names() if isinstance(c, ConvBNAct)]
    replaced = kinds.count("depthwise") + kinds.count("regular")
    assert activations > 0 and kinds.count("depthwise") == 2 and kinds.count("regular") > 0
    layers = [c for _, c in fused.cells_and_names() if isinstance(c, ConvBNAct)]
    assert use_cpu_kernels(fused) == (
        f"SiLU: the fused kernel in {activations} activations; SE: the fused squeeze and gate in 2 blocks; "
        f"BN: the fused batch norm in {len(layers)} layers ({sum(c.has_act for c in layers)} with their SiLU) at "
        "16+ pixels; "
        f"oneDNN in {replaced} depthwise and regular convolutions"
    )
    assert all(c.fused_bn is not None for c in layers)
    se_blocks = [c for _, c in fused.cells_and_names() if isinstance(c, SqueezeExcite)]
    assert len(se_blocks) == 2 and all(c.squeeze is not None and c.gate is not None for c in se_blocks)
    assert sum(isinstance(c, OneDNNConv2d) for _, c in fused.cells_and_names()) == replaced
    assert [p.name for p in fused.get_parameters()] == [p.name for p in stock.get_parameters()]  # checkpoints unchanged
    images = Tensor(np.random.default_rng(1).normal(0, 1, (4, 3, 32, 32)).astype(np.float32))
    results = []
    for net in (stock, fused):
        net.set_train(True)
        step = ms.jit(ms.value_and_grad(_SquaredOutput(net), None, net.trainable_params()))
        loss, grads = step(images)
        results.append((loss.asnumpy(), [g.asnumpy() for g in grads]))
    (stock_loss, stock_grads), (fused_loss, fused_grads) = results
    np.testing.assert_allclose(fused_loss, stock_loss, rtol=1e-5)
    for param, expected, actual in zip(fused.trainable_params(), stock_grads, fused_grads, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-6, err_msg=param.name)


def test_kernel_build_is_cached_and_falls_back_without_a_compiler(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("EFFV2_CACHE", str(tmp_path))
    caplog.set_level(logging.INFO)
    kernel_library.cache_clear()
    try:
        monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
        assert kernel_library("silu") is None
        assert "no C++ compiler" in caplog.text and "MindSpore's own operators are used" in caplog.text
        net_silu = SiLU()
        assert use_fastest_silu(net_silu).startswith("Sigmoid x Mul") and isinstance(net_silu.kernel, SigmoidMul)
        _, optimizer = _rmsprop(1e-5)
        assert use_fused_update(optimizer) == "MindSpore's operators (the fused RMSProp update is not available here)"
        assert optimizer.fused_step is None
        monkeypatch.delenv("CXX")
        kernel_library.cache_clear()
        if compiler() is None:
            pytest.skip("no C++ compiler on this machine: only the fallback was checked")
        built = kernel_library("silu")
        assert built is not None and built.parent == tmp_path / "kernels"
        stamp = built.stat().st_mtime_ns
        kernel_library.cache_clear()
        assert kernel_library("silu") == built and built.stat().st_mtime_ns == stamp  # reused, not rebuilt
    finally:
        kernel_library.cache_clear()


# in a fresh process (this one has loaded the libraries already): after each library loads, a
# float32 denormal must survive a multiplication by one
_DENORMAL_CHECK = """
import ctypes, numpy as np
from effv2.kernels.build import kernel_library, onednn_conv_library
tiny = np.array([1e-39], np.float32)
assert (tiny * np.float32(1))[0] != 0
libraries = [kernel_library(n) for n in ("silu", "squeeze_excite", "batchnorm_silu")]
libraries += [kernel_library("rmsprop", exact=True), onednn_conv_library()]
for library in libraries[:4]:
    assert library is not None
for library in filter(None, libraries):
    ctypes.CDLL(str(library))
    assert (tiny * np.float32(1))[0] != 0, f"{library} set flush-to-zero / denormals-are-zero"
"""


@needs_compiler
def test_loading_the_kernels_leaves_the_process_float_math_alone() -> None:
    """A -ffast-math link adds crtfastmath.o, whose constructor turns on flush-to-zero and
    denormals-are-zero for the whole process: MindSpore's operators and numpy would round every
    denormal to zero once a kernel loads. Each library is linked without it."""
    result = subprocess.run([sys.executable, "-c", _DENORMAL_CHECK], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_without_onednn_the_network_keeps_mindspores_convolutions(tmp_path: Path, monkeypatch, caplog) -> None:
    from effv2.config.schema import ModelConfig
    from effv2.models import build_model

    caplog.set_level(logging.INFO)
    monkeypatch.setattr("sys.prefix", str(tmp_path))  # an environment without oneDNN's headers
    monkeypatch.setattr("sys.base_prefix", str(tmp_path))
    monkeypatch.setattr("site.getuserbase", lambda: str(tmp_path))
    onednn_conv_library.cache_clear()
    try:
        net = build_model(ModelConfig(name="effnetv2_micro", num_classes=10, train_size=32, eval_size=32), seed=0)
        assert use_cpu_kernels(net).endswith("; MindSpore's convolutions (oneDNN is not available here)")
        assert "pip install onednn-devel-cpu-gomp==2023.2.0" in caplog.text
        assert all(type(c.conv) is nn.Conv2d for _, c in net.cells_and_names() if isinstance(c, ConvBNAct))
    finally:
        onednn_conv_library.cache_clear()


@needs_onednn
def test_a_cpu_run_trains_through_the_kernels_by_default(tiny_folder: Path, tmp_path: Path) -> None:
    """The stock path (hardware.cpu_kernels=false) is conftest's shared trained run."""
    from conftest import run_cli, tiny_data

    # the official recipes' optimizer, whose update has a fused kernel (the default AdamW has none)
    overrides = (*tiny_data(tiny_folder), "optimizer=rmsprop", "train.epochs=1", f"hydra.run.dir={tmp_path}")
    result = run_cli(*overrides, unset=("ONEDNN_MAX_CPU_ISA",))
    assert result.returncode == 0, result.stderr[-2000:]
    log = (tmp_path / "run.log").read_text()
    # every depthwise and regular convolution is effv2's: the AVX2 cap MindSpore's need is not set
    assert "set ONEDNN_MAX_CPU_ISA=ALL (effv2's kernels run the depthwise and regular convolutions" in log
    assert "CPU kernels (hardware.cpu_kernels): SiLU: the fused kernel in" in log
    assert re.search(r"CPU kernels \(hardware.cpu_kernels\), optimizer: the fused update over [\d,]+ values", log)
    assert re.search(r"; oneDNN in \d+ depthwise and regular convolutions", log)
