"""Pack ImageFolder splits into MindRecord shards:
``python -m effv2.data.pack <root> <out> [--split train --split val] [--shard-size 1GB] [--workers N]``.

Every image is read and decoded once (``--workers`` processes); one that fails is left out and
listed in ``pack.json``. The rest are written in the split's order, the encoded bytes as they
were (no re-encoding), into shards of about ``--shard-size`` bytes each: ``<out>/<split>/`` then
holds what ``data.format=mindrecord`` (``data=mindrecord``) trains from (effv2.data.mindrecord).
An ``<out>`` URL (s3://...): its old ``pack.json`` is deleted first, each shard is uploaded as
soon as it is written (and deleted locally: the staging folder under ``$EFFV2_CACHE/tmp`` holds
one shard at a time), ``pack.json`` last.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from mindspore.mindrecord import FileWriter

from effv2.cache import temp_dir
from effv2.data import manifest
from effv2.data.checking import checked_images, default_workers
from effv2.data.file_table import FileTable
from effv2.data.mindrecord import PACK_FORMAT, PACK_INFO, PACK_VERSION, ROWS, SCHEMA
from effv2.data.split import ImageSplit, listing_fingerprint
from effv2.errors import UserError
from effv2.storage.location import filesystem, is_remote, join, local_path, storage_errors

log = logging.getLogger(__name__)

WRITE_BATCH = 256  # rows handed to FileWriter at a time
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS or float(match.group(1)) <= 0:
        raise UserError(f"--shard-size={text!r} is not a size such as 1GB, 512MB or 256MiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


class _ShardWriter:
    """Rows into ``shard-<k>.mindrecord`` files of about ``budget`` bytes each; ``finished(path)``
    is called with each shard (and then its ``.db``) once it is complete."""

    def __init__(self, folder: Path, budget: int, finished: Callable[[Path], None] | None = None) -> None:
        self.folder, self.budget, self.finished = folder, budget, finished
        self.shards: list[dict] = []
        self.writer: FileWriter | None = None
        self.pending: list[dict] = []
        self.bytes = 0

    def _open(self) -> None:
        name = f"shard-{len(self.shards):05d}.mindrecord"
        self.writer = FileWriter(str(self.folder / name), shard_num=1, overwrite=True)
        self.writer.add_schema(SCHEMA, "effv2 packed images")
        self.shards.append({"file": name, "rows": 0, "bytes": 0})
        self.bytes = 0

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_raw_data(self.pending)
            self.pending = []

    def add(self, encoded: np.ndarray, label: int, index: int) -> None:
        if self.writer is None or (self.bytes + encoded.nbytes > self.budget and self.shards[-1]["rows"]):
            self.close()
            self._open()
        self.pending.append({"image": encoded.tobytes(), "label": label, "index": index})
        self.bytes += encoded.nbytes
        self.shards[-1]["rows"] += 1
        self.shards[-1]["bytes"] += int(encoded.nbytes)
        if len(self.pending) >= WRITE_BATCH:
            self._flush()

    def close(self) -> None:
        if self.writer is not None:
            self._flush()
            self.writer.commit()
            self.writer = None
            if self.finished is not None:
                shard = self.folder / self.shards[-1]["file"]
                self.finished(shard)
                self.finished(shard.with_name(f"{shard.name}.db"))


def pack_split(
    split: ImageSplit, folder: Path, budget: int, workers: int, finished: Callable[[Path], None] | None = None
) -> dict:
    """Write ``split`` into ``folder`` (``finished``: called with each file once complete, pack.json
    last); returns what pack.json records."""
    started = time.perf_counter()
    (folder / PACK_INFO).unlink(missing_ok=True)  # an unfinished pack has none
    writer = _ShardWriter(folder, budget, finished)
    kept, left_out = [], []
    for index, encoded, problem in checked_images(split, workers, keep_bytes=True):
        if problem is not None:
            left_out.append({"path": split.files.relative(index), "problem": problem})
            log.warning("left out %s: %s", split.files[index], problem)
            continue
        writer.add(encoded, int(split.labels[index]), len(kept))
        kept.append(index)
    writer.close()
    if not kept:
        raise UserError(f"no image of {split.path} decodes; nothing to pack")
    rows = np.asarray(kept, np.int64)
    files = FileTable(str(folder), (split.files.relative(i) for i in kept))
    labels, sizes = split.labels[rows], split.sizes[rows]
    fingerprint = listing_fingerprint(split.class_names, files, labels, sizes)
    packed = ImageSplit(folder, split.class_names, files, labels, sizes, fingerprint, None)
    (folder / ROWS).write_bytes(manifest.encode(packed))
    if finished is not None:
        finished(folder / ROWS)
    info = {
        "format": PACK_FORMAT, "version": PACK_VERSION, "source": str(split.path),
        "source_fingerprint": split.fingerprint, "fingerprint": fingerprint, "images": len(kept),
        "class_names": list(split.class_names), "class_counts": packed.class_counts().tolist(),
        "shards": writer.shards, "shard_size": budget, "left_out": left_out,
        "seconds": round(time.perf_counter() - started, 2),
    }  # fmt: skip
    (folder / PACK_INFO).write_text(json.dumps(info, indent=1) + "\n")
    if finished is not None:
        finished(folder / PACK_INFO)
    return info


def _uploader(url: str) -> Callable[[Path], None]:
    """Moves each finished file to ``url``; the old pack.json goes first, so that a reader never
    takes a half-replaced pack for a finished one."""
    fs, path = filesystem(url, "out")
    with storage_errors("out", url):
        if fs.exists(f"{path}/{PACK_INFO}"):
            fs.rm(f"{path}/{PACK_INFO}")

    def upload(local: Path) -> None:
        with storage_errors("out", url):
            fs.put(str(local), f"{path}/{local.name}")
        local.unlink()

    return upload


def pack(root: str, out: str, splits: list[str], shard_size: str, workers: int) -> list[dict]:
    budget = parse_size(shard_size)
    results = []
    for split_name in splits:
        split = manifest.open_split(root, split_name)[0]
        if is_remote(out):
            staged = temp_dir("pack-")
            try:
                info = pack_split(split, staged, budget, workers, _uploader(join(out, split_name)))
            finally:
                shutil.rmtree(staged, ignore_errors=True)
        else:
            folder = local_path(out) / split_name
            folder.mkdir(parents=True, exist_ok=True)
            info = pack_split(split, folder, budget, workers)
        total = sum(shard["bytes"] for shard in info["shards"])
        print(f"{split.path} -> {join(out, split_name) if is_remote(out) else local_path(out) / split_name}: "
              f"{info['images']} images, {len(info['class_names'])} classes, "
              f"{len(info['shards'])} shards, {total / 1e6:.1f} MB, {len(info['left_out'])} left out, "
              f"{info['seconds']:.1f} s", flush=True)  # fmt: skip
        results.append(info)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m effv2.data.pack", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the ImageFolder root (local or s3://...), holding <split>/<class>/<image>")
    parser.add_argument("out", help="the folder (local or s3://...) to write <split>/ shards into")
    parser.add_argument("--split", action="append", help="a split to pack (repeat it); default: train and val")
    parser.add_argument("--shard-size", default="1GB", help="bytes of images per shard (default 1GB)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="decoding processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        pack(args.root, args.out, args.split or ["train", "val"], args.shard_size, args.workers)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
