"""What a user path is (local or a remote URL) and the filesystem that serves it.

A URL is remote when fsspec names a protocol other than the local one (``s3://``, ``gs://``,
...); ``file://`` URLs and plain paths are local. Credentials never appear in the config: the
filesystem is built from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ...) and
fsspec's configuration (``FSSPEC_S3_*`` variables, ``~/.config/fsspec``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import fsspec
from fsspec.core import split_protocol

from effv2.errors import UserError

REMOTE_EXTRA = "remote"
_LOCAL_PROTOCOLS = (None, "file", "local")
T = TypeVar("T")


def is_remote(path: str | Path | None) -> bool:
    if path is None or isinstance(path, Path):
        return False
    return split_protocol(str(path))[0] not in _LOCAL_PROTOCOLS


def local_path(path: str | Path) -> Path:
    """A local path or ``file://`` URL as a Path."""
    if isinstance(path, Path):
        return path.expanduser()
    protocol, rest = split_protocol(path)
    if protocol not in _LOCAL_PROTOCOLS:
        raise ValueError(f"{path!r} is a remote URL")
    return Path(rest).expanduser()


def filesystem(url: str, what: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) of a remote ``url``; ``what`` names the setting in errors."""
    protocol = split_protocol(url)[0]
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else f"no module {exc.name}"
        raise UserError(
            f"{what}={url!r}: {protocol}:// needs an fsspec backend that is not installed ({reason}); "
            f"s3:// comes with pip install 'effv2[{REMOTE_EXTRA}]'"
        ) from None
    except ValueError as exc:
        raise UserError(f"{what}={url!r}: {protocol}:// is not a protocol fsspec knows ({exc})") from None


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(part.strip("/") for part in parts)])


def describe(exc: BaseException) -> str:
    """One line for a storage failure, without the request details botocore adds."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text}"


@contextmanager
def storage_errors(what: str, url: str) -> Iterator[None]:
    """Turn a storage failure (missing object, no credentials, refused request) into one line."""
    try:
        yield
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"{what}={url!r} does not exist") from None
    except Exception as exc:  # botocore, aiohttp and fsspec raise many types
        raise UserError(f"{what}={url!r}: {describe(exc)}") from None


def call_with_retries(action: Callable[[], T], retries: int, on_retry: Callable[[int, BaseException], Any]) -> T:
    """``action()``, tried ``retries`` more times after a failure; the last failure is raised."""
    import time

    for attempt in range(retries + 1):
        try:
            return action()
        except Exception as exc:
            if attempt == retries:
                raise
            on_retry(attempt + 1, exc)
            time.sleep(min(2.0**attempt, 10.0) * 0.5)
    raise AssertionError("unreachable")
