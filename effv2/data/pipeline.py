"""Training and evaluation pipelines on mindspore.dataset, shared by every data set.

The sources read encoded files in a given order of image indices; the per-image work (decode,
crop, resize, augmentation, normalisation: ``effv2.data.transforms``) runs in the dataset's
parallel workers, keyed by image so that the result does not depend on which worker ran it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mindspore.dataset as ds
import numpy as np

from effv2.config.schema import DataConfig, WorkerKind
from effv2.data.digits import materialise_digits
from effv2.data.imagefolder import ImageFolderSplit, scan_split
from effv2.data.transforms import EvalTransform, TrainTransform
from effv2.errors import UserError
from effv2.storage.location import is_remote, local_path


class _FileSource:
    """Random-access (encoded bytes, label[, augmentation key]) rows of a split, in a given order
    of indices. ``key_prefix`` = (seed, epoch) adds the key column [seed, epoch, image index];
    with ``record_to`` set, the path of every file is appended to that text file as it is read."""

    def __init__(
        self,
        split: ImageFolderSplit,
        indices: list[int],
        key_prefix: tuple[int, int] | None = None,
        record_to: Path | None = None,
    ) -> None:
        self.files = split.files
        self.read = split.read
        self.labels = split.labels
        self.indices = indices
        self.key_prefix = key_prefix
        self.record_to = record_to

    @property
    def columns(self) -> list[str]:
        return ["image", "label"] if self.key_prefix is None else ["image", "label", "key"]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, row: int) -> tuple[np.ndarray, ...]:
        index = self.indices[row]
        if self.record_to is not None:
            with self.record_to.open("a") as record:
                record.write(f"{self.files[index]}\n")
        encoded, label = self.read(self.files[index]), np.array(self.labels[index], np.int32)
        if self.key_prefix is None:
            return encoded, label
        return encoded, label, np.array([*self.key_prefix, index], np.int64)


def _rows(source: _FileSource) -> ds.Dataset:
    return ds.GeneratorDataset(source, column_names=source.columns, shuffle=False, num_parallel_workers=1)


def resolve_worker_kind(kind: WorkerKind | str) -> str:
    """``auto`` -> threads: with the compiled kernels and simplejpeg an image holds the GIL for
    a small share of its time, and threads then deliver as many images per second as processes
    without copying every batch through shared memory (benchmarks/bench_data.py; README)."""
    try:
        kind = WorkerKind(kind)
    except ValueError:
        accepted = ", ".join(k.value for k in WorkerKind)
        raise UserError(f"data.worker_kind={kind!r} is not one of {accepted}") from None
    return WorkerKind.thread.value if kind is WorkerKind.auto else kind.value


def _map(
    dataset: ds.Dataset, transform: Callable, input_columns: list[str], workers: int, kind: WorkerKind
) -> ds.Dataset:
    """The per-image transform on ``workers`` threads or processes (MindSpore's process pool with
    shared memory); the result is the same bits either way, as every random choice is keyed."""
    return dataset.map(
        transform, input_columns=input_columns, output_columns=["image"], num_parallel_workers=workers,
        python_multiprocessing=resolve_worker_kind(kind) == "process",
    )  # fmt: skip


@dataclass
class LoadedSplit:
    """An evaluation dataset with the split it reads and its batch size."""

    dataset: ds.Dataset
    split: ImageFolderSplit
    batch_size: int


def resolve_root(data_cfg: DataConfig) -> Path | str:
    """The data set's root: a local folder, or a URL (s3://...) read through fsspec."""
    if data_cfg.name == "digits":
        return materialise_digits(Path(data_cfg.root).expanduser() if data_cfg.root else None)
    if not data_cfg.root:
        raise UserError(
            f"data={data_cfg.name} needs data.root=<folder holding {data_cfg.train_split}/ and {data_cfg.val_split}/>"
        )
    return data_cfg.root if is_remote(data_cfg.root) else local_path(data_cfg.root)


def open_split(data_cfg: DataConfig, split: str) -> ImageFolderSplit:
    """One split of the configured data set, scanned and validated."""
    split_files = scan_split(resolve_root(data_cfg), split, data_cfg.on_bad_image.name, data_cfg.remote_cache)
    _check_classes(data_cfg, split_files)
    return split_files


def _check_positive(name: str, value: int) -> None:
    if value <= 0:
        raise UserError(f"{name}={value} must be a positive integer")


def _check_classes(data_cfg: DataConfig, split: ImageFolderSplit) -> None:
    found = len(split.class_names)
    if found != data_cfg.num_classes:
        raise UserError(f"data.num_classes={data_cfg.num_classes} but {str(split.path)!r} has {found} class folders")


def open_train_split(data_cfg: DataConfig) -> ImageFolderSplit:
    """Scan and validate the training split once; epochs are then built from it."""
    _check_positive("data.batch_size", data_cfg.batch_size)
    return open_split(data_cfg, data_cfg.train_split)


def train_epoch(
    data_cfg: DataConfig,
    split: ImageFolderSplit,
    indices: np.ndarray,
    workers: int,
    image_size: int | None = None,
    record_to: Path | None = None,
    seed: int = 0,
    epoch: int = 1,
    uint8_out: bool = False,
) -> ds.Dataset:
    """Batches of (image, label) over ``indices`` in that order, with the training transforms
    keyed by (``seed``, ``epoch``, image index); ``record_to``: a text file that receives the
    path of every image as it is read; ``uint8_out``: uint8 NHWC batches, not normalised
    (the compiled step normalises them: effv2.training.step.DeviceNormalise)."""
    image_size = data_cfg.train_size if image_size is None else image_size
    _check_positive("data.train_size", image_size)
    transform = TrainTransform(data_cfg, image_size, uint8_out)
    source = _FileSource(split, [int(i) for i in indices], key_prefix=(seed, epoch), record_to=record_to)
    dataset = _map(_rows(source), transform, ["image", "key"], workers, data_cfg.worker_kind)
    return dataset.batch(data_cfg.batch_size, drop_remainder=True)


def build_eval_split(
    data_cfg: DataConfig, workers: int, image_size: int | None = None, shard: tuple[int, int] = (0, 1)
) -> LoadedSplit:
    """Every validation image, in a fixed order; the last batch may be partial. With
    ``shard=(rank, world_size)`` this rank gets images rank, rank + world_size, ...: over all
    ranks each image is evaluated exactly once."""
    image_size = data_cfg.eval_size if image_size is None else image_size
    _check_positive("data.eval_size", image_size)
    _check_positive("data.eval_batch_size", data_cfg.eval_batch_size)
    split = open_split(data_cfg, data_cfg.val_split)
    rank, world_size = shard
    source = _FileSource(split, list(range(rank, split.num_images, world_size)))
    transform = EvalTransform(data_cfg, image_size)
    dataset = _map(_rows(source), transform, ["image"], workers, data_cfg.worker_kind)
    dataset = dataset.batch(data_cfg.eval_batch_size, drop_remainder=False)
    return LoadedSplit(dataset, split, data_cfg.eval_batch_size)
