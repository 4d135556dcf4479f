"""Opening a split at ImageNet scale: what happens before step 1, per rank.

Open time of an ImageFolder split of 20,000 and 200,000 files in 1,000 class folders (tiny
files: only the listing matters) against a bare ``os.scandir`` walk (names only) and the walk
with sizes; the first open (list + write the manifest), a re-open with ``data.manifest_check=
listing`` (list again, compare fingerprints) and from the manifest alone (``none``, and what every
launched rank does). Beside it the up-front check this replaced (read the file, PIL ``verify``,
end marker) per real ImageNet-sized JPEG, the RSS of a 1,281,167-entry manifest, and MindRecord
index reads (rows per second in a random order, 1 worker) against reading the same files from the
folder. Figures are medians of interleaved rounds on a warm page cache; the 1.28M column is the
200K figure scaled linearly.

    python benchmarks/bench_open.py                    # 20,000 and 200,000 files
    python benchmarks/bench_open.py --counts 2000 --photos 100
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from bench_data import make_photo_folder  # noqa: E402
from common import cpu_name, interleaved_medians, write_results  # noqa: E402

IMAGENET_TRAIN = 1_281_167
IMAGENET_BYTES = 140e9  # the training JPEGs, ~110 KB each
CLASSES = 1000
COLUMNS = ("scandir_names", "scandir_names_sizes", "first_open", "reopen_listing", "reopen_manifest")


def make_tiny_folder(root: Path, count: int) -> Path:
    """``count`` files of 100 bytes as <root>/train/<class>/<name>.JPEG over 1,000 classes."""
    payload = b"\xff\xd8" + b"\0" * 96 + b"\xff\xd9"
    for index in range(count):
        folder = root / "train" / f"n{index % CLASSES:08d}"
        if index < CLASSES:
            folder.mkdir(parents=True)
        (folder / f"n{index % CLASSES:08d}_{index}.JPEG").write_bytes(payload)
    return root


def _walk(path: Path, sizes: bool) -> int:
    found = 0
    with os.scandir(path) as classes:
        for entry in classes:
            if entry.is_dir():
                with os.scandir(entry.path) as files:
                    for file in files:
                        if file.is_file():
                            found += 1
                            if sizes:
                                file.stat()
    return found


def open_times(root: Path, repeats: int) -> dict[str, float]:
    from effv2.config.schema import ManifestCheck
    from effv2.data import manifest

    location = Path(manifest.manifest_path(root, "train"))

    def first_open() -> None:
        location.unlink(missing_ok=True)
        manifest.open_split(root, "train")

    def reopen(check: ManifestCheck):
        def run() -> None:
            if not location.exists():
                manifest.open_split(root, "train")
            manifest.open_split(root, "train", check=check)

        return run

    medians = interleaved_medians(
        {
            "scandir_names": lambda: _walk(root / "train", sizes=False),
            "scandir_names_sizes": lambda: _walk(root / "train", sizes=True),
            "first_open": first_open,
            "reopen_listing": reopen(ManifestCheck.listing),
            "reopen_manifest": reopen(ManifestCheck.none),
        },
        repeats,
    )
    times = {name: value["median_s"] for name, value in medians.items()}
    times["manifest_bytes"] = location.stat().st_size
    return times


def old_check_ms(folder: Path, count: int) -> float:
    """The replaced up-front check per image: read it whole, PIL open + verify, end marker."""
    from PIL import Image

    files = sorted(folder.rglob("*.jpg"))[:count]
    started = time.perf_counter()
    for path in files:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        assert b"\xff\xd9" in data[-64:]
    return 1e3 * (time.perf_counter() - started) / len(files)


def manifest_rss(tmp: Path) -> dict[str, float]:
    code = f"""
