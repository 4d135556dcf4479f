"""Locate and validate an ImageFolder split: <root>/<split>/<class>/<image>."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from effv2.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageFolderSplit:
    path: Path
    class_names: tuple[str, ...]
    num_images: int


def scan_split(root: str | Path, split: str) -> ImageFolderSplit:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"data.root={str(root)!r} is not a directory; expected <root>/<split>/<class>/<image>")
    path = root / split
    if not path.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise UserError(f"split {split!r} is missing under data.root={str(root)!r}; found folders: {present}")
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir())
    if not class_dirs:
        raise UserError(f"{str(path)!r} has no class folders; expected {path}/<class>/<image>")
    total = 0
    for class_dir in class_dirs:
        count = sum(1 for f in class_dir.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        if count == 0:
            raise UserError(f"class folder {str(class_dir)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        total += count
    return ImageFolderSplit(path, tuple(p.name for p in class_dirs), total)
