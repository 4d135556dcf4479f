"""Progressive learning against fixed-size training: same data, model and epochs, run side by
side through ``run.py`` (alternating order when repeated). Progressive trains in ``--stages``
stages from half to the full size; only the image size ramps, so the comparison isolates the
cost of the size. Reports total wall time, time per stage, final accuracy and the ratios.

    python benchmarks/bench_progressive.py --size 64 --epochs 8
    python benchmarks/bench_progressive.py --size 300 --min-size 128 --epochs 4 -- data=imagefolder data.root=...
    python benchmarks/bench_progressive.py -- model=effnetv2_s data=imagefolder data.root=...
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def train(name: str, overrides: list[str], run_dir: Path) -> dict:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "run.py", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{name} run failed:\n{result.stderr[-3000:]}")
    with (run_dir / "metrics.csv").open(newline="") as handle:
        epochs = list(csv.DictReader(handle))
    stages: dict[int, dict] = {}
    for row in epochs:
        fresh = {"image_size": int(row["image_size"]), "epochs": 0, "seconds": 0.0}
        stage = stages.setdefault(int(row["stage"]), fresh)
        stage["epochs"] += 1
        stage["seconds"] += float(row["seconds"])
    final = json.loads((run_dir / "metrics.json").read_text())
    return {"wall_s": wall, "val_top1": final["val_top1"], "stages": [stages[k] for k in sorted(stages)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="full training and eval size")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--min-size", type=int, help="the first stage's size (default: half of --size)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/progressive.json")
    parser.add_argument("overrides", nargs="*", help="extra run.py overrides for both runs (after --)")
    args = parser.parse_args()
    common = [
        f"data.train_size={args.size}",
        f"data.eval_size={args.size}",
        f"train.epochs={args.epochs}",
        *args.overrides,
    ]
    variants = {
        "fixed": [*common, "progressive=none"],
        "progressive": [
            *common,
            "progressive=paper",
            f"progressive.stages={args.stages}",
            f"progressive.min_size={args.min_size or args.size // 2}",
            f"progressive.max_size={args.size}",
            *(f"progressive.{r}_{end}=null" for r in ("dropout", "randaug", "mixup") for end in ("min", "max")),
            "data.augment.randaug_layers=0",
        ],
    }
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
            for name in order:
                runs[name].append(train(name, variants[name], Path(tmp) / f"{name}{repeat}"))
                print(f"{name} run {repeat + 1}: {runs[name][-1]['wall_s']:.1f} s", file=sys.stderr)
    summary = {
        name: {
            "wall_s": statistics.median(r["wall_s"] for r in results),
            "val_top1": statistics.median(r["val_top1"] for r in results),
            "stages": results[0]["stages"],
        }
        for name, results in runs.items()
    }
    ratio = summary["progressive"]["wall_s"] / summary["fixed"]["wall_s"]
    payload = {
        "config": {**vars(args)},
        "results": summary,
        "runs": runs,
        "progressive_over_fixed_wall": ratio,
    }
    table = [["run", "stages (size: epochs, s)", "wall s", "val top-1", "x fixed"]]
    for name, result in summary.items():
        stages = "; ".join(f"{s['image_size']}px: {s['epochs']} ep, {s['seconds']:.1f}" for s in result["stages"])
        table.append(
            [
                name,
                stages,
                f"{result['wall_s']:.1f}",
                f"{result['val_top1']:.2f}",
                f"{result['wall_s'] / summary['fixed']['wall_s']:.2f}",
            ]
        )
    write_results(Path(args.out), payload, table)


if __name__ == "__main__":
    main()
