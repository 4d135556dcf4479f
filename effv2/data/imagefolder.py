"""Locate and validate an ImageFolder split: <root>/<split>/<class>/<image>.

Every file is checked once when the split is opened: its format header must parse and, for
JPEG and PNG, the end-of-image marker must be present (a truncated download lacks it). What
fails is skipped and logged one by one (``data.on_bad_image=skip``, the default: a long run
should not die on one broken file) or stops the run naming the file (``error``).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

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
    files: tuple[Path | str, ...] = field(repr=False)
    labels: tuple[int, ...] = field(repr=False)
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
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)


def _remote_candidates(folder: RemoteFolder, split: str) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, [(url, label)]) of a split under a remote root, from one listing."""
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
            by_class.setdefault(parts[0], []).append(folder.url_of(f"{folder.path}/{split}/{relative}"))
    if not by_class:
        raise UserError(f"{folder.url}/{split} has no class folders with images; expected <class>/<image>")
    names = sorted(by_class)
    return names, [(url, label) for label, name in enumerate(names) for url in by_class[name]]


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
        return _validated(f"{folder.url}/{split}", names, candidates, on_bad_image, folder.read)
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
    candidates: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(class_dirs):
        images = images_in(class_dir)
        if not images:
            raise UserError(f"class folder {str(class_dir)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        candidates += [(image, label) for image in images]
    return _validated(path, [p.name for p in class_dirs], candidates, on_bad_image, read_local)


def _validated(
    path: Path | str,
    class_names: list[str],
    candidates: list[tuple[Path | str, int]],
    on_bad_image: str,
    read: Callable[[Path | str], np.ndarray],
) -> ImageFolderSplit:
    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = list(pool.map(lambda c: image_problem(c[0], read), candidates, chunksize=256))
    files, labels, skipped = [], [], []
    for (image, label), problem in zip(candidates, problems, strict=True):
        if problem is None:
            files.append(image)
            labels.append(label)
            continue
        if on_bad_image == "error":
            raise UserError(f"bad image {str(image)!r}: {problem} (data.on_bad_image=skip would skip it)")
        log.warning("skipping bad image %s: %s", image, problem)
        skipped.append(str(image))
    if skipped:
        log.warning("skipped %d bad images in %s (data.on_bad_image=skip)", len(skipped), path)
    if not files:
        raise UserError(f"{str(path)!r} holds no readable images")
    return ImageFolderSplit(path, tuple(class_names), tuple(files), tuple(labels), tuple(skipped), read)
