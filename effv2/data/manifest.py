"""A split's listing written once and read by every rank, worker and later run.

The manifest of ``<root>/<split>`` is one ``.npz`` file (no pickles): the paths below the split
as one UTF-8 buffer with offsets, the labels, the sizes, the class names and the listing's
fingerprint. It lives in ``$EFFV2_CACHE/manifests/<hash of the split's location>/`` or in the
folder ``data.manifest`` names (local or remote), as ``<split>.manifest.npz``.

The process that opens a split first (the launching ``run.py`` on each node, or the single
process) checks the manifest against the folder as ``data.manifest_check`` says: ``listing``
lists the folder again (names and sizes, no image opened) and rewrites the manifest when the
fingerprint differs, saying what changed; ``none`` trusts the manifest as it is (a frozen data
set on storage where listing is slow). The ranks it starts read the copy it pinned in the run
folder (:func:`pin` / :func:`load_pinned`) and list nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import time
import zipfile
from pathlib import Path

import numpy as np

from effv2.cache import cache_dir
from effv2.config.schema import ManifestCheck
from effv2.data.file_table import FileTable
from effv2.data.imagefolder import list_split
from effv2.data.split import ImageSplit, listing_fingerprint
from effv2.errors import UserError
from effv2.storage.files import RemoteFolder, read_local
from effv2.storage.location import filesystem, is_remote, join, local_path, storage_errors

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SUFFIX = ".manifest.npz"


def split_location(root: str | Path, split: str) -> str:
    """The split's folder as one string: an absolute local path or the URL."""
    if is_remote(root):
        return join(str(root), split)
    return str((local_path(root) / split).resolve())


def manifest_path(root: str | Path, split: str, folder: str | None = None) -> str:
    """Where the manifest of ``<root>/<split>`` is kept: ``<folder>/<split>.manifest.npz``, by
    default in the cache under a hash of the split's location."""
    if folder is None:
        key = hashlib.sha256(split_location(root, split).encode("utf-8")).hexdigest()[:16]
        return str(cache_dir() / "manifests" / key / f"{split}{SUFFIX}")
    return join(folder, f"{split}{SUFFIX}") if is_remote(folder) else str(local_path(folder) / f"{split}{SUFFIX}")


def encode(split: ImageSplit, source: str | None = None) -> bytes:
    """The manifest's bytes; ``source``: the split's location it records (default: its path)."""
    meta = {
        "version": FORMAT_VERSION,
        "source": source or str(split.path),
        "class_names": list(split.class_names),
        "fingerprint": split.fingerprint,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    buffer = io.BytesIO()
    np.savez(
        buffer, paths=split.files.buffer, offsets=split.files.offsets, labels=split.labels, sizes=split.sizes,
        meta=np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8),
    )  # fmt: skip
    return buffer.getvalue()


def decode(data: bytes, prefix: str, path: Path | str, read, where: str, source: str | None = None) -> ImageSplit:
    """The split a manifest's bytes describe, its files below ``prefix``; with ``source``, the
    manifest must be that split's (two data sets may share a ``data.manifest`` folder)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
            files = FileTable.from_arrays(prefix, arrays["paths"], arrays["offsets"])
            labels, sizes = arrays["labels"].astype(np.int32), arrays["sizes"].astype(np.int64)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{where} is not an effv2 manifest ({type(exc).__name__}: {exc})") from None
    if meta.get("version") != FORMAT_VERSION:
        raise UserError(f"{where} is a manifest of format {meta.get('version')}; this effv2 reads {FORMAT_VERSION}")
    if source is not None and meta.get("source") != source:
        raise UserError(f"{where} is the manifest of {meta.get('source')}, not of {source}")
    names = tuple(meta["class_names"])
    fingerprint = listing_fingerprint(names, files, labels, sizes)
    if fingerprint != meta["fingerprint"] or not (len(labels) == len(sizes) == len(files)):
        raise UserError(f"{where} is damaged: its arrays do not match the fingerprint it records")
    return ImageSplit(path, names, files, labels, sizes, fingerprint, read)


def write_bytes(data: bytes, location: str) -> None:
    """Write atomically: a reader never sees half a file (object stores put whole objects)."""
    if is_remote(location):
        fs, path = filesystem(location, "data.manifest")
        with storage_errors("data.manifest", location), fs.open(path, "wb") as handle:
            handle.write(data)
        return
    target = Path(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{socket.gethostname()}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(target)


def write(split: ImageSplit, location: str, source: str | None = None) -> None:
    write_bytes(encode(split, source), location)


def _read_bytes(location: str) -> bytes | None:
    """The manifest's bytes, None when there is none."""
    if is_remote(location):
        fs, path = filesystem(location, "data.manifest")
        with storage_errors("data.manifest", location):
            if not fs.exists(path):
                return None
            with fs.open(path, "rb") as handle:
                return handle.read()
    try:
        return Path(location).read_bytes()
    except FileNotFoundError:
        return None


