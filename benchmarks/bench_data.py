"""The training input pipeline against the one that matters and its best peer: images per second
per CPU core of effv2's pipeline (open_train_split + train_epoch: decode, the official random
crop, bilinear resize, flip, the official RandAugment 2 ops, normalise, batch) next to MindSpore's
own C++ pipeline on the same files (ImageFolderDataset + RandomCropDecodeResize + flip +
RandAugment + Normalize + HWC2CHW), side by side in one run. effv2 hands uint8 HWC batches to the
compiled step, which normalises them (data.normalise_on_device, what training does with these
settings); the host-normalised float figure is reported beside it; how both scale from 1 to 2 workers
(threads and processes for effv2), the share of an image's time effv2 holds the GIL (the thread
ceiling at many workers), memory per worker, and the cores a host needs to feed 8 accelerators.

The images are real photographs at ImageNet-like sizes (300-427 x 300-640 px JPEGs, quality
75-95), cut from the two photos scikit-learn ships. Per-core figures run in a child process
pinned to one CPU (os.sched_setaffinity), so every thread of either pipeline shares that core.

MindSpore's RandAugment is torchvision's (14 ops, magnitude bins): the official level L is bin
min(L, 10) / 10 * 30 of 31 bins, so level 15 runs at its full range (it cannot extrapolate).

    python benchmarks/bench_data.py                       # 224 / 300 / 384 px x magnitude 5 / 10 / 15
    python benchmarks/bench_data.py --sizes 300 --magnitudes 15 --images 120
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from common import cpu_name, write_results  # noqa: E402

BATCH = 25
MEAN, STD = (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)
DEVICES_PER_HOST = 8
DEVICE_RATES = (500, 1000, 2000)


def make_photo_folder(root: Path, images: int, classes: int = 10, seed: int = 0) -> Path:
    """``images`` JPEGs of photo content at ImageNet-like sizes in ``classes`` class folders."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # 427 x 640 each
    rng = np.random.default_rng(seed)
    for index in range(images):
        photo = photos[index % len(photos)]
        height = int(rng.integers(300, photo.shape[0] + 1))
        width = int(min(photo.shape[1], round(height * rng.uniform(0.75, 1.5))))
        top = int(rng.integers(0, photo.shape[0] - height + 1))
        left = int(rng.integers(0, photo.shape[1] - width + 1))
        crop = photo[top : top + height, left : left + width]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        folder = root / "train" / f"class{index % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"{index:05d}.jpg", quality=int(rng.integers(75, 96)))
    return root


def _pin(cores: int) -> None:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))


def _rss_mib(status: str) -> float | None:
    """VmRSS of a /proc/<pid>/status text, MiB (None for a process without memory)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def _children_rss_mib() -> list[float]:
    """Resident memory of this process's direct children (worker processes), MiB each."""
    me, sizes = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        parent = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "0")
        rss = _rss_mib(status)
        if int(parent) == me and rss is not None:
            sizes.append(rss)
    return sizes


def _own_rss_mib() -> float:
    return _rss_mib(Path("/proc/self/status").read_text()) or 0.0


def _data_config(root: str | Path, magnitude: float, *overrides: str):  # noqa: ANN202
    """The data node of the benchmark's configuration: the photo folder, RandAugment 2 x ``magnitude``."""
    from hydra import compose, initialize_config_dir

    from effv2.config import register_configs

    register_configs()
    base = [
        "data=imagefolder", f"data.root={root}", "data.num_classes=10", f"data.batch_size={BATCH}",
        "data.augment.randaug_layers=2", f"data.augment.randaug_magnitude={magnitude}", "data.val_split=train",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[*base, *overrides]).data


def _rate(batches, epochs: int = 2) -> dict:
    """Images per second over ``epochs`` epochs after a warm-up epoch (compiled kernels loaded,
    files in the page cache), each timed from its first batch (pool start-up reported apart)."""
    for _ in batches(-1):
        pass
    images, busy, startup, children = 0, 0.0, 0.0, []
    for epoch in range(epochs):
        started = time.perf_counter()
        first_at = None
        for batch in batches(epoch):
            if first_at is None:
                first_at = time.perf_counter()
                startup += first_at - started
                children = _children_rss_mib() or children
                continue
            images += len(batch)
        busy += time.perf_counter() - first_at
    return {"images_per_s": images / busy, "startup_s": startup / epochs, "rss_mib": _own_rss_mib(),
            "worker_rss_mib": children}  # fmt: skip


