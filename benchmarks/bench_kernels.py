"""effv2's CPU kernels against MindSpore's operators, one op at a time, forward + backward in a
compiled graph at EfficientNetV2 activation shapes. SiLU: ``sum(silu(x) * dy)`` for MindSpore's
``ops.silu`` (what the network runs without effv2's kernels), Sigmoid x Mul, and the fused AOT
kernel (effv2/kernels/silu.cc). SE squeeze: ``sum(mean over the pixels of x * dm)``, MindSpore's
ReduceMean against the fused kernel; SE gate: ``sum(x * sigmoid(s) * dy)``, s one value per sample
and channel, gradients for x and s, MindSpore's Sigmoid and broadcasting Mul against the fused
kernel (both effv2/kernels/squeeze_excite.cc). BN + SiLU and BN: training-mode batch norm (with
the SiLU after it, or alone as in the blocks' projections), gradients for x, gamma and beta:
MindSpore's BatchNorm with ``ops.silu``, with effv2's fused SiLU (what ``hardware.cpu_kernels`` ran
before), and the fused kernels (effv2/kernels/batchnorm_silu.cc). Alternating rounds, medians,
ratios to MindSpore's operator.

    python benchmarks/bench_kernels.py --batch 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import cpu_name, interleaved_medians, write_results  # noqa: E402

# (channels, size): B0 / S activations at 128-300 px input (stem, MBConv expansions, head)
SHAPES = ((24, 64), (96, 32), (192, 16), (384, 14), (960, 8), (1280, 4))


def _flat(grads: object) -> list:
    """The gradients as a flat list: one Tensor, a tuple, or (inputs, weights) nested."""
    if isinstance(grads, tuple):
        return [g for item in grads for g in _flat(item)]
    return [grads]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--shapes", default=",".join(f"{c}x{s}" for c, s in SHAPES), help="CxHW, comma-separated")
    parser.add_argument("--out", default="benchmarks/results/kernels.json")
    args = parser.parse_args()

    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn, ops

    from effv2.kernels.build import kernel_library
    from effv2.models.activation import fused_silu
    from effv2.models.fused_bn import FusedBatchNormAct
    from effv2.models.fused_se import fused_se

    ms.set_device("CPU")
    fused, se = fused_silu(), fused_se()
    bn_library = kernel_library("batchnorm_silu")
    if fused is None or se is None or bn_library is None:
        raise SystemExit("the fused kernels could not be built here (no C++ compiler?)")
    squeeze, gate = se

    def sigmoid_mul(x):
        return x * ops.sigmoid(x)

    def gradient_step(silu):
        def weighted(inputs, sens):
            return (silu(inputs) * sens).sum()

        return ms.jit(ms.value_and_grad(weighted, grad_position=0))

    def gate_gradient_step(gated):
        def weighted(inputs, scale, sens):
            return (gated(inputs, scale) * sens).sum()

        return ms.jit(ms.value_and_grad(weighted, grad_position=(0, 1)))

    def mindspore_squeeze(x):
        return x.mean(axis=(2, 3), keep_dims=True)

    def mindspore_gate(x, s):
        return x * ops.sigmoid(s)

    ops_under_test = {
        "SiLU": {"ops.silu (MindSpore)": gradient_step(ops.silu),
                 "Sigmoid x Mul (MindSpore)": gradient_step(sigmoid_mul),
                 "fused AOT kernel (effv2)": gradient_step(fused)},
        "SE squeeze": {"ReduceMean (MindSpore)": gradient_step(mindspore_squeeze),
                       "fused AOT kernel (effv2)": gradient_step(squeeze)},
        "SE gate": {"Sigmoid x broadcast Mul (MindSpore)": gate_gradient_step(mindspore_gate),
                    "fused AOT kernel (effv2)": gate_gradient_step(gate)},
    }  # fmt: skip

    class Normalised(nn.Cell):
        """sum(act(batch_norm(x)) * dy): MindSpore's BatchNorm2d and ``act``, or the fused kernel."""

        def __init__(self, channels: int, act, fused_act: bool | None) -> None:
            super().__init__()
            self.bn = nn.BatchNorm2d(channels, eps=1e-3, momentum=0.9)
            self.act = act
            self.fused = None if fused_act is None else FusedBatchNormAct(str(bn_library), 1e-3, 0.1, fused_act)
            self.set_train(True)

        def construct(self, x, sens):
            if self.fused is not None:
                bn = self.bn
                y = self.fused(x, bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)
            else:
                y = self.act(self.bn(x))
            return (y * sens).sum()

    def bn_gradient_step(channels: int, act, fused_act: bool | None = None):
        loss = Normalised(channels, act, fused_act)
        return ms.jit(ms.value_and_grad(loss, grad_position=0, weights=loss.trainable_params()))

    def identity(x):
        return x

    rows = []
    for spec in args.shapes.split(","):
        channels, size = (int(v) for v in spec.split("x"))
        rng = np.random.default_rng(0)
        x = Tensor(rng.normal(0, 2, (args.batch, channels, size, size)).astype(np.float32))
        dy = Tensor(rng.normal(0, 1, x.shape).astype(np.float32))
        scale = Tensor(rng.normal(0, 2, (args.batch, channels, 1, 1)).astype(np.float32))
        dm = Tensor(rng.normal(0, 1, scale.shape).astype(np.float32))
        inputs = {"SiLU": (x, dy), "SE squeeze": (x, dm), "SE gate": (x, scale, dy), "BN + SiLU": (x, dy),
                  "BN": (x, dy)}  # fmt: skip
        per_shape = {
            "BN + SiLU": {"BatchNorm + ops.silu (MindSpore)": bn_gradient_step(channels, ops.silu),
                          "BatchNorm + fused SiLU": bn_gradient_step(channels, fused),
                          "fused AOT kernels (effv2)": bn_gradient_step(channels, None, True)},
            "BN": {"BatchNorm (MindSpore)": bn_gradient_step(channels, identity),
                   "fused AOT kernels (effv2)": bn_gradient_step(channels, None, False)},
        }  # fmt: skip
        for op, implementations in {**ops_under_test, **per_shape}.items():
            # the gradients as arrays: one Tensor for SiLU's input, a tuple for the gate's two
            args_of = inputs[op]
            candidates = {name: lambda step=step, args_of=args_of: [g.asnumpy() for g in _flat(step(*args_of)[1])]
                          for name, step in implementations.items()}  # fmt: skip
            timings = interleaved_medians(candidates, args.repeats, warmup=2)
            base = next(iter(timings.values()))["median_s"]  # MindSpore's own operator comes first
            for name, timing in timings.items():
                rows.append({"op": op, "shape": [args.batch, channels, size, size], "implementation": name, **timing,
                             "ratio_to_mindspore": timing["median_s"] / base})  # fmt: skip
        print(f"{spec} done", file=sys.stderr)
    table = [["op", "N,C,H,W", "implementation", "fwd+bwd ms", "x MindSpore"]]
    for row in rows:
        table.append([row["op"], ",".join(map(str, row["shape"])), row["implementation"],
                      f"{row['median_s'] * 1000:.2f}", f"{row['ratio_to_mindspore']:.2f}"])  # fmt: skip
    write_results(Path(args.out), {"config": vars(args), "cpu": cpu_name(), "results": rows}, table)


if __name__ == "__main__":
    main()
