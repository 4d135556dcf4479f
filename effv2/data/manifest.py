"""A split's listing written once and read by every rank, worker and later run.

The manifest of ``<root>/<split>`` is one ``.npz`` file (no pickles): the paths below the split
as one UTF-8 buffer with offsets, the labels, the sizes, the class names and the listing's
fingerprint. It lives in ``$EFFV2_CACHE/manifests/<hash of the split's location>/`` or in the
folder ``data.manifest`` names (local or remote), as ``<split>.manifest.npz``.

The process that opens a split first (the launching ``run.py`` on each node, or the single
process) checks the manifest against the folder as ``data.manifest_check`` says: ``listing``
lists the folder again (names and sizes, no image opened) and rewrites the manifest when the
fingerprint differs, saying what changed; ``none`` trusts the manifest as it is (a frozen data
set on storage where listing is slow). The ranks it starts read the manifest it pinned
(:func:`pin` / :func:`read_pinned`) and list nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
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


def encode(split: ImageSplit) -> bytes:
    meta = {
        "version": FORMAT_VERSION,
        "source": str(split.path),
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


def decode(data: bytes, prefix: str, path: Path | str, read, where: str) -> ImageSplit:
    """The split a manifest's bytes describe, its files below ``prefix``."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
            files = FileTable.from_arrays(prefix, arrays["paths"], arrays["offsets"])
            labels, sizes = arrays["labels"].astype(np.int32), arrays["sizes"].astype(np.int64)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{where} is not an effv2 manifest ({type(exc).__name__}: {exc})") from None
    if meta.get("version") != FORMAT_VERSION:
        raise UserError(f"{where} is a manifest of format {meta.get('version')}; this effv2 reads {FORMAT_VERSION}")
    names = tuple(meta["class_names"])
    fingerprint = listing_fingerprint(names, files, labels, sizes)
    if fingerprint != meta["fingerprint"] or not (len(labels) == len(sizes) == len(files)):
        raise UserError(f"{where} is damaged: its arrays do not match the fingerprint it records")
    return ImageSplit(path, names, files, labels, sizes, fingerprint, read)


def write(split: ImageSplit, location: str) -> None:
    """Write atomically: a reader never sees half a manifest (object stores put whole objects)."""
    data = encode(split)
    if is_remote(location):
        fs, path = filesystem(location, "data.manifest")
        with storage_errors("data.manifest", location), fs.open(path, "wb") as handle:
            handle.write(data)
        return
    target = Path(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(target)


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
    """The split the manifest at ``location`` describes, its files read below ``<root>/<split>``."""
    data = _read_bytes(location)
    if data is None:
        return None
    prefix, path, read = _reader(root, split, remote_cache)
    return decode(data, prefix, path, read, location)


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
    write(listed, location)
    return listed, location


PINNED = "data_manifests.json"


def pin(run_dir: Path, manifests: dict[str, tuple[str, str]]) -> None:
    """Record for the ranks of ``run_dir`` which manifest (location, fingerprint) each split uses."""
    entries = {split: {"manifest": location, "fingerprint": fp} for split, (location, fp) in manifests.items()}
    (run_dir / PINNED).write_text(json.dumps(entries, indent=2) + "\n")


def read_pinned(run_dir: Path | None, split: str) -> tuple[str, str] | None:
    """(location, fingerprint) the launching process pinned for ``split``, or None."""
    if run_dir is None or not (run_dir / PINNED).is_file():
        return None
    entry = json.loads((run_dir / PINNED).read_text()).get(split)
    return None if entry is None else (entry["manifest"], entry["fingerprint"])


def load_pinned(pinned: tuple[str, str], root: str | Path, split: str, remote_cache: bool = False) -> ImageSplit:
    """The pinned manifest, which must still hold the listing the launching process checked."""
    location, fingerprint = pinned
    loaded = load(location, root, split, remote_cache)
    if loaded is None or loaded.fingerprint != fingerprint:
        raise UserError(
            f"the manifest {location} of split {split!r} changed or vanished after the job started; start it again"
        )
    return loaded
