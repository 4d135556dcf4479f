"""Locate and validate an ImageFolder split: <root>/<split>/<class>/<image>.

Every file is checked once when the split is opened: its format header must parse and, for
JPEG and PNG, the end-of-image marker must be present (a truncated download lacks it). What
fails is skipped and logged one by one (``data.on_bad_image=skip``, the default: a long run
should not die on one broken file) or stops the run naming the file (``error``).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from effv2.data.file_table import FileTable
from effv2.errors import UserError
from effv2.storage.files import RemoteFolder, read_local
from effv2.storage.location import is_remote, local_path

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
BAD_IMAGE_POLICIES = ("skip", "error")
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xae\x42\x60\x82"}


@dataclass(frozen=True)
class ImageFolderSplit:
    path: Path | str  # a URL for a remote data.root
    class_names: tuple[str, ...]
    # flat arrays (effv2.data.file_table): no Python object per file, shared by forked workers
    files: FileTable = field(repr=False, compare=False)
    labels: np.ndarray = field(repr=False, compare=False)  # int32, one per file
    skipped: tuple[str, ...] = field(default=(), repr=False)
    # the encoded bytes of one of ``files``: local reads, or the remote folder's (cached) reads
    read: Callable[[Path | str], np.ndarray] = field(default=read_local, repr=False, compare=False)

    @property
    def num_images(self) -> int:
        return len(self.files)


def image_problem(path: Path | str, read: Callable[[Path | str], np.ndarray] = read_local) -> str | None:
    """Why ``path`` cannot be a training image, or None when it looks whole."""
    try:
        data = read(path).tobytes()
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format
            image.verify()
    except Exception as exc:  # PIL raises many types for broken files
        return f"not a readable image ({type(exc).__name__}: {exc})"
    marker = _END_MARKERS.get(kind)
    if marker and marker not in data[-64:]:
        return f"truncated {kind} (no end-of-image marker)"
    return None


def images_in(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted."""
    return [folder / name for name in _image_names(folder)]


def _image_names(folder: Path) -> list[str]:
    """The names of the image files directly inside ``folder``, sorted (names only: no Path object
    per file, and no stat where the file system reports entry types)."""
    with os.scandir(folder) as entries:
        return sorted(
            e.name for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        )


def _remote_candidates(folder: RemoteFolder, split: str) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, [(path relative to the split, label)]) of a split under a remote root, from one listing."""
    if not folder.is_dir():
        raise UserError(f"data.root={folder.url!r} is not a folder; expected <root>/<split>/<class>/<image>")
    if not folder.is_dir(split):
        raise UserError(
            f"split {split!r} is missing under data.root={folder.url!r}; found folders: {folder.subfolders()}"
        )
    by_class: dict[str, list[str]] = {}
    for relative in folder.files(split):
        parts = relative.split("/")
        if len(parts) == 2 and Path(parts[1]).suffix.lower() in IMAGE_EXTENSIONS:
            by_class.setdefault(parts[0], []).append(relative)
    if not by_class:
        raise UserError(f"{folder.url}/{split} has no class folders with images; expected <class>/<image>")
    names = sorted(by_class)
    return names, [(relative, label) for label, name in enumerate(names) for relative in by_class[name]]


def scan_split(
    root: str | Path, split: str, on_bad_image: str = "skip", remote_cache: bool = False
) -> ImageFolderSplit:
    """The images of ``<root>/<split>``, validated; a remote ``root`` (URL) is listed once and read
    through fsspec, with ``remote_cache`` through a local cache."""
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise UserError(f"data.on_bad_image={on_bad_image!r} is not one of {', '.join(BAD_IMAGE_POLICIES)}")
    if is_remote(root):
        folder = RemoteFolder(str(root), "data.root", remote_cache)
        names, candidates = _remote_candidates(folder, split)
        prefix = folder.url_of(f"{folder.path}/{split}")
        return _validated(f"{folder.url}/{split}", prefix, names, candidates, on_bad_image, folder.read)
    root = local_path(root)
    if not root.is_dir():
        raise UserError(f"data.root={str(root)!r} is not a directory; expected <root>/<split>/<class>/<image>")
    path = root / split
    if not path.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise UserError(f"split {split!r} is missing under data.root={str(root)!r}; found folders: {present}")
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir())
    if not class_dirs:
        raise UserError(f"{str(path)!r} has no class folders; expected {path}/<class>/<image>")
    candidates: list[tuple[str, int]] = []
    for label, class_dir in enumerate(class_dirs):
        names = _image_names(class_dir)
        if not names:
            raise UserError(f"class folder {str(class_dir)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        candidates += [(f"{class_dir.name}/{name}", label) for name in names]
    return _validated(path, str(path), [p.name for p in class_dirs], candidates, on_bad_image, read_local)


def _validated(
    path: Path | str,
    prefix: str,
    class_names: list[str],
    candidates: list[tuple[str, int]],
    on_bad_image: str,
    read: Callable[[Path | str], np.ndarray],
) -> ImageFolderSplit:
    """The split of the ``candidates`` (paths relative to ``prefix``) that pass image_problem."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = list(pool.map(lambda c: image_problem(f"{prefix}/{c[0]}", read), candidates, chunksize=256))
    relative, labels, skipped = [], [], []
    for (name, label), problem in zip(candidates, problems, strict=True):
        if problem is None:
            relative.append(name)
            labels.append(label)
            continue
        image = f"{prefix}/{name}"
        if on_bad_image == "error":
            raise UserError(f"bad image {image!r}: {problem} (data.on_bad_image=skip would skip it)")
        log.warning("skipping bad image %s: %s", image, problem)
        skipped.append(image)
    if skipped:
        log.warning("skipped %d bad images in %s (data.on_bad_image=skip)", len(skipped), path)
    if not relative:
        raise UserError(f"{str(path)!r} holds no readable images")
    files = FileTable(prefix, relative)
    return ImageFolderSplit(path, tuple(class_names), files, np.asarray(labels, np.int32), tuple(skipped), read)
