"""Images that fail to decode, handled when they are decoded instead of by reading every file up
front (which cost ImageNet ~5 CPU minutes and a full 140 GB read per rank before step 1).

Training, ``data.on_bad_image=skip``: the row of a bad image ``i`` is filled from its
**substitute**, the first image ``i + 1, i + 2, ...`` (in the split's order, wrapping around)
that decodes, with ``i``'s augmentation key and the substitute's label. The choice depends on
the index alone, so every rank, worker count, worker kind and a resume make the same one. The
main process names each bad file once (with the reason) and counts the substitutions of each
epoch over all ranks (the epoch line and metrics.csv's ``bad_images``). A file that cannot be read
(deleted after the listing, a failed remote read) counts as bad. ``error`` stops at the first one,
naming it, as does a bad image none of the MAX_SEARCH after it can replace. Evaluation leaves bad
images out of the scores (counted) or stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from effv2.data.decode import BadImage, decode, image_size
from effv2.data.split import ImageSplit
from effv2.errors import UserError

log = logging.getLogger(__name__)

NOT_REPLACED = (-1, -1)
NO_SUBSTITUTE = -2  # replaced[1] when no substitute was sought (error) or none was found
# candidates tried after a bad image before giving up: a run of that many bad files in a row is a
# broken data set, not a broken file
MAX_SEARCH = 64


def image_problem(encoded: np.ndarray) -> str | None:
    """Why ``encoded`` is not a usable image (header and a full decode, which must agree), or None:
    the checks training makes when it decodes."""
    try:
        height, width = image_size(encoded)
        pixels = decode(encoded)
    except BadImage as exc:
        return str(exc)
    if pixels.shape[:2] != (height, width):
        return f"decoded {pixels.shape[1]}x{pixels.shape[0]} pixels, the header says {width}x{height}"
    return None


def _read(split: ImageSplit, index: int) -> np.ndarray:
    """Image ``index``'s bytes; a file that cannot be read counts as one that does not decode."""
    try:
        return split.read(split.files[index])
    except OSError:
        return np.zeros(0, np.uint8)


class SubstitutingTrain:
    """(encoded, label, index) -> (image, label, replaced = [bad index, substitute] or [-1, -1])
    through ``transform(encoded, key)`` with key [seed, epoch, index] (``epoch`` None: each row
    brings its own, the pass of effv2.step_plan, as a fourth column); a bad image is replaced by
    its substitute (see the module). With ``policy`` error, or when none of the MAX_SEARCH images
    after it decodes, the row is blank and ``replaced`` = [bad index, NO_SUBSTITUTE]: the main
    process stops the run with one line (BadImageLog.report); a worker never raises for data."""

    def __init__(self, transform: Callable[[np.ndarray, np.ndarray], np.ndarray], split: ImageSplit,
                 seed: int, epoch: int | None, policy: str) -> None:  # fmt: skip
        self.transform = transform
        self.split = split
        self.seed, self.epoch = seed, epoch
        self.search = policy == "skip" and split.read is not None  # packed shards: only images that decoded

    def __call__(
        self, encoded: np.ndarray, label: np.ndarray, index: np.ndarray, epoch: np.ndarray | None = None
    ) -> tuple[np.ndarray, ...]:
        bad = int(index)
        key = np.array([self.seed, self.epoch if epoch is None else int(epoch), bad], np.int64)
        try:
            return self.transform(encoded, key), label, np.array(NOT_REPLACED, np.int64)
        except BadImage:
            pass
        split = self.split
        for step in range(1, min(MAX_SEARCH, split.num_images - 1) + 1 if self.search else 1):
            candidate = (bad + step) % split.num_images
            try:
                image = self.transform(_read(split, candidate), key)
            except BadImage:
                continue
            return image, np.array(split.labels[candidate], np.int32), np.array([bad, candidate], np.int64)
        return self.transform.blank(), label, np.array([bad, NO_SUBSTITUTE], np.int64)


class EvalRows:
    """(encoded, label, index) -> (image, label, bad = index or -1): a bad image becomes zeros,
    which the evaluation leaves out of its scores."""

    def __init__(self, transform: Callable[[np.ndarray], np.ndarray]) -> None:
        self.transform = transform

    def __call__(self, encoded: np.ndarray, label: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, ...]:
        try:
            return self.transform(encoded), label, np.array(-1, np.int64)
        except BadImage:
            return np.zeros((3, self.transform.size, self.transform.size), np.float32), label, np.array(index, np.int64)


class BadImageLog:
    """The bad images a process has met: each named once (the reason re-read in this process),
    or with ``data.on_bad_image=error`` the first one stops the run."""

    def __init__(self, split: ImageSplit, policy: str, role: str) -> None:
        self.split, self.policy, self.role = split, policy, role
        self.named: set[int] = set()

    def _reason(self, index: int) -> str:
        if self.split.read is None:
            return "does not decode"
        try:
            encoded = self.split.read(self.split.files[index])
        except OSError as exc:
            return f"unreadable ({type(exc).__name__}: {exc})"
        return image_problem(encoded) or "did not decode"

    def report(self, bad: np.ndarray, substitutes: np.ndarray | None = None) -> int:
        """Note the bad indices of a batch (entries < 0 are images that decoded); their count."""
        rows = np.flatnonzero(np.asarray(bad) >= 0)
        instead = "train on a substitute" if substitutes is not None else "leave it out"
        for row in rows:
            index = int(bad[row])
            if self.policy == "skip" and substitutes is not None and substitutes[row] == NO_SUBSTITUTE:
                where = "the packed shards" if self.split.read is None else f"the {MAX_SEARCH} images after it"
                raise UserError(
                    f"bad training image {self.split.files[index]!r}: {self._reason(index)}, and none of "
                    f"{where} decodes either; check the data set (python -m effv2.data.verify)"
                )
            if self.policy == "error":
                raise UserError(
                    f"bad {self.role} image {self.split.files[index]!r}: {self._reason(index)} "
                    f"(data.on_bad_image=skip would {instead})"
                )
            if index in self.named:
                continue
            self.named.add(index)
            name, reason = self.split.files[index], self._reason(index)
            if substitutes is not None:
                substitute = self.split.files[int(substitutes[row])]
                log.warning("bad image %s: %s; trained on %s instead (data.on_bad_image=skip)",
                            name, reason, substitute)  # fmt: skip
            else:
                log.warning("bad image %s: %s; left out of the evaluation (data.on_bad_image=skip)", name, reason)
        return len(rows)
