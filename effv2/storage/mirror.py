"""A run folder mirrored to object storage while it is written (``output.remote=<url>``).

A background thread compares the folder with what it has sent every ``interval`` seconds and
uploads what is new or changed, removes what was deleted locally (a superseded recovery
checkpoint, a dropped top-k file), and does a last pass when the run ends, however it ends.
Checkpoints go to a temporary key and are then moved onto their name, so a reader never sees
half a checkpoint. A failed upload is retried ``retries`` times and then reported in one line;
training goes on and the local copy stays.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from effv2.storage.location import call_with_retries, describe, filesystem, join

log = logging.getLogger(__name__)
_REPORTED_FAILURES = 3


def _is_temporary(path: Path) -> bool:
    """The local temporaries of atomic writes (checkpoints, curves, JSON): never uploaded."""
    return path.name.endswith(".tmp") or ".tmp." in path.name


class RunMirror:
    def __init__(self, run_dir: Path, remote: str, interval: float = 30.0, retries: int = 3) -> None:
        self.run_dir = run_dir
        self.remote = remote.rstrip("/")
        self.fs, self.root = filesystem(self.remote, "output.remote")
        self.interval = interval
        self.retries = retries
        self.sent: dict[str, tuple[int, int]] = {}  # relative path -> (mtime_ns, size) tried
        self.uploaded = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="effv2-mirror", daemon=True)

    def __enter__(self) -> RunMirror:
        log.info("mirroring the run folder to %s every %.0f s", self.remote, self.interval)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sync()
        failed = f", {self.failed} failed (kept locally)" if self.failed else ""
        log.info("run folder %s mirrored to %s (%d uploads%s)", self.run_dir, self.remote, self.uploaded, failed)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sync()

    def _local_files(self) -> dict[str, Path]:
        files = {
            path.relative_to(self.run_dir).as_posix(): path
            for path in self.run_dir.rglob("*")
            if path.is_file() and not _is_temporary(path)
        }
        # checkpoints last: a pass that is cut short leaves the metrics of an epoch ahead of its
        # checkpoint rather than a checkpoint without its metrics
        return dict(sorted(files.items(), key=lambda item: (item[0].endswith(".ckpt"), item[0])))

    def sync(self) -> None:
        """One pass: upload what changed since the last pass, delete what disappeared."""
        with self._lock:
            local = self._local_files()
            for relative, path in local.items():
                try:
                    stat = path.stat()
                except FileNotFoundError:  # removed since the listing
                    continue
                version = (stat.st_mtime_ns, stat.st_size)
                if self.sent.get(relative) != version:
                    self.sent[relative] = version
                    self._transfer(relative, lambda p=path, r=relative: self._upload(p, r))
            for relative in [r for r in self.sent if r not in local]:
                del self.sent[relative]
                self._transfer(relative, lambda r=relative: self._delete(r), deleting=True)

    def _upload(self, path: Path, relative: str) -> None:
        key = join(self.root, relative)
        if relative.endswith(".ckpt"):
            partial = f"{key}.partial"
            self.fs.put_file(str(path), partial)
            self.fs.mv(partial, key)
        else:
            self.fs.put_file(str(path), key)

    def _delete(self, relative: str) -> None:
        try:
            self.fs.rm_file(join(self.root, relative))
        except FileNotFoundError:
            pass  # never uploaded, or already gone

    def _transfer(self, relative: str, action: Callable[[], object], deleting: bool = False) -> None:
        def retrying(attempt: int, exc: BaseException) -> None:
            log.debug("output.remote: try %d for %s failed: %s", attempt, relative, describe(exc))

        try:
            call_with_retries(action, self.retries, retrying)
            self.uploaded += not deleting
        except Exception as exc:
            self.failed += 1
            if self.failed <= _REPORTED_FAILURES:
                verb = "removing" if deleting else "uploading"
                more = "" if self.failed < _REPORTED_FAILURES else "; further failures are only counted"
                log.warning(
                    "output.remote: %s %s at %s failed after %d tries (%s); the local copy remains%s",
                    verb, relative, join(self.remote, relative), self.retries + 1, describe(exc), more,
                )  # fmt: skip