def child_effv2(root: str, size: int, magnitude: float, workers: int, kind: str, uint8_out: bool) -> dict:
    from effv2.data.pipeline import open_train_split, train_epoch
    from effv2.data.sharding import epoch_order

    data_cfg = _data_config(root, magnitude, f"data.train_size={size}", f"data.worker_kind={kind}")
    split = open_train_split(data_cfg)

    def batches(epoch: int):
        order = epoch_order(split.num_images, 0, epoch + 2)
        dataset = train_epoch(data_cfg, split, order, workers, size, seed=0, epoch=epoch + 2, uint8_out=uint8_out)
        return (images for images, *_ in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))

    return _rate(batches)


def child_mindspore(root: str, size: int, magnitude: float, workers: int) -> dict:
    import mindspore.dataset as ds
    import mindspore.dataset.vision as vision

    bins = 31
    level = round(min(magnitude, 10.0) / 10.0 * (bins - 1))

    def batches(epoch: int):
        data = ds.ImageFolderDataset(str(Path(root) / "train"), num_parallel_workers=1, shuffle=True)
        transforms = [
            vision.RandomCropDecodeResize(size, scale=(0.05, 1.0), ratio=(0.75, 1.33)),
            vision.RandomHorizontalFlip(),
            vision.RandAugment(num_ops=2, magnitude=level, num_magnitude_bins=bins),
            vision.Normalize(list(MEAN), list(STD)),
            vision.HWC2CHW(),
        ]
        data = data.map(transforms, input_columns="image", num_parallel_workers=workers)
        data = data.batch(BATCH, drop_remainder=True)
        return (images for images, _ in data.create_tuple_iterator(num_epochs=1, output_numpy=True))

    return _rate(batches)


