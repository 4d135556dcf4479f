"""Decode every image of a split once, in parallel processes: the up-front check that
``python -m effv2.data.verify`` reports and ``python -m effv2.data.pack`` packs from."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from effv2.data.bad_images import image_problem
from effv2.data.split import ImageSplit

CHUNK = 64  # images per task: large enough to amortise the hand-off, small enough to stream

_split: ImageSplit | None = None


def _adopt(split: ImageSplit) -> None:
    global _split
    _split = split


def _check(first: int, stop: int, keep_bytes: bool) -> list[tuple[int, np.ndarray | None, str | None]]:
    rows = []
    for index in range(first, stop):
        try:
            encoded = _split.read(_split.files[index])
            problem = image_problem(encoded)
        except OSError as exc:
            encoded, problem = None, f"unreadable ({type(exc).__name__}: {exc})"
        rows.append((index, encoded if keep_bytes and problem is None else None, problem))
    return rows


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def checked_images(
    split: ImageSplit, workers: int, keep_bytes: bool = False
) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """(index, encoded bytes when kept and whole, problem or None) of every image, in index order.
    At most 2 chunks per worker are in flight: memory stays bounded however slow the consumer."""
    workers = max(1, workers)
    chunks = iter(range(0, split.num_images, CHUNK))
    with ProcessPoolExecutor(max_workers=workers, initializer=_adopt, initargs=(split,)) as pool:
        pending: deque = deque()
        for start in chunks:
            pending.append(pool.submit(_check, start, min(start + CHUNK, split.num_images), keep_bytes))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
