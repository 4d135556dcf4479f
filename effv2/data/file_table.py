"""The files of a split as flat arrays instead of one Python object per file.

ImageNet's 1.28M training paths as a tuple of ``Path`` objects take ~400 MB per rank, and every
forked worker process that touches them (reference counts) copies their pages. Here the paths are
one UTF-8 buffer of paths relative to the split's folder plus an int64 offset array: ~55 MiB for
the same 1.28M (with the labels), two objects, shared page for page by forked workers. A path is built when it is asked
for (``table[i]``: ``<prefix>/<relative path>``, the same string the ``Path`` gave).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import numpy as np


class FileTable(Sequence[str]):
    """The paths ``<prefix>/<relative>`` of a split, for ``relative`` in the given order."""

    def __init__(self, prefix: str, relative: Iterable[str]) -> None:
        encoded = [name.encode("utf-8") for name in relative]
        self.prefix = prefix.rstrip("/")
        self.offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(name) for name in encoded], out=self.offsets[1:])
        self.buffer = np.frombuffer(b"".join(encoded), np.uint8)

    @classmethod
    def from_arrays(cls, prefix: str, buffer: np.ndarray, offsets: np.ndarray) -> FileTable:
        """A table over arrays already built (a manifest's): no per-file work."""
        table = cls.__new__(cls)
        table.prefix = prefix.rstrip("/")
        table.buffer = np.asarray(buffer, np.uint8)
        table.offsets = np.asarray(offsets, np.int64)
        if table.offsets.ndim != 1 or len(table.offsets) == 0 or table.offsets[-1] != len(table.buffer):
            raise ValueError("file table offsets do not match its buffer")
        return table

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def relative(self, index: int) -> str:
        """The path of file ``index`` below the split's folder."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"file {index} of a table of {len(self)}")
        index %= len(self)
        return self.buffer[self.offsets[index] : self.offsets[index + 1]].tobytes().decode("utf-8")

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return f"{self.prefix}/{self.relative(int(index))}"

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def relative_paths(self) -> list[str]:
        """Every path below the split's folder, in order (one Python string each: for diffs, not the hot path)."""
        return [self.relative(i) for i in range(len(self))]

    def nbytes(self) -> int:
        """Memory held by the table's arrays."""
        return int(self.buffer.nbytes + self.offsets.nbytes)