def _reader(root: str | Path, split: str, remote_cache: bool) -> tuple[str, Path | str, object]:
    """(prefix of the files, the split's path, the read function) for a root, without listing it."""
    if is_remote(root):
        folder = RemoteFolder(str(root), "data.root", remote_cache)
        return folder.url_of(f"{folder.path}/{split}"), f"{folder.url}/{split}", folder.read
    path = local_path(root) / split
    return str(path), path, read_local


def load(location: str, root: str | Path, split: str, remote_cache: bool = False) -> ImageSplit | None:
    """The split the manifest at ``location`` describes, which must be ``<root>/<split>``'s, its
    files read below it; None when there is no manifest."""
    data = _read_bytes(location)
    if data is None:
        return None
    prefix, path, read = _reader(root, split, remote_cache)
    return decode(data, prefix, path, read, location, split_location(root, split))


def _changes(old: ImageSplit, new: ImageSplit) -> str:
    before = dict(zip(old.files.relative_paths(), old.sizes.tolist(), strict=True))
    after = dict(zip(new.files.relative_paths(), new.sizes.tolist(), strict=True))
    added = len(after.keys() - before.keys())
    removed = len(before.keys() - after.keys())
    resized = sum(1 for name in after.keys() & before.keys() if after[name] != before[name])
    classes = ""
    if old.class_names != new.class_names:
        classes = f", classes {len(old.class_names)} -> {len(new.class_names)}"
    return f"{added} added, {removed} removed, {resized} resized{classes}"


def open_split(
    root: str | Path,
    split: str,
    folder: str | None = None,
    check: ManifestCheck = ManifestCheck.listing,
    remote_cache: bool = False,
) -> tuple[ImageSplit, str]:
    """The split of ``<root>/<split>`` and where its manifest is, checked as ``check`` says."""
    location = manifest_path(root, split, folder)
    started = time.perf_counter()
    try:
        stored = load(location, root, split, remote_cache)
    except UserError as exc:
        if check is ManifestCheck.none:
            raise UserError(f"{exc} (data.manifest_check=none trusts the manifest: fix or delete it)") from None
        log.warning("%s; listing the folder again", exc)
        stored = None
    if stored is not None and check is ManifestCheck.none:
        log.info("%s: %d images from the manifest %s (data.manifest_check=none: not listed)",
                 stored.path, stored.num_images, location)  # fmt: skip
        return stored, location
    listed = list_split(root, split, remote_cache)
    seconds = time.perf_counter() - started
    if stored is not None and stored.fingerprint == listed.fingerprint:
        log.info("%s: %d images, listed in %.2f s, as in its manifest %s", listed.path, listed.num_images, seconds,
                 location)  # fmt: skip
        return listed, location
    if stored is not None:
        log.info("%s changed since its manifest was written (%s): re-listed, manifest %s rewritten",
                 listed.path, _changes(stored, listed), location)  # fmt: skip
    else:
        log.info("%s: %d images listed in %.2f s (no image opened); manifest written to %s",
                 listed.path, listed.num_images, seconds, location)  # fmt: skip
    try:
        write(listed, location, split_location(root, split))
    except (OSError, UserError) as exc:  # the manifest saves later listings; this run has its split
        log.warning("could not write the manifest %s (%s); every later open lists the folder", location, exc)
    return listed, location


def pin_path(run_dir: Path, node: int) -> Path:
    return run_dir / "manifests" / f"node{node}.json"


def pin(run_dir: Path, node: int, splits: dict[str, ImageSplit], locations: dict[str, str]) -> None:
    """Pin for the ranks of ``node`` in ``run_dir`` the splits this process opened: a folder's
    manifest is copied into ``run_dir/manifests/`` (what the job trains on, whatever happens to the
    cache), a packed split's location is recorded. Each node writes its own file: a shared run
    folder holds one per node, and a node's local paths never reach another node."""
    folder = run_dir / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, split in splits.items():
        location = locations[name]
        if split.shards:
            entries[name] = {"packed": location, "fingerprint": split.fingerprint}
            continue
        copy = folder / f"{name}.node{node}{SUFFIX}"
        write_bytes(encode(split, str(split.path)), str(copy))
        entries[name] = {"manifest": str(copy), "fingerprint": split.fingerprint, "listed_from": location}
    write_bytes((json.dumps(entries, indent=2) + "\n").encode("utf-8"), str(pin_path(run_dir, node)))


def read_pinned(run_dir: Path | None, node: int, split: str) -> dict[str, str] | None:
    """The entry the launching process on ``node`` pinned for ``split``, or None."""
    if run_dir is None or not pin_path(run_dir, node).is_file():
        return None
    return json.loads(pin_path(run_dir, node).read_text()).get(split)


def load_pinned(pinned: dict[str, str], root: str | Path, split: str, remote_cache: bool = False) -> ImageSplit:
    """The pinned copy of a folder's manifest."""
    prefix, path, read = _reader(root, split, remote_cache)
    data = _read_bytes(pinned["manifest"])
    if data is None:
        raise UserError(f"the pinned manifest {pinned['manifest']} of split {split!r} is gone; start the job again")
    loaded = decode(data, prefix, path, read, pinned["manifest"])
    if loaded.fingerprint != pinned["fingerprint"]:
        raise UserError(f"the pinned manifest {pinned['manifest']} changed after the job started; start it again")
    return loaded