def gil_share(root: Path, size: int, magnitude: float) -> dict:
    """Per image: total time in effv2's TrainTransform on one thread, and the part spent inside
    the calls that release the GIL (simplejpeg's decode, the numba kernels); the rest holds it."""
    import numpy as np
    import simplejpeg

    from effv2.data import kernels
    from effv2.data.transforms import TrainTransform

    released = [0.0]

    def timed(function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                released[0] += time.perf_counter() - started

        return wrapper

    transform = TrainTransform(_data_config(root, magnitude), size)
    files = sorted((root / "train").rglob("*.jpg"))
    encoded = [np.frombuffer(f.read_bytes(), np.uint8) for f in files]
    for index, data in enumerate(encoded[:10]):  # compile / load every kernel first
        transform(data, np.array([0, 0, index]))
    originals = {name: getattr(kernels, name) for name in dir(kernels) if hasattr(getattr(kernels, name), "py_func")}
    original_decode = simplejpeg.decode_jpeg
    try:
        for name, function in originals.items():
            setattr(kernels, name, timed(function))
        simplejpeg.decode_jpeg = timed(original_decode)
        started = time.perf_counter()
        for index, data in enumerate(encoded):
            transform(data, np.array([0, 1, index]))
        total = time.perf_counter() - started
    finally:
        for name, function in originals.items():
            setattr(kernels, name, function)
        simplejpeg.decode_jpeg = original_decode
    per_image = total / len(encoded) * 1000
    held = (total - released[0]) / len(encoded) * 1000
    return {"size": size, "magnitude": magnitude, "ms_per_image": per_image, "gil_held_ms": held,
            "gil_held_share": held / per_image, "thread_ceiling_images_per_s": 1000 / held}  # fmt: skip


def _child(spec: dict, cores: int | None) -> dict:
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    if cores is not None:
        command += ["--cores", str(cores)]
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA=os.environ.get("ONEDNN_MAX_CPU_ISA", "AVX2"), GLOG_v="3")
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"{spec} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _run_child(spec: dict) -> dict:
    if spec["pipeline"] == "mindspore":
        return child_mindspore(spec["root"], spec["size"], spec["magnitude"], spec["workers"])
    return child_effv2(
        spec["root"], spec["size"], spec["magnitude"], spec["workers"], spec["kind"], spec.get("uint8_out", True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="224,300,384")
    parser.add_argument("--magnitudes", default="5,10,15")
    parser.add_argument("--images", type=int, default=300, help="JPEGs in the data set")
    parser.add_argument("--scaling-size", type=int, default=300)
    parser.add_argument("--scaling-magnitude", type=float, default=15.0)
    parser.add_argument("--out", default="benchmarks/results/data.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cores", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.cores:
            _pin(args.cores)
        print(json.dumps(_run_child(json.loads(args.child))))
        return
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
    sizes = [int(s) for s in args.sizes.split(",")]
    magnitudes = [float(m) for m in args.magnitudes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = make_photo_folder(Path(tmp) / "photos", args.images)
        per_core = []
        for size in sizes:
            for magnitude in magnitudes:
                base = {"root": str(root), "size": size, "magnitude": magnitude, "workers": 1}
                ours = _child({**base, "pipeline": "effv2", "kind": "thread"}, cores=1)
                host = _child({**base, "pipeline": "effv2", "kind": "thread", "uint8_out": False}, cores=1)
                native = _child({**base, "pipeline": "mindspore"}, cores=1)
                per_core.append({"size": size, "magnitude": magnitude, "effv2": ours["images_per_s"],
                                 "effv2_host_normalised": host["images_per_s"], "mindspore": native["images_per_s"],
                                 "ratio": ours["images_per_s"] / native["images_per_s"]})  # fmt: skip
                print(f"{size} px, RA 2x{magnitude:g}: effv2 {ours['images_per_s']:.0f}, "
                      f"MindSpore {native['images_per_s']:.0f} img/s per core", file=sys.stderr)  # fmt: skip
        scaling = []
        base = {"root": str(root), "size": args.scaling_size, "magnitude": args.scaling_magnitude}
        for pipeline, kind in (("effv2", "thread"), ("effv2", "process"), ("mindspore", "thread")):
            rates = {}
            for workers in (1, 2):
                measured = _child({**base, "pipeline": pipeline, "kind": kind, "workers": workers}, cores=None)
                rates[workers] = measured
            scaling.append({
                "pipeline": pipeline, "worker_kind": kind, "images_per_s_1": rates[1]["images_per_s"],
                "images_per_s_2": rates[2]["images_per_s"],
                "efficiency_2": rates[2]["images_per_s"] / rates[1]["images_per_s"],
                "startup_s_2": rates[2]["startup_s"], "main_rss_mib_1": rates[1]["rss_mib"],
                "main_rss_mib_2": rates[2]["rss_mib"], "worker_rss_mib_1": rates[1]["worker_rss_mib"],
                "worker_rss_mib_2": rates[2]["worker_rss_mib"],
            })  # fmt: skip
            print(f"scaling {pipeline}/{kind} done", file=sys.stderr)
        gil = gil_share(root, args.scaling_size, args.scaling_magnitude)
    reference = next(r for r in per_core if r["size"] == args.scaling_size and r["magnitude"] == max(magnitudes))
    cores_needed = [
        {"per_device_images_per_s": rate, "effv2_cores": DEVICES_PER_HOST * rate / reference["effv2"],
         "mindspore_cores": DEVICES_PER_HOST * rate / reference["mindspore"]}
        for rate in DEVICE_RATES
    ]  # fmt: skip
    table = [["px", "RandAugment", "effv2 img/s/core (uint8 to the step; host-normalised)",
              "MindSpore C++ img/s/core", "effv2 / MindSpore"]]  # fmt: skip
    for r in per_core:
        table.append([str(r["size"]), f"2 x {r['magnitude']:g}",
                      f"{r['effv2']:.0f} ({r['effv2_host_normalised']:.0f})", f"{r['mindspore']:.0f}",
                      f"{r['ratio']:.2f}x"])  # fmt: skip
    table.append(["", "", "", "", ""])
    table.append(["workers (2 cores)", "1 worker img/s", "2 workers img/s", "2 / 1", "RSS main / per worker MiB"])
    for s in scaling:
        workers_rss = "/".join(f"{m:.0f}" for m in s["worker_rss_mib_2"]) or "-"
        table.append([f"{s['pipeline']}, {s['worker_kind']} workers", f"{s['images_per_s_1']:.0f}",
                      f"{s['images_per_s_2']:.0f}", f"{s['efficiency_2']:.2f}x",
                      f"{s['main_rss_mib_2']:.0f} / {workers_rss}"])  # fmt: skip
    table.append(["", "", "", "", ""])
    table.append([f"8 devices at {args.scaling_size} px, RA 2x{max(magnitudes):g}", "img/s per device",
                  "effv2 cores", "MindSpore cores", ""])  # fmt: skip
    for c in cores_needed:
        table.append(["", str(c["per_device_images_per_s"]), f"{c['effv2_cores']:.0f}", f"{c['mindspore_cores']:.0f}",
                      ""])  # fmt: skip
    table.append(["", "", "", "", ""])
    table.append(["GIL held per image", f"{gil['gil_held_ms']:.2f} of {gil['ms_per_image']:.2f} ms",
                  f"{gil['gil_held_share']:.0%}", f"thread ceiling {gil['thread_ceiling_images_per_s']:.0f} img/s",
                  ""])  # fmt: skip
    results = {"cpu": cpu_name(), "config": {k: v for k, v in vars(args).items() if k not in ("child", "cores")},
               "per_core": per_core, "scaling": scaling, "cores_for_8_devices": cores_needed, "gil": gil}  # fmt: skip
    write_results(Path(args.out), results, table)


if __name__ == "__main__":
    main()
