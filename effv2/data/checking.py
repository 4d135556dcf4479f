"""Decode every image of a split once, in parallel processes: the up-front check that
``python -m effv2.data.verify`` reports and ``python -m effv2.data.pack`` packs from."""

from __future__ import annotations

import os
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
    """(index, encoded bytes when kept and whole, problem or None) of every image, in index order."""
    starts = range(0, split.num_images, CHUNK)
    stops = [min(start + CHUNK, split.num_images) for start in starts]
    with ProcessPoolExecutor(max_workers=max(1, workers), initializer=_adopt, initargs=(split,)) as pool:
        for rows in pool.map(_check, starts, stops, [keep_bytes] * len(stops)):
            yield from rows
