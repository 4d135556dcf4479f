"""The one folder effv2 caches into: ``$EFFV2_CACHE``, default ``~/.cache/effv2``. It holds the
materialised demo digits and the compiled-graph caches (``hardware.compile_cache``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("EFFV2_CACHE", Path.home() / ".cache" / "effv2"))


def digits_dir() -> Path:
    return cache_dir() / "digits"


def compile_cache_dir(key: str) -> Path:
    return cache_dir() / "compile" / key


def temp_dir(prefix: str) -> Path:
    """A new folder under ``$EFFV2_CACHE/tmp`` (beside the cache, not in a small /tmp): fetched
    or staged data sets live there; the caller removes it."""
    (cache_dir() / "tmp").mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=cache_dir() / "tmp"))
