"""Reading the files of a remote folder: one listing, then each file's bytes on demand, through
the folder's filesystem or a local cache in front of it (fsspec's simplecache), so that the
epochs after the first read local copies."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import fsspec
import numpy as np
from fsspec.core import split_protocol

from effv2.cache import cache_dir
from effv2.storage.location import filesystem, storage_errors

log = logging.getLogger(__name__)


def read_local(path: str | Path) -> np.ndarray:
    return np.fromfile(path, np.uint8)


class RemoteFolder:
    """The files under the remote folder ``url``; ``cache``: keep a local copy of each file read
    (under ``$EFFV2_CACHE/remote/<hash of the url>``)."""

    def __init__(self, url: str, what: str, cache: bool = False) -> None:
        self.url = url.rstrip("/")
        self.what = what
        self.protocol = split_protocol(self.url)[0]
        self.fs, self.path = filesystem(self.url, what)
        self.reader_fs = self.fs
        if cache:
            folder = cache_dir() / "remote" / hashlib.sha256(self.url.encode()).hexdigest()[:16]
            self.reader_fs = fsspec.filesystem("simplecache", fs=self.fs, cache_storage=str(folder))
            log.info("%s=%s: files cached in %s after their first read", what, url, folder)

    def url_of(self, path: str) -> str:
        return f"{self.protocol}://{path}"

    def is_dir(self, relative: str = "") -> bool:
        with storage_errors(self.what, self.url):
            return self.fs.isdir(f"{self.path}/{relative}".rstrip("/"))

    def subfolders(self) -> list[str]:
        with storage_errors(self.what, self.url):
            return sorted(e["name"].rsplit("/", 1)[-1] for e in self.fs.ls(self.path, detail=True)
                          if e["type"] == "directory")  # fmt: skip

    def files(self, relative: str) -> list[tuple[str, int]]:
        """Every file below ``relative`` (one listing: the store reports sizes with the names), as
        (path relative to it, size in bytes), sorted."""
        base = f"{self.path}/{relative}".rstrip("/")
        with storage_errors(self.what, self.url):
            found = self.fs.find(base, detail=True)
        return sorted((p[len(base) + 1 :], int(info.get("size") or 0)) for p, info in found.items())

    def read(self, url: str) -> np.ndarray:
        """The bytes of ``url`` (a file of this folder)."""
        with self.reader_fs.open(split_protocol(url)[1], "rb") as handle:
            return np.frombuffer(handle.read(), np.uint8)
