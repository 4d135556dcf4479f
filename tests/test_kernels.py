"""effv2's own CPU kernels against MindSpore's operators: equal outputs and gradients (stated
tolerances), in PyNative and in a compiled graph, alone and inside the network; the build cache
and the fallback without a compiler."""

from __future__ import annotations

import logging
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from effv2.kernels.build import compiler, kernel_library
from effv2.models.activation import SigmoidMul, SiLU, fused_silu, use_cpu_kernels

needs_compiler = pytest.mark.skipif(compiler() is None, reason="no C++ compiler (g++ or $CXX) on this machine")
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


class _SquaredOutput(nn.Cell):
    def __init__(self, net: nn.Cell) -> None:
        super().__init__()
        self.net = net

    def construct(self, x):
        return self.net(x).square().mean()


@needs_compiler
def test_network_with_fused_silu_matches_mindspore_ops() -> None:
    from effv2.config.schema import ModelConfig
    from effv2.models import build_model

    cfg = ModelConfig(name="effnetv2_micro", num_classes=10, train_size=32, eval_size=32, drop_path_rate=0.0)
    stock, fused = build_model(cfg, seed=3), build_model(cfg, seed=3)
    activations = sum(isinstance(c, SiLU) for _, c in fused.cells_and_names())
    assert use_cpu_kernels(fused) == f"the fused kernel in {activations} activations" and activations > 0
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
        assert use_cpu_kernels(net_silu).startswith("Sigmoid x Mul") and isinstance(net_silu.kernel, SigmoidMul)
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


@needs_compiler
def test_a_cpu_run_with_cpu_kernels_trains_through_the_fused_kernel(tiny_folder: Path, tmp_path: Path) -> None:
    from conftest import run_cli, tiny_data

    overrides = (*tiny_data(tiny_folder), "train.epochs=1", "hardware.cpu_kernels=true")
    result = run_cli(*overrides, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SiLU on CPU: the fused kernel in" in (tmp_path / "run.log").read_text()