import gc, time
import numpy as np
from effv2.data import manifest
from effv2.data.file_table import FileTable
from effv2.data.split import ImageSplit, listing_fingerprint
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024
count = {IMAGENET_TRAIN}
names = tuple(f"n{{c:08d}}" for c in range(1000))
files = FileTable("/x", (f"{{names[i // 1282]}}/{{names[i // 1282]}}_{{i}}.JPEG" for i in range(count)))
labels = (np.arange(count) // 1282).astype(np.int32)
sizes = np.full(count, 110_000, np.int64)
split = ImageSplit("/x", names, files, labels, sizes, listing_fingerprint(names, files, labels, sizes))
manifest.write(split, "{tmp}/train.manifest.npz", manifest.split_location("/data/imagenet", "train"))
del split, files, labels, sizes
gc.collect()
base = rss()
started = time.perf_counter()
loaded = manifest.load("{tmp}/train.manifest.npz", "/data/imagenet", "train")
seconds = time.perf_counter() - started
gc.collect()
print(rss() - base, loaded.nbytes() / 2**20, seconds)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    grown, held, seconds = (float(v) for v in out.split())
    return {"rss_growth_mib": grown, "arrays_mib": held, "load_s": seconds,
            "file_mib": (tmp / "train.manifest.npz").stat().st_size / 2**20}  # fmt: skip


def index_reads(folder: Path, tmp: Path) -> dict[str, float]:
    """Rows per second, 1 worker, a random order: MindRecord by index vs the folder's files."""
    import mindspore.dataset as ds
    import numpy as np

    from effv2.data import manifest, mindrecord
    from effv2.data.pack import pack_split
    from effv2.data.pipeline import _rows

    split = manifest.open_split(folder, "train")[0]
    packed = tmp / "packed"
    packed.mkdir()
    started = time.perf_counter()
    pack_split(split, packed, 256 * 10**6, workers=1)
    pack_ms = 1e3 * (time.perf_counter() - started) / split.num_images
    shards = mindrecord.open_packed(packed)
    order = [int(i) for i in np.random.default_rng(0).permutation(split.num_images)]

    def drain(dataset: ds.Dataset) -> None:
        for _ in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
            pass

    medians = interleaved_medians(
        {"mindrecord": lambda: drain(_rows(shards, order)), "folder": lambda: drain(_rows(split, order))}, repeats=3
    )
    rates = {f"{name}_rows_per_s": split.num_images / value["median_s"] for name, value in medians.items()}
    return {**rates, "pack_ms_per_image": pack_ms, "images": split.num_images}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="20000,200000", help="files per split to open")
    parser.add_argument("--photos", type=int, default=1000, help="real JPEGs for the check and index reads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "open.json"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-open-"))
    os.environ["EFFV2_CACHE"] = str(tmp / "cache")
    payload: dict = {"cpu": cpu_name(), "opens": {}}
    table = [["files", "scandir (names)", "scandir + sizes", "first open", "re-open: listing", "re-open: manifest",
              "manifest"]]  # fmt: skip
    try:
        for count in (int(c) for c in args.counts.split(",")):
            root = make_tiny_folder(tmp / f"tiny{count}", count)
            times = open_times(root, args.repeats)
            payload["opens"][count] = times
            seconds = [f"{times[k]:.2f} s" for k in COLUMNS]
            table.append([f"{count:,}", *seconds, f"{times['manifest_bytes'] / 1e6:.1f} MB"])
            shutil.rmtree(root)
        largest = max(payload["opens"])
        scale = IMAGENET_TRAIN / largest
        big = payload["opens"][largest]
        seconds = [f"{big[k] * scale:.1f} s" for k in COLUMNS]
        table.append([f"{IMAGENET_TRAIN:,} (x{scale:.1f}, on paper)", *seconds,
                      f"{big['manifest_bytes'] * scale / 1e6:.0f} MB"])  # fmt: skip
        photos = make_photo_folder(tmp / "photos", args.photos)
        check = old_check_ms(photos, args.photos)
        payload["old_upfront_check_ms_per_image"] = check
        payload["manifest_1p28m"] = manifest_rss(tmp)
        payload["index_reads"] = index_reads(photos, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rss, reads = payload["manifest_1p28m"], payload["index_reads"]
    payload["imagenet_per_rank"] = {
        "old_check_cpu_s": check * IMAGENET_TRAIN / 1e3,
        "old_bytes_read": IMAGENET_BYTES,
        "new_open_s_launcher": big["first_open"] * scale,
        "new_open_s_rank": big["reopen_manifest"] * scale,
    }
    print(f"\n{payload['cpu']}: the replaced up-front check cost {check:.3f} ms per real JPEG = "
          f"{check * IMAGENET_TRAIN / 1e3 / 60:.1f} CPU minutes and a 140 GB read per rank for ImageNet; "
          f"a 1.28M manifest: {rss['file_mib']:.0f} MiB file, {rss['arrays_mib']:.0f} MiB of arrays, RSS +"
          f"{rss['rss_growth_mib']:.0f} MiB, loaded in {rss['load_s']:.2f} s; MindRecord index reads "
          f"{reads['mindrecord_rows_per_s']:.0f} rows/s vs folder {reads['folder_rows_per_s']:.0f} rows/s "
          f"(1 worker, random order, {reads['images']} JPEGs); packing {reads['pack_ms_per_image']:.2f} ms/image "
          f"(1 process)\n")  # fmt: skip
    write_results(Path(args.out), payload, table)


if __name__ == "__main__":
    main()
