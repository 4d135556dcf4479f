"""effv2's CPU kernels against MindSpore's operators, one op at a time: forward + backward of
``sum(silu(x) * dy)`` in a compiled graph at EfficientNetV2 activation shapes, for MindSpore's
``ops.silu`` (what the network runs without effv2's kernels), Sigmoid x Mul, and the fused AOT
kernel (effv2/kernels/silu.cc). Alternating rounds, medians, ratios to ``ops.silu``.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--shapes", default=",".join(f"{c}x{s}" for c, s in SHAPES), help="CxHW, comma-separated")
    parser.add_argument("--out", default="benchmarks/results/kernels.json")
    args = parser.parse_args()

    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, ops

    from effv2.models.activation import fused_silu

    ms.set_device("CPU")
    fused = fused_silu()
    if fused is None:
        raise SystemExit("the fused SiLU kernel could not be built here (no C++ compiler?)")

    def sigmoid_mul(x):
        return x * ops.sigmoid(x)

    def gradient_step(silu):
        def weighted(inputs, sens):
            return (silu(inputs) * sens).sum()

        return ms.jit(ms.value_and_grad(weighted, grad_position=0))

    implementations = {"ops.silu (MindSpore)": ops.silu, "Sigmoid x Mul (MindSpore)": sigmoid_mul,
                       "fused AOT kernel (effv2)": fused}  # fmt: skip
    rows = []
    for spec in args.shapes.split(","):
        channels, size = (int(v) for v in spec.split("x"))
        rng = np.random.default_rng(0)
        x = Tensor(rng.normal(0, 2, (args.batch, channels, size, size)).astype(np.float32))
        dy = Tensor(rng.normal(0, 1, x.shape).astype(np.float32))
        steps = {name: gradient_step(silu) for name, silu in implementations.items()}
        candidates = {name: lambda step=step, x=x, dy=dy: step(x, dy)[1].asnumpy() for name, step in steps.items()}
        timings = interleaved_medians(candidates, args.repeats, warmup=2)
        base = timings["ops.silu (MindSpore)"]["median_s"]
        for name, timing in timings.items():
            rows.append({"shape": [args.batch, channels, size, size], "implementation": name, **timing,
                         "ratio_to_ops_silu": timing["median_s"] / base})  # fmt: skip
        print(f"{spec} done", file=sys.stderr)
    table = [["N,C,H,W", "implementation", "fwd+bwd ms", "x ops.silu"]]
    for row in rows:
        table.append([",".join(map(str, row["shape"])), row["implementation"], f"{row['median_s'] * 1000:.2f}",
                      f"{row['ratio_to_ops_silu']:.2f}"])  # fmt: skip
    write_results(Path(args.out), {"config": vars(args), "cpu": cpu_name(), "results": rows}, table)


if __name__ == "__main__":
    main()
