"""Local copies of remote inputs: a checkpoint, a run folder to resume, a converter source, an
exported model with its sidecars, images to predict. MindSpore, onnxruntime and the converters
read local files only, so a remote input is downloaded once per process into a temporary folder
that is removed when the process ends; local paths are returned as they are."""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from enum import Enum
from pathlib import Path

from effv2.errors import UserError
from effv2.storage.location import filesystem, is_remote, local_path, storage_errors

log = logging.getLogger(__name__)
_downloads: Path | None = None


class Kind(Enum):
    FILE = "a file"
    FOLDER = "a folder"
    # a file and its siblings that share its name as a prefix: a TensorFlow checkpoint prefix
    # (model.index, model.data-*), an exported model and its sidecars (model.onnx, model.*.json)
    FILE_SET = "a file or a file prefix"
    ANY = "a file or a folder"


def _download_root() -> Path:
    global _downloads
    if _downloads is None:
        _downloads = Path(tempfile.mkdtemp(prefix="effv2-remote-"))
        atexit.register(shutil.rmtree, _downloads, True)
    return _downloads


def fetch(url: str, what: str, kind: Kind = Kind.ANY) -> Path:
    """The local path of ``url``: itself when local, else a downloaded copy (``what`` names the
    setting in errors, e.g. ``ckpt``)."""
    if not is_remote(url):
        return local_path(url)
    fs, path = filesystem(url, what)
    target = Path(tempfile.mkdtemp(dir=_download_root()))
    name = path.rstrip("/").rsplit("/", 1)[-1]
    with storage_errors(what, url):
        if kind is Kind.FILE_SET:
            # a file with its sidecars (model.onnx: model.*), or a prefix (model: model.*)
            path = path.rstrip("/")
            base = path.rsplit(".", 1)[0] if fs.isfile(path) and "." in name else path
            members = [p for p in fs.glob(base + "*") if p == path or p.startswith(base + ".")]
            members = [p for p in members if fs.isfile(p)]
            if not members:
                raise FileNotFoundError(url)
            for member in members:
                fs.get_file(member, str(target / member.rsplit("/", 1)[-1]))
        elif fs.isfile(path) and kind is not Kind.FOLDER:
            fs.get_file(path, str(target / name))
        elif fs.isdir(path) and kind is not Kind.FILE:
            fs.get(path.rstrip("/") + "/", str(target / name), recursive=True)
        elif fs.exists(path):
            raise UserError(f"{what}={url!r} is not {kind.value}")
        else:
            raise FileNotFoundError(url)
    log.info("%s=%s: downloaded to %s", what, url, target / name)
    return target / name


def publish(local: Path, url: str, what: str) -> None:
    """Upload ``local`` to ``url`` (an output the user named by URL, e.g. ``convert.output``)."""
    fs, path = filesystem(url, what)
    with storage_errors(what, url):
        fs.put_file(str(local), path)
    log.info("%s: uploaded %s to %s", what, local.name, url)
