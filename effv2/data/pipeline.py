"""Training and evaluation pipelines on mindspore.dataset, shared by every data set.

The sources read encoded images in a given order of image indices, from the files of a folder or
by row from MindRecord shards; the per-image work (decode, crop, resize, augmentation,
normalisation: ``effv2.data.transforms``) runs in the dataset's parallel workers, keyed by image
so that the result does not depend on which worker ran it. An image that does not decode is
handled there too (``effv2.data.bad_images``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mindspore.dataset as ds
import numpy as np

from effv2.config.schema import DataConfig, DataFormat, WorkerKind
from effv2.data import manifest, mindrecord
from effv2.data.bad_images import BadImageLog, EvalRows, SubstitutingTrain
from effv2.data.digits import materialise_digits
from effv2.data.split import ImageSplit
from effv2.data.transforms import EvalTransform, TrainTransform
from effv2.errors import UserError
from effv2.progressive import Stage
from effv2.storage.location import is_remote, local_path

ROW_COLUMNS = ["image", "label", "index"]


class _FileSource:
    """Random-access (encoded bytes, label, image index) rows of a split's files, in a given order."""

    def __init__(self, split: ImageSplit, indices: list[int]) -> None:
        self.files = split.files
        self.read = split.read
        self.labels = split.labels
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, row: int) -> tuple[np.ndarray, ...]:
        index = self.indices[row]
        try:
            encoded = self.read(self.files[index])
        except OSError:  # gone since the listing, or a failed remote read: a bad image (bad_images)
            encoded = np.zeros(0, np.uint8)
        return encoded, np.array(self.labels[index], np.int32), np.array(index, np.int64)


class _ReadRecord:
    """Appends the path of each image, in the order the pipeline reads them, to a text file."""

    def __init__(self, split: ImageSplit, path: Path) -> None:
        self.files, self.path = split.files, path

    def __call__(self, index: np.ndarray) -> np.ndarray:
        with self.path.open("a") as record:
            record.write(f"{self.files[int(index)]}\n")
        return index


def _rows(split: ImageSplit, indices: list[int], record_to: Path | None = None) -> ds.Dataset:
    """(image, label, index) of ``indices`` in that order: files, or rows of the packed shards."""
    if split.shards:
        rows = mindrecord.shard_rows(split, indices)
    else:
        rows = ds.GeneratorDataset(
            _FileSource(split, indices), column_names=ROW_COLUMNS, shuffle=False, num_parallel_workers=1
        )
    if record_to is not None:  # one worker: called in reading order
        rows = rows.map(_ReadRecord(split, record_to), input_columns=["index"], num_parallel_workers=1)
    return rows


def resolve_worker_kind(kind: WorkerKind | str) -> str:
    """``auto`` -> threads: with the compiled kernels and simplejpeg an image holds the GIL for
    a small share of its time, and threads then deliver as many images per second as processes
    without copying every batch through shared memory (benchmarks/bench_data.py; docs/data.md)."""
    try:
        kind = WorkerKind(kind)
    except ValueError:
        accepted = ", ".join(k.value for k in WorkerKind)
        raise UserError(f"data.worker_kind={kind!r} is not one of {accepted}") from None
    return WorkerKind.thread.value if kind is WorkerKind.auto else kind.value


def _map(dataset: ds.Dataset, transform: Callable, output_columns: list[str], workers: int,
         kind: WorkerKind, input_columns: list[str] = ROW_COLUMNS) -> ds.Dataset:  # fmt: skip
    """The per-image transform of the (image, label, index) rows on ``workers`` threads or
    processes (MindSpore's process pool with shared memory); the result is the same bits either
    way, as every random choice is keyed."""
    return dataset.map(
        transform, input_columns=input_columns, output_columns=output_columns, num_parallel_workers=workers,
        python_multiprocessing=resolve_worker_kind(kind) == "process",
    )  # fmt: skip


@dataclass
class LoadedSplit:
    """An evaluation dataset with the split it reads and its batch size."""

    dataset: ds.Dataset  # batches of (image, label, bad: the image index, -1 where it decoded)
    split: ImageSplit
    batch_size: int
    bad_images: BadImageLog  # the bad images met so far: each named once over the epochs


def resolve_root(data_cfg: DataConfig) -> Path | str:
    """The data set's root: a local folder, or a URL (s3://...) read through fsspec."""
    if data_cfg.name == "digits":
        return materialise_digits(Path(data_cfg.root).expanduser() if data_cfg.root else None)
    if not data_cfg.root:
        raise UserError(
            f"data={data_cfg.name} needs data.root=<folder holding {data_cfg.train_split}/ and {data_cfg.val_split}/>"
        )
    return data_cfg.root if is_remote(data_cfg.root) else local_path(data_cfg.root)


def open_split(data_cfg: DataConfig, split: str, run_dir: Path | None = None, node: int = 0) -> ImageSplit:
    """One split of the configured data set. From a listing, checked against its manifest (see
    effv2.data.manifest), or from packed shards; in a launched rank (``run_dir`` given), the
    split the launching process of its ``node`` pinned there, without listing or fetching."""
    root = resolve_root(data_cfg)
    pinned = manifest.read_pinned(run_dir, node, split)
    if pinned and "packed" in pinned:
        opened = mindrecord.open_packed(Path(pinned["packed"]))
        if opened.fingerprint != pinned["fingerprint"]:
            raise UserError(f"the pack in {pinned['packed']} changed after the job started; start it again")
    elif pinned:
        opened = manifest.load_pinned(pinned, root, split, data_cfg.remote_cache)
    elif data_cfg.format is DataFormat.mindrecord:
        opened = mindrecord.open_packed(mindrecord.packed_folder(root, split, data_cfg.remote_cache))
    else:
        opened = manifest.open_split(root, split, data_cfg.manifest, data_cfg.manifest_check, data_cfg.remote_cache)[0]
    _check_classes(data_cfg, opened)
    return opened


