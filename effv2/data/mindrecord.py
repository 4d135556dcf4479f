"""A split packed into MindRecord shards (MindSpore's own container) and read back by index.

``<root>/<split>/`` holds ``shard-<k>.mindrecord`` (each with MindRecord's ``.db`` index),
the packed rows' manifest (``manifest.npz``: the original relative paths, labels, sizes) and
``pack.json`` (class names and counts, the shards, the source's fingerprint, the images left
out because they did not decode), written last. Row ``i`` of the shards, counted over the shards
in order, is image ``i`` of the manifest, so a ``SubsetSampler`` of image indices reads exactly the
rows the folder pipeline would read, in that order: the same keyed order, sharding over ranks and
resume. A remote root's pack is fetched whole (fsspec; the files ``pack.json`` lists, each to a
partial name and renamed) into a local folder first, once per process: under
``$EFFV2_CACHE/remote`` and kept with ``data.remote_cache=true`` (a file whose size already matches
is not fetched again), otherwise into a temporary folder removed when the process exits.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import mindspore.dataset as ds

from effv2.cache import cache_dir, temp_dir
from effv2.data import manifest
from effv2.data.split import ImageSplit
from effv2.errors import UserError
from effv2.storage.location import filesystem, is_remote, join, local_path, storage_errors

log = logging.getLogger(__name__)

PACK_FORMAT = "effv2-mindrecord"
PACK_VERSION = 1
PACK_INFO = "pack.json"
ROWS = "manifest.npz"
COLUMNS = ["image", "label", "index"]
SCHEMA = {"image": {"type": "bytes"}, "label": {"type": "int32"}, "index": {"type": "int64"}}


_fetched: dict[tuple[str, bool], Path] = {}  # url -> local folder, in this process


def _fetch(url: str, remote_cache: bool) -> Path:
    """The packed split at ``url`` copied whole into a local folder (see the module)."""
    if (url, remote_cache) in _fetched:
        return _fetched[url, remote_cache]
    fs, path = filesystem(url, "data.root")
    with storage_errors("data.root", url):
        if not fs.exists(f"{path}/{PACK_INFO}"):
            raise UserError(f"data.root: {url} holds no {PACK_INFO}; pack it with python -m effv2.data.pack")
        with fs.open(f"{path}/{PACK_INFO}", "rb") as handle:
            info = json.loads(handle.read())
        wanted = [ROWS, *(name for s in info.get("shards", []) for name in (s["file"], f"{s['file']}.db"))]
        sizes = {p.rsplit("/", 1)[-1]: int(i.get("size") or 0) for p, i in fs.find(path, detail=True).items()}
    missing = [name for name in wanted if name not in sizes]
    if missing:
        raise UserError(f"data.root: {url}/{PACK_INFO} lists {missing[0]}, which is not there; pack it again")
    if remote_cache:
        local = cache_dir() / "remote" / hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    else:
        local = temp_dir("shards-")
        atexit.register(shutil.rmtree, local, True)
    local.mkdir(parents=True, exist_ok=True)
    started, fetched = time.perf_counter(), 0
    (local / PACK_INFO).unlink(missing_ok=True)  # written last: a folder without it is not complete
    for name in wanted:
        target = local / name
        if target.is_file() and target.stat().st_size == sizes[name]:
            continue
        partial = target.with_name(f"{name}.{os.getpid()}.partial")
        with storage_errors("data.root", url):
            fs.get(f"{path}/{name}", str(partial))
        partial.replace(target)
        fetched += sizes[name]
    (local / PACK_INFO).write_text(json.dumps(info, indent=1) + "\n")
    log.info("data.root=%s: fetched %.1f MB of shards into %s in %.1f s%s", url, fetched / 1e6, local,
             time.perf_counter() - started, " (kept: data.remote_cache)" if remote_cache else "")  # fmt: skip
    _fetched[url, remote_cache] = local
    return local


def packed_folder(root: str | Path, split: str, remote_cache: bool = False) -> Path:
    """The local folder holding the packed ``split`` (fetched first for a remote root)."""
    if is_remote(root):
        return _fetch(join(str(root), split), remote_cache)
    folder = local_path(root) / split
    if not (folder / PACK_INFO).is_file():
        what = "does not exist" if not folder.is_dir() else f"holds no {PACK_INFO}"
        raise UserError(
            f"data.format=mindrecord: {str(folder)!r} {what}; pack an ImageFolder with "
            f"python -m effv2.data.pack <root> {local_path(root)} --split {split}"
        )
    return folder


def open_packed(folder: Path) -> ImageSplit:
    """The split a local packed folder holds; its images are read from the shards."""
    info = json.loads((folder / PACK_INFO).read_text())
    if info.get("format") != PACK_FORMAT or info.get("version") != PACK_VERSION:
        raise UserError(f"{folder / PACK_INFO} is not an effv2 MindRecord pack of version {PACK_VERSION}")
    rows = manifest.decode((folder / ROWS).read_bytes(), str(folder), folder, None, str(folder / ROWS))
    shards = tuple(str(folder / shard["file"]) for shard in info["shards"])
    missing = [s for s in shards if not Path(s).is_file() or not Path(f"{s}.db").is_file()]
    if missing:
        raise UserError(f"the pack in {folder} lacks {missing[0]} (or its .db index); copy it again")
    if rows.num_images != info["images"] or rows.fingerprint != info.get("fingerprint"):
        raise UserError(f"the pack in {folder} mixes files of two packs (pack.json and {ROWS} differ); pack it again")
    return ImageSplit(folder, rows.class_names, rows.files, rows.labels, rows.sizes, rows.fingerprint, None, shards)


def shard_rows(split: ImageSplit, indices: list[int]) -> ds.Dataset:
    """(image bytes, label, index) of ``indices``, in that order, read by index from the shards."""
    return ds.MindDataset(
        list(split.shards), columns_list=COLUMNS, sampler=ds.SubsetSampler(indices), num_parallel_workers=1
    )
