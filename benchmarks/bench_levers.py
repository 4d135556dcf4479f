"""MindSpore CPU settings, each measured against MindSpore's own operators in one run (alternating steps
between one worker process per setting, medians): the oneDNN ISA cap, jit level, thread
count, and the compile cache across processes.

    python benchmarks/bench_levers.py --variant effnetv2_b0 --size 128 --batch 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_train import Worker  # noqa: E402
from common import write_results  # noqa: E402

# label -> (environment, jit level[, worker arguments]); the baseline, first, is MindSpore's own
# operators as hardware.cpu_kernels=false runs them; effv2's kernels (the product's CPU default)
# are one of the settings
SETTINGS = {
    "stock: hardware.cpu_kernels=false (ISA cap AVX2, O0, 2 threads, ops.silu)": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "O0"),
    "hardware.cpu_kernels (the default: fused SiLU and SE + oneDNN depthwise and regular), ISA cap AVX2": (
        {"ONEDNN_MAX_CPU_ISA": "AVX2"},
        "O0",
        ("--kernels", "cpu_kernels"),
    ),
    "depthwise conv: oneDNN kernel alone": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "O0", ("--kernels", "onednn_depthwise")),
    "SiLU: fused kernel alone": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "O0", ("--kernels", "fused_silu")),
    "SiLU: Sigmoid x Mul (cpu_kernels without a compiler)": (
        {"ONEDNN_MAX_CPU_ISA": "AVX2"},
        "O0",
        ("--kernels", "sigmoid_mul"),
    ),
    "ISA cap AVX512_CORE": ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, "O0"),
    # with effv2's depthwise and regular convolutions only MindSpore's 1x1 ones meet the cap
    "cpu_kernels, ISA cap AVX512_CORE": (
        {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
        "O0",
        ("--kernels", "cpu_kernels"),
    ),
    "cpu_kernels, no ISA cap (ALL)": ({"ONEDNN_MAX_CPU_ISA": "ALL"}, "O0", ("--kernels", "cpu_kernels")),
    "ISA cap AVX512_CORE_BF16": ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, "O0"),
    "ISA cap AVX512_CORE_AMX": ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "O0"),
    "no ISA cap (ALL)": ({"ONEDNN_MAX_CPU_ISA": "ALL"}, "O0"),
    "jit_level O1 (graph-kernel fusion)": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "O1"),
    "1 thread (OMP_NUM_THREADS=1)": ({"ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}, "O0"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="effnetv2_b0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="comma-separated beginnings of the settings to run (default: all)")
    parser.add_argument("--out", default="benchmarks/results/levers.json")
    args = parser.parse_args()
    rows = []
    workers = []
    chosen = [p.strip() for p in args.only.split(",")] if args.only else None

    def wanted(label: str) -> bool:
        return chosen is None or any(label.startswith(prefix) for prefix in chosen)

    for label, (env, jit_level, *extra) in SETTINGS.items():
        if not wanted(label):
            continue
        try:
            worker = Worker("mindspore", args.variant, args.size, args.batch, jit_level, env=env, label=label,
                            extra=tuple(extra[0]) if extra else ())  # fmt: skip
            workers.append(worker)
        except SystemExit as exc:  # a setting MindSpore refuses is a result too
            rows.append({"setting": label, "error": str(exc)})
    times: dict[str, list[float]] = {w.framework: [] for w in workers}
    for r in range(args.repeats):
        for w in workers if r % 2 == 0 else workers[::-1]:
            times[w.framework].append(w.step())
    base = statistics.median(times[workers[0].framework])
    for w in workers:
        median = statistics.median(times[w.framework])
        rows.append({"setting": w.framework, "step_median_s": median, "ratio_to_stock": median / base,
                     "first_step_s": w.first["first_step_s"], "peak_rss_mb": w.close()})  # fmt: skip
    # the compile cache: the same step compiled by a fresh process, then by another one reusing the cache
    with tempfile.TemporaryDirectory() as cache:
        for label in ("compile cache: cold", "compile cache: warm (second process)"):
            if not wanted(label):
                continue
            env = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
            extra = ("--compile-cache", cache)
            worker = Worker("mindspore", args.variant, args.size, args.batch, "O0", env=env, extra=extra, label=label)
            median = statistics.median(worker.step() for _ in range(args.repeats))
            rows.append({"setting": label, "step_median_s": median, "ratio_to_stock": median / base,
                         "first_step_s": worker.first["first_step_s"], "peak_rss_mb": worker.close()})  # fmt: skip
    table = [["setting", "step ms", "x stock", "first step (compile) s"]]
    for row in rows:
        if "error" in row:
            table.append([row["setting"], "failed", "-", row["error"][:60]])
            continue
        table.append([row["setting"], f"{row['step_median_s'] * 1000:.0f}", f"{row['ratio_to_stock']:.2f}",
                      f"{row['first_step_s']:.1f}"])  # fmt: skip
    write_results(Path(args.out), {"config": vars(args), "results": rows}, table)


if __name__ == "__main__":
    main()