def pin_splits(data_cfg: DataConfig, splits: list[str], run_dir: Path, node: int) -> None:
    """Open ``splits`` here, once, and pin them in ``run_dir`` for the ranks of ``node`` this
    process is about to start (which then list nothing and fetch nothing)."""
    root = resolve_root(data_cfg)
    opened, locations = {}, {}
    for split in splits:
        if data_cfg.format is DataFormat.mindrecord:
            folder = mindrecord.packed_folder(root, split, data_cfg.remote_cache)
            opened[split], locations[split] = mindrecord.open_packed(folder), str(folder)
        else:
            opened[split], locations[split] = manifest.open_split(
                root, split, data_cfg.manifest, data_cfg.manifest_check, data_cfg.remote_cache
            )
        _check_classes(data_cfg, opened[split])
    manifest.pin(run_dir, node, opened, locations)


def _check_classes(data_cfg: DataConfig, split: ImageSplit) -> None:
    found = len(split.class_names)
    if found != data_cfg.num_classes:
        raise UserError(f"data.num_classes={data_cfg.num_classes} but {str(split.path)!r} has {found} class folders")


def open_train_split(data_cfg: DataConfig, run_dir: Path | None = None, node: int = 0) -> ImageSplit:
    """Open the training split once; epochs are then built from it."""
    return open_split(data_cfg, data_cfg.train_split, run_dir, node)


def train_epoch(
    data_cfg: DataConfig,
    split: ImageSplit,
    indices: np.ndarray,
    workers: int,
    image_size: int | None = None,
    record_to: Path | None = None,
    seed: int = 0,
    epoch: int = 1,
    uint8_out: bool = False,
    stage: Stage | None = None,
) -> ds.Dataset:
    """Batches of (image, label, replaced) over ``indices`` in that order, with the training
    transforms keyed by (``seed``, ``epoch``, image index); ``replaced``: [bad index, substitute]
    per row, [-1, -1] where the image decoded (effv2.data.bad_images). ``record_to``: a text file
    that receives the path of every image as it is read; ``uint8_out``: uint8 NHWC batches, not
    normalised (the compiled step normalises them: effv2.training.step.DeviceNormalise)."""
    return train_stream(data_cfg, split, [(epoch, indices)], workers, image_size, record_to, seed, uint8_out, stage)


def train_stream(
    data_cfg: DataConfig,
    split: ImageSplit,
    runs: list[tuple[int, np.ndarray]],
    workers: int,
    image_size: int | None = None,
    record_to: Path | None = None,
    seed: int = 0,
    uint8_out: bool = False,
    stage: Stage | None = None,
) -> ds.Dataset:
    """:func:`train_epoch` over runs of (pass, indices) end to end, each run's transforms keyed by
    its pass: a batch may hold the end of one pass and the start of the next
    (train.step_counting=official, effv2.step_plan)."""
    image_size = data_cfg.train_size if image_size is None else image_size
    train = TrainTransform(data_cfg, image_size, uint8_out, stage)
    policy = data_cfg.on_bad_image.value
    if len(runs) == 1:  # one pass: its key is a constant, no column needed
        pass_number, indices = runs[0]
        rows = _rows(split, [int(i) for i in indices], record_to)
        transform = SubstitutingTrain(train, split, seed, pass_number, policy)
        mapped = _map(rows, transform, ["image", "label", "replaced"], workers, data_cfg.worker_kind)
    else:  # each row carries its pass; the rows are recorded once joined, in training order
        parts = [
            _rows(split, [int(i) for i in indices]).map(
                _WithPass(pass_number), input_columns=["index"], output_columns=["index", "pass"]
            )
            for pass_number, indices in runs
        ]
        rows = parts[0].concat(parts[1:])
        if record_to is not None:
            rows = rows.map(_ReadRecord(split, record_to), input_columns=["index"], num_parallel_workers=1)
        transform = SubstitutingTrain(train, split, seed, None, policy)
        mapped = _map(
            rows, transform, ["image", "label", "replaced"], workers, data_cfg.worker_kind, [*ROW_COLUMNS, "pass"]
        )
    return mapped.batch(data_cfg.batch_size, drop_remainder=True)


class _WithPass:
    """index -> (index, pass): the pass that keys the row's augmentation (effv2.step_plan)."""

    def __init__(self, pass_number: int) -> None:
        self.pass_number = np.array(pass_number, np.int64)

    def __call__(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return index, self.pass_number


def build_eval_split(
    data_cfg: DataConfig,
    workers: int,
    image_size: int | None = None,
    shard: tuple[int, int] = (0, 1),
    run_dir: Path | None = None,
    node: int = 0,
) -> LoadedSplit:
    """Every validation image, in a fixed order; the last batch may be partial. With
    ``shard=(rank, world_size)`` this rank gets images rank, rank + world_size, ...: over all
    ranks each image is evaluated exactly once."""
    image_size = data_cfg.eval_size if image_size is None else image_size
    split = open_split(data_cfg, data_cfg.val_split, run_dir, node)
    rank, world_size = shard
    rows = _rows(split, list(range(rank, split.num_images, world_size)))
    transform = EvalRows(EvalTransform(data_cfg, image_size))
    dataset = _map(rows, transform, ["image", "label", "bad"], workers, data_cfg.worker_kind)
    dataset = dataset.batch(data_cfg.eval_batch_size, drop_remainder=False)
    bad_images = BadImageLog(split, data_cfg.on_bad_image.value, "validation")
    return LoadedSplit(dataset, split, data_cfg.eval_batch_size, bad_images)
