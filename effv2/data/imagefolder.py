"""List an ImageFolder split, <root>/<split>/<class>/<image>, without opening an image.

A split is its class folders (sorted: the label is the position), the image files inside each
(sorted by name, by extension) and their sizes: one ``os.scandir`` per class folder plus a stat
per file, or one listing of a remote prefix. Whether an image decodes is found out when it is
decoded (effv2.data.bad_images), or up front by ``python -m effv2.data.verify``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from effv2.data.file_table import FileTable
from effv2.data.split import ImageSplit, listing_fingerprint
from effv2.errors import UserError
from effv2.storage.files import RemoteFolder, read_local
from effv2.storage.location import is_remote, local_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def images_in(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted."""
    with os.scandir(folder) as entries:
        return [folder / name for name in sorted(e.name for e in entries if e.is_file() and _is_image_name(e.name))]


def _sized_images(folder: Path) -> list[tuple[str, int]]:
    """(name, size) of the image files directly inside ``folder``, sorted by name."""
    with os.scandir(folder) as entries:
        return sorted((e.name, e.stat().st_size) for e in entries if _is_image_name(e.name) and e.is_file())


def _split_from(path: Path | str, prefix: str, class_names: list[str], per_class: list[list[tuple[str, int]]],
                read) -> ImageSplit:  # fmt: skip
    relative = [f"{name}/{file}" for name, files in zip(class_names, per_class, strict=True) for file, _ in files]
    files = FileTable(prefix, relative)
    labels = np.repeat(np.arange(len(class_names), dtype=np.int32), [len(f) for f in per_class])
    sizes = np.fromiter((size for files_ in per_class for _, size in files_), np.int64, count=len(relative))
    names = tuple(class_names)
    return ImageSplit(path, names, files, labels, sizes, listing_fingerprint(names, files, labels, sizes), read)


def _remote_split(root: str, split: str, remote_cache: bool) -> ImageSplit:
    folder = RemoteFolder(root, "data.root", remote_cache)
    if not folder.is_dir():
        raise UserError(f"data.root={folder.url!r} is not a folder; expected <root>/<split>/<class>/<image>")
    if not folder.is_dir(split):
        raise UserError(
            f"split {split!r} is missing under data.root={folder.url!r}; found folders: {folder.subfolders()}"
        )
    by_class: dict[str, list[tuple[str, int]]] = {}
    for relative, size in folder.files(split):
        parts = relative.split("/")
        if len(parts) == 2 and _is_image_name(parts[1]):
            by_class.setdefault(parts[0], []).append((parts[1], size))
    if not by_class:
        raise UserError(f"{folder.url}/{split} has no class folders with images; expected <class>/<image>")
    names = sorted(by_class)
    prefix = folder.url_of(f"{folder.path}/{split}")
    return _split_from(f"{folder.url}/{split}", prefix, names, [by_class[n] for n in names], folder.read)


def list_split(root: str | Path, split: str, remote_cache: bool = False) -> ImageSplit:
    """The images of ``<root>/<split>`` from a listing; a remote ``root`` (URL) is listed once and
    read through fsspec, with ``remote_cache`` through a local cache."""
    if is_remote(root):
        return _remote_split(str(root), split, remote_cache)
    root = local_path(root)
    if not root.is_dir():
        raise UserError(f"data.root={str(root)!r} is not a directory; expected <root>/<split>/<class>/<image>")
    path = root / split
    if not path.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise UserError(f"split {split!r} is missing under data.root={str(root)!r}; found folders: {present}")
    with os.scandir(path) as entries:
        class_names = sorted(e.name for e in entries if e.is_dir())
    if not class_names:
        raise UserError(f"{str(path)!r} has no class folders; expected {path}/<class>/<image>")
    per_class = []
    for name in class_names:
        files = _sized_images(path / name)
        if not files:
            raise UserError(f"class folder {str(path / name)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        per_class.append(files)
    return _split_from(path, str(path), class_names, per_class, read_local)
