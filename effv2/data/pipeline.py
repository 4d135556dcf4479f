"""Training and evaluation pipelines on mindspore.dataset, shared by every data set.

Order of operations follows the official code, not the seed: geometry (crop / resize / flip)
on the decoded uint8 image first, normalisation last, then HWC -> CHW.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mindspore.dataset as ds
import mindspore.dataset.vision as V
import numpy as np

from effv2.data.digits import materialise_digits
from effv2.data.imagefolder import ImageFolderSplit, scan_split
from effv2.errors import UserError

_INTERPOLATION = {
    "bilinear": V.Inter.BILINEAR,
    "bicubic": V.Inter.BICUBIC,
    "nearest": V.Inter.NEAREST,
    "area": V.Inter.AREA,
}


class _FileSource:
    """Random-access (encoded bytes, label) rows of a split, in a given order of indices. With
    ``record_to`` set, the path of every file is appended to that text file as it is read."""

    def __init__(self, split: ImageFolderSplit, indices: list[int], record_to: Path | None = None) -> None:
        self.files = split.files
        self.labels = split.labels
        self.indices = indices
        self.record_to = record_to

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        index = self.indices[row]
        if self.record_to is not None:
            with self.record_to.open("a") as record:
                record.write(f"{self.files[index]}\n")
        return np.fromfile(self.files[index], np.uint8), np.array(self.labels[index], np.int32)


def _rows(split: ImageFolderSplit, indices: list[int], record_to: Path | None = None) -> ds.Dataset:
    return ds.GeneratorDataset(
        _FileSource(split, indices, record_to), column_names=["image", "label"], shuffle=False, num_parallel_workers=1
    )


@dataclass
class LoadedSplit:
    """An evaluation dataset with the split it reads and its batch size."""

    dataset: ds.Dataset
    split: ImageFolderSplit
    batch_size: int


def resolve_root(data_cfg: Any) -> Path:
    if data_cfg.name == "digits":
        return materialise_digits(Path(data_cfg.root).expanduser() if data_cfg.root else None)
    if not data_cfg.root:
        raise UserError(
            f"data={data_cfg.name} needs data.root=<folder holding {data_cfg.train_split}/ and {data_cfg.val_split}/>"
        )
    return Path(data_cfg.root).expanduser()


def _check_positive(name: str, value: int) -> None:
    if value <= 0:
        raise UserError(f"{name}={value} must be a positive integer")


def _interpolation(data_cfg: Any) -> V.Inter:
    return _INTERPOLATION[data_cfg.interpolation.name]


def _normalise(data_cfg: Any) -> list:
    return [V.Normalize(mean=list(data_cfg.mean), std=list(data_cfg.std)), V.HWC2CHW()]


def train_transforms(data_cfg: Any, image_size: int) -> list:
    inter = _interpolation(data_cfg)
    aug = data_cfg.augment
    ops: list = [V.Decode()]
    if data_cfg.train_crop.name == "random_resized_crop":
        ops.append(
            V.RandomResizedCrop(
                image_size, scale=tuple(data_cfg.crop_scale), ratio=tuple(data_cfg.crop_ratio), interpolation=inter
            )
        )
    else:
        ops.append(V.Resize((image_size, image_size), interpolation=inter))
    if data_cfg.hflip_prob > 0:
        ops.append(V.RandomHorizontalFlip(data_cfg.hflip_prob))
    if aug.randaug_layers > 0 and aug.auto_augment.name != "none":
        raise UserError("data.augment: choose RandAugment (randaug_layers > 0) or auto_augment, not both")
    if aug.randaug_layers > 0:
        if not 0 <= aug.randaug_magnitude <= 30:
            raise UserError(f"data.augment.randaug_magnitude={aug.randaug_magnitude} must be in [0, 30]")
        ops.append(V.RandAugment(num_ops=aug.randaug_layers, magnitude=aug.randaug_magnitude, interpolation=inter))
    if aug.auto_augment.name != "none":
        ops.append(V.AutoAugment(policy=V.AutoAugmentPolicy(aug.auto_augment.value), interpolation=inter))
    if aug.cutout_ratio > 0:
        ops.append(V.CutOut(max(1, int(round(image_size * aug.cutout_ratio)))))
    ops += _normalise(data_cfg)
    if aug.random_erasing_prob > 0:
        ops.append(V.RandomErasing(prob=aug.random_erasing_prob))
    return ops


def eval_transforms(data_cfg: Any, image_size: int) -> list:
    """The one evaluation preprocessing, shared by eval, export checks and inference."""
    inter = _interpolation(data_cfg)
    ops: list = [V.Decode()]
    if data_cfg.eval_crop.name == "center":
        if not 0.0 < data_cfg.crop_pct <= 1.0:
            raise UserError(f"data.crop_pct={data_cfg.crop_pct} must be in (0, 1]")
        ops += [V.Resize(math.floor(image_size / data_cfg.crop_pct), interpolation=inter), V.CenterCrop(image_size)]
    else:
        ops.append(V.Resize((image_size, image_size), interpolation=inter))
    return ops + _normalise(data_cfg)


def _check_classes(data_cfg: Any, split: ImageFolderSplit) -> None:
    found = len(split.class_names)
    if found != data_cfg.num_classes:
        raise UserError(f"data.num_classes={data_cfg.num_classes} but {str(split.path)!r} has {found} class folders")


def open_train_split(data_cfg: Any) -> ImageFolderSplit:
    """Scan and validate the training split once; epochs are then built from it."""
    _check_positive("data.batch_size", data_cfg.batch_size)
    split = scan_split(resolve_root(data_cfg), data_cfg.train_split, data_cfg.on_bad_image.name)
    _check_classes(data_cfg, split)
    return split


def train_epoch(
    data_cfg: Any,
    split: ImageFolderSplit,
    indices: np.ndarray,
    workers: int,
    image_size: int | None = None,
    record_to: Path | None = None,
) -> ds.Dataset:
    """Batches of (image, label) over ``indices`` in that order, with the training transforms;
    ``record_to``: a text file that receives the path of every image as it is read."""
    image_size = data_cfg.train_size if image_size is None else image_size
    _check_positive("data.train_size", image_size)
    dataset = _rows(split, [int(i) for i in indices], record_to)
    dataset = dataset.map(train_transforms(data_cfg, image_size), input_columns="image", num_parallel_workers=workers)
    return dataset.batch(data_cfg.batch_size, drop_remainder=True)


def build_eval_split(
    data_cfg: Any, workers: int, image_size: int | None = None, shard: tuple[int, int] = (0, 1)
) -> LoadedSplit:
    """Every validation image, in a fixed order; the last batch may be partial. With
    ``shard=(rank, world_size)`` this rank gets images rank, rank + world_size, ...: over all
    ranks each image is evaluated exactly once."""
    image_size = data_cfg.eval_size if image_size is None else image_size
    _check_positive("data.eval_size", image_size)
    _check_positive("data.eval_batch_size", data_cfg.eval_batch_size)
    split = scan_split(resolve_root(data_cfg), data_cfg.val_split, data_cfg.on_bad_image.name)
    _check_classes(data_cfg, split)
    rank, world_size = shard
    dataset = _rows(split, list(range(rank, split.num_images, world_size)))
    dataset = dataset.map(eval_transforms(data_cfg, image_size), input_columns="image", num_parallel_workers=workers)
    dataset = dataset.batch(data_cfg.eval_batch_size, drop_remainder=False)
    return LoadedSplit(dataset, split, data_cfg.eval_batch_size)
