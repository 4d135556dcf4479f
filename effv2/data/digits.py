"""The embedded demo dataset: scikit-learn's 1,797 real handwritten digits as an ImageFolder.

The 8x8 images (16 grey levels) are written once as PNG files into ``<cache>/digits/{train,val}/<digit>/``
with a fixed, stratified 80/20 split, so the demo goes through exactly the ImageFolder pipeline
that ImageNet uses.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from effv2.cache import digits_dir

VAL_FRACTION = 0.2
SPLIT_SEED = 0
_COMPLETE_MARKER = ".complete"


def materialise_digits(root: Path | None = None) -> Path:
    """Write the digits ImageFolder under ``root`` (default: the cache) unless already there."""
    root = Path(root) if root is not None else digits_dir()
    if (root / _COMPLETE_MARKER).exists():
        return root
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(SPLIT_SEED)
    root.parent.mkdir(parents=True, exist_ok=True)
    # build beside the target and rename, so concurrent ranks or a crash never see half a dataset
    staging = Path(tempfile.mkdtemp(prefix=".digits-", dir=root.parent))
    for label in range(10):
        indices = np.flatnonzero(digits.target == label)
        rng.shuffle(indices)
        n_val = int(round(len(indices) * VAL_FRACTION))
        for split, chosen in (("val", indices[:n_val]), ("train", indices[n_val:])):
            folder = staging / split / str(label)
            folder.mkdir(parents=True)
            for index in chosen:
                pixels = np.round(digits.images[index] * (255.0 / 16.0)).astype(np.uint8)
                Image.fromarray(pixels, mode="L").convert("RGB").save(folder / f"{index:04d}.png")
    (staging / _COMPLETE_MARKER).touch()
    try:
        staging.rename(root)
    except OSError:
        if not (root / _COMPLETE_MARKER).exists():
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return root
