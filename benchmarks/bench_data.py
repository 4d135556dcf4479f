"""Data pipeline against the model: how fast the training pipeline (decode, the official random
crop, bilinear resize, flip, the official RandAugment 2 x 15, normalise; hardware.num_workers
workers) produces images, how fast training consumes them, and the fraction of a real epoch spent
waiting for data (metrics.csv data_wait).

The images are real: the embedded digits, upscaled to 256 px JPEGs so decoding costs what a
photo of that size costs.

    python benchmarks/bench_data.py --sizes 128,224 --variant effnetv2_b0
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import write_results  # noqa: E402


def make_jpeg_folder(root: Path, per_class: int, source_size: int) -> Path:
    from PIL import Image

    from effv2.data.digits import materialise_digits

    digits = materialise_digits()
    for split, count in (("train", per_class), ("val", max(2, per_class // 4))):
        for class_dir in sorted((digits / split).iterdir()):
            target = root / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for image in sorted(class_dir.iterdir())[:count]:
                with Image.open(image) as img:
                    big = img.convert("RGB").resize((source_size, source_size), Image.BILINEAR)
                big.save(target / f"{image.stem}.jpg", quality=90)
    return root


def _overrides(root: Path, size: int, workers: int) -> list[str]:
    return [
        "data=imagefolder", f"data.root={root}", "data.num_classes=10", f"data.train_size={size}",
        f"data.eval_size={size}", "data.augment.randaug_layers=2", "data.augment.randaug_magnitude=15",
        f"hardware.num_workers={workers}",
    ]  # fmt: skip


def pipeline_rate(root: Path, size: int, workers: int, epochs: int) -> float:
    """Images per second the training pipeline alone delivers, over ``epochs`` passes."""
    from hydra import compose, initialize_config_dir

    from effv2.config import register_configs
    from effv2.data.pipeline import open_train_split, train_epoch
    from effv2.data.sharding import BatchPlan, epoch_order

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=_overrides(root, size, workers))
    split = open_train_split(cfg.data)
    images, started = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = BatchPlan(cfg.data.batch_size).rank_indices(epoch_order(split.num_images, cfg.seed, epoch), 0)
        for batch, _ in train_epoch(cfg.data, split, order, workers, size).create_tuple_iterator(output_numpy=True):
            images += len(batch)
    return images / (time.perf_counter() - started)


def training_epoch(root: Path, size: int, workers: int, variant: str, batch: int) -> dict:
    """A real 2-epoch run; the second epoch (compiled already) gives consumption and wait."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        result = subprocess.run(
            [sys.executable, "run.py", *_overrides(root, size, workers), f"model={variant}", "train.epochs=2",
             f"data.batch_size={batch}", "experiment=none", "optimizer=rmsprop", f"hydra.run.dir={run_dir}"],
            cwd=REPO, capture_output=True, text=True, env=os.environ.copy(),
        )  # fmt: skip
        if result.returncode != 0:
            raise SystemExit(f"training run failed:\n{result.stderr[-3000:]}")
        with (run_dir / "metrics.csv").open(newline="") as handle:
            last = list(csv.DictReader(handle))[-1]
    return {"images_per_s": float(last["images_per_s"]), "data_wait": float(last["data_wait"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="128,224")
    parser.add_argument("--variant", default="effnetv2_b0")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="hardware.num_workers")
    parser.add_argument("--per-class", type=int, default=32, help="training images per class (10 classes)")
    parser.add_argument("--source-size", type=int, default=256)
    parser.add_argument("--out", default="benchmarks/results/data.json")
    args = parser.parse_args()
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_jpeg_folder(Path(tmp) / "jpeg", args.per_class, args.source_size)
        for size in (int(s) for s in args.sizes.split(",")):
            produced = pipeline_rate(root, size, args.workers, epochs=2)
            consumed = training_epoch(root, size, args.workers, args.variant, args.batch)
            rows.append({
                "size": size, "workers": args.workers, "pipeline_images_per_s": produced,
                "training_images_per_s": consumed["images_per_s"], "headroom": produced / consumed["images_per_s"],
                "data_wait": consumed["data_wait"], "variant": args.variant, "batch": args.batch,
            })  # fmt: skip
            print(f"{size}px done", file=sys.stderr)
    table = [["px", "pipeline img/s", f"training img/s ({args.variant})", "pipeline / training", "epoch waiting"]]
    for r in rows:
        table.append([str(r["size"]), f"{r['pipeline_images_per_s']:.1f}", f"{r['training_images_per_s']:.1f}",
                      f"{r['headroom']:.1f}x", f"{r['data_wait']:.1%}"])  # fmt: skip
    write_results(Path(args.out), {"config": vars(args), "results": rows}, table)


if __name__ == "__main__":
    main()
