"""A split of a data set as flat arrays: what the manifest holds and every pipeline reads.

One entry per image, in the split's fixed order (class folders sorted, files sorted within each):
the path below the split (a :class:`FileTable`), the label, the size in bytes. The fingerprint
names the listing (paths, labels, sizes, class names) so that a changed folder, a manifest and
the shards packed from it can be told apart without opening an image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from effv2.data.file_table import FileTable
from effv2.storage.files import read_local


def listing_fingerprint(class_names: tuple[str, ...], files: FileTable, labels: np.ndarray, sizes: np.ndarray) -> str:
    """sha256 over the class names and the arrays (one pass over ~60 MB for ImageNet's 1.28M)."""
    digest = hashlib.sha256()
    digest.update("\0".join(class_names).encode("utf-8"))
    for array in (files.buffer, files.offsets, labels.astype(np.int32), sizes.astype(np.int64)):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageSplit:
    path: Path | str  # the split's folder; a URL for a remote root
    class_names: tuple[str, ...]
    # flat arrays: no Python object per file, shared page for page by forked workers
    files: FileTable = field(repr=False, compare=False)
    labels: np.ndarray = field(repr=False, compare=False)  # int32, one per file
    sizes: np.ndarray = field(repr=False, compare=False)  # int64 bytes, one per file
    fingerprint: str = ""
    # the encoded bytes of one of ``files``: local reads, or the remote folder's (cached) reads;
    # None where the images are read from packed shards instead
    read: Callable[[Path | str], np.ndarray] | None = field(default=read_local, repr=False, compare=False)
    # MindRecord shard files (local) holding row i = image i, for a packed split
    shards: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def num_images(self) -> int:
        return len(self.files)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.class_names))

    def nbytes(self) -> int:
        """Memory held by the split's arrays."""
        return int(self.files.nbytes() + self.labels.nbytes + self.sizes.nbytes)
