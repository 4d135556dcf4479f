"""Where a MindSpore training step spends its time on CPU: MindSpore's own profiler over a few
steps of the product's TrainStep, summarised per operator type, beside the PyTorch-eager step
time of the same network (measured in the same run).

    python benchmarks/profile_train_step.py --variant effnetv2_b0 --size 128 --batch 8
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_train import KERNELS, Worker, _mindspore_step  # noqa: E402
from common import write_results  # noqa: E402

CONVOLUTION = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="effnetv2_b0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--kernels", choices=KERNELS, default="mindspore",
                        help="MindSpore's kernels (bench_train.py --kernels); effv2's own show as Custom")  # fmt: skip
    parser.add_argument("--out", default="benchmarks/results/profile.json")
    args = parser.parse_args()

    peer = Worker("pytorch", args.variant, args.size, args.batch)
    pytorch_step = statistics.median(peer.step() for _ in range(args.steps))
    peer.close()

    import os

    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
    from mindspore import Profiler

    run = _mindspore_step(args.variant, args.size, args.batch, "O0", None, args.kernels)
    run()
    run()
    with tempfile.TemporaryDirectory() as tmp:
        profiler = Profiler(output_path=tmp)
        started = time.perf_counter()
        for _ in range(args.steps):
            run()
        wall = (time.perf_counter() - started) / args.steps
        profiler.analyse()
        (summary,) = Path(tmp).rglob("cpu_op_type_info_0.csv")
        with summary.open(newline="") as handle:
            ops = [
                {"op": row["op_type"], "per_step": float(row["execution_frequency(per-step)"]),
                 "ms_per_step": float(row["total_compute_time"]) / args.steps}
                for row in csv.DictReader(handle)
            ]  # fmt: skip
    ops.sort(key=lambda op: -op["ms_per_step"])
    total = sum(op["ms_per_step"] for op in ops)
    convolution = sum(op["ms_per_step"] for op in ops if op["op"] in CONVOLUTION)
    payload = {
        "config": vars(args),
        "mindspore_step_ms": wall * 1000,
        "profiled_ops_ms": total,
        "convolution_ms": convolution,
        "pytorch_step_ms": pytorch_step * 1000,
        "kernel_launches_per_step": sum(op["per_step"] for op in ops),
        "ops": ops,
    }
    table = [["operator", "launches / step", "ms / step", "share"]]
    for op in ops[: args.top]:
        table.append(
            [op["op"], f"{op['per_step']:.0f}", f"{op['ms_per_step']:.1f}", f"{op['ms_per_step'] / total:.0%}"]
        )
    table.append(["all operators", f"{payload['kernel_launches_per_step']:.0f}", f"{total:.1f}", "100%"])
    table.append(["MindSpore's convolutions (fwd + 2 bwd)", "", f"{convolution:.1f}", f"{convolution / total:.0%}"])
    table.append(["PyTorch eager, whole step", "", f"{pytorch_step * 1000:.1f}", ""])
    write_results(Path(args.out), payload, table)


if __name__ == "__main__":
    main()
