"""Every benchmark with its defaults, one after another, then one Markdown report:

    python benchmarks/run_all.py            # ~50 min on 2 cores
    python benchmarks/run_all.py --quick    # tiny sizes, a smoke run

Results: benchmarks/results/<name>.json and .md per benchmark, and benchmarks/results/report.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHMARKS = {
    "train": ("bench_train.py", [], ["--variants", "effnetv2_micro", "--sizes", "32", "--batch", "2",
                                     "--repeats", "2"]),
    "levers": ("bench_levers.py", [], ["--variant", "effnetv2_micro", "--size", "32", "--batch", "2",
                                       "--repeats", "2", "--only", "default,hardware.cpu_kernels"]),
    "conv": ("bench_conv.py", [], ["--variant", "effnetv2_micro", "--size", "32", "--batch", "2", "--repeats", "2"]),
    "kernels": ("bench_kernels.py", [], ["--shapes", "8x4", "--repeats", "2"]),
    "profile": ("profile_train_step.py", ["--kernels", "cpu_kernels"],
                ["--kernels", "cpu_kernels", "--variant", "effnetv2_micro", "--size", "32", "--batch", "2"]),
    "inference": ("bench_inference.py", [], ["--variant", "effnetv2_micro", "--size", "32", "--batches", "1,2",
                                             "--repeats", "2"]),
    "data": ("bench_data.py", [], ["--sizes", "64", "--magnitudes", "15", "--images", "50", "--scaling-size", "64"]),
    "progressive": ("bench_progressive.py", [], ["--size", "32", "--epochs", "2", "--stages", "2"]),
}  # fmt: skip

TITLES = {
    "train": "Training step (batch 8, RMSProp): effv2 on MindSpore (its own operators, and effv2's CPU kernels, "
    "the default) vs the same network in PyTorch eager",
    "levers": "Levers: MindSpore CPU settings and effv2's kernels against MindSpore's own operators, B0 at 128 px",
    "conv": "oneDNN convolution kernel vs MindSpore's Conv2D, every layer shape of B0 at 128 px (fwd + both bwd)",
    "kernels": "effv2's fused SiLU, SE squeeze and gate, and batch norm (+ SiLU) vs MindSpore's operators (fwd + bwd)",
    "profile": "Where the B0 step's time goes with effv2's CPU kernels, the default (MindSpore's profiler)",
    "inference": "Inference (EfficientNetV2-S, 224 px): MindSpore graph, MINDIR, onnxruntime, PyTorch eager",
    "data": "Data pipeline (RRC + flip + RandAugment, 2 workers) vs training consumption (B0)",
    "progressive": "Progressive (4 stages, half to full size) vs fixed-size training, B0 on the digits at 64 px",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny configurations (minutes)")
    parser.add_argument("--results", default="benchmarks/results")
    args = parser.parse_args()
    results = Path(args.results)
    sections = ["# effv2 benchmarks", ""]
    for name, (script, full, quick) in BENCHMARKS.items():
        out = results / f"{name}.json"
        command = [sys.executable, str(HERE / script), *(quick if args.quick else full), "--out", str(out)]
        print("$", " ".join(command[1:]), file=sys.stderr, flush=True)
        subprocess.run(command, check=True)
        sections += [f"## {TITLES[name]}", "", out.with_suffix(".md").read_text(), ""]
    (results / "report.md").write_text("\n".join(sections))
    print(f"report: {results / 'report.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
