"""Class names for models whose checkpoint carries none: ImageNet-1k names for 1,000-class heads,
WordNet ids for the 21,843-class ImageNet-21k heads.

Both lists ship in ``labels/`` and come from google/automl (``efficientnetv2/g3doc/
imagenet1k_labels.txt`` and ``imagenet21k_labels.txt``, Apache-2.0, commit 6a54c87): they are the
index order of the official checkpoints that ``task=convert`` reads. Two edits: the stray ``'}``
at the end of the 1k file's last line is removed, and only the WordNet ids of the 21k file are
kept. The official 21k list has 21,842 entries for the 21,843 outputs (index i is entry i, as in
automl's ``tfhub.ipynb``); the last output has no entry and is named by its index.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

IMAGENET_1K_CLASSES = 1000
IMAGENET_21K_CLASSES = 21843


def _lines(name: str) -> list[str]:
    text = resources.files("effv2.deploy").joinpath("labels", name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line]


@cache
def imagenet1k() -> tuple[tuple[str, str], ...]:
    """(WordNet id, names) of the 1,000 ImageNet-1k classes, in the official index order."""
    return tuple(tuple(line.split("\t", 1)) for line in _lines("imagenet1k.tsv"))  # type: ignore[misc]


@cache
def imagenet21k_wnids() -> tuple[str, ...]:
    return tuple(_lines("imagenet21k_wnids.txt"))


def default_class_names(num_classes: int) -> list[str]:
    """The names to print for a head of ``num_classes`` outputs when none are given: ImageNet-1k
    names, ImageNet-21k WordNet ids, else none (predictions then show indices)."""
    if num_classes == IMAGENET_1K_CLASSES:
        return [names for _, names in imagenet1k()]
    if num_classes == IMAGENET_21K_CLASSES:
        wnids = list(imagenet21k_wnids())
        return wnids + [str(index) for index in range(len(wnids), num_classes)]
    return []
