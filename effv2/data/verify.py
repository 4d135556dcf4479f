"""Decode every image of a data set up front and report each one that fails:
``python -m effv2.data.verify <root> [--split train --split val] [--workers N]``.

Training does not need this (a bad image is handled when it is decoded); it is for those who
want to know before a long run, or to clean a folder. It lists the split (through its manifest,
as training does), decodes every image once in ``--workers`` processes, prints one line per bad
file and a summary per split, and exits 1 when any image is bad.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from effv2.data import manifest
from effv2.data.checking import checked_images, default_workers
from effv2.errors import UserError


def verify(root: str, splits: list[str], workers: int) -> int:
    """The number of bad images over ``splits``; each is printed as it is found."""
    bad = 0
    for split_name in splits:
        split = manifest.open_split(root, split_name)[0]
        started, found = time.perf_counter(), 0
        for index, _, problem in checked_images(split, workers):
            if problem is not None:
                found += 1
                print(f"bad {split.files[index]}: {problem}", flush=True)
        seconds = time.perf_counter() - started
        print(f"{split.path}: {split.num_images} images decoded in {seconds:.1f} s "
              f"({workers} processes), {found} bad", flush=True)  # fmt: skip
        bad += found
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m effv2.data.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the ImageFolder root (local or s3://...), holding <split>/<class>/<image>")
    parser.add_argument("--split", action="append", help="a split to check (repeat it); default: train and val")
    parser.add_argument("--workers", type=int, default=default_workers(), help="decoding processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        bad = verify(args.root, args.split or ["train", "val"], args.workers)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
