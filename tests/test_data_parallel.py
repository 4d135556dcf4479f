"""Data parallelism proven against one process (real msrun, 2 CPU ranks, 127.0.0.1).

A 2-rank run with per-device batch b must be the same computation as one process with batch b
and ``train.accumulation_steps=2``: the same micro-batches (read back from the files each rank
actually opened), the same dropout / drop-path masks (both on here), averaged gradients, BN
running statistics moved once per optimizer step from the micro-batches' mean; every tensor of
the checkpoints agrees. A run resumes across the two set-ups in both directions, BN statistics in a
checkpoint are the average of the ranks', and evaluation on 2 ranks scores each image once.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from conftest import BATCH, COMMON, EVAL_32PX, TWO_RANKS, one_line_error, run_cli, tiny_data
from effv2.checkpoints import NOT_RESUMED
from effv2.data.sharding import BatchPlan, epoch_order

# relative agreement of every trained tensor; measured on an AMD EPYC (2 cores): bit-identical
TOLERANCE = 1e-5


def _reads(run_dir: Path, epoch: int, rank: int) -> list[str]:
    return (run_dir / "reads" / f"epoch{epoch:04d}_rank{rank}.txt").read_text().splitlines()


def _weights(path: Path) -> dict[str, np.ndarray]:
    """Every float tensor of a checkpoint: weights, optimizer slots, EMA and BN running statistics."""
    params = ms.load_checkpoint(str(path))
    return {
        name: value.asnumpy()
        for name, value in params.items()
        if name != "effv2_meta" and value.asnumpy().dtype.kind == "f"
    }


def _assert_same_training(expected: Path, actual: Path) -> float:
    """Every trained tensor, optimizer slot and BN running statistic within TOLERANCE (relative to
    the tensor's scale)."""
    first, second = _weights(expected), _weights(actual)
    shared = set(first) & set(second)
    statistics = [name for name in shared if "moving_" in name and not name.startswith(NOT_RESUMED)]
    assert len(statistics) == 26  # mean and variance of the micro network's 13 BN layers
    assert {n for n in first if not n.startswith(NOT_RESUMED)} <= shared  # accumulation buffers only in 1p
    worst = 0.0
    for name in sorted(shared):
        scale = max(float(np.abs(first[name]).max()), 1e-12)
        worst = max(worst, float(np.abs(first[name] - second[name]).max()) / scale)
        np.testing.assert_allclose(second[name], first[name], rtol=0, atol=TOLERANCE * scale, err_msg=name)
    return worst


def _epoch_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_two_ranks_train_what_one_process_with_accumulation_trains(runs: dict[str, Path]) -> None:
    one, two = runs["one"], runs["two"]
    worst = _assert_same_training(one / "checkpoints" / "last.ckpt", two / "checkpoints" / "last.ckpt")
    print(f"largest relative difference over all trained tensors: {worst:.3g}")
    for row_one, row_two in zip(_epoch_rows(one), _epoch_rows(two), strict=True):
        # the epoch's loss is the mean over every micro-batch of every rank
        assert float(row_two["train_loss"]) == pytest.approx(float(row_one["train_loss"]), rel=TOLERANCE)
        assert (row_two["train_images"], row_two["dropped_images"]) == ("64", "16")
    # every rank ended with the same weights, and rank 0 alone wrote the run's outputs
    statuses = [json.loads((two / "ranks" / f"rank_{r}.json").read_text()) for r in (0, 1)]
    assert [s["status"] for s in statuses] == ["done", "done"] and statuses[0]["weights"] == statuses[1]["weights"]
    log_text = (two / "run.log").read_text()
    assert "[rank 0]" in log_text and "[rank 1]" not in log_text
    assert "batch 32 x 2 devices x 1 accumulation = 64" in log_text
    assert "64 images trained over 2 ranks, 16 dropped as the remainder" in log_text
    assert (two / "ranks" / "worker_1.log").is_file()
    # the launching process listed the splits once; the ranks read its pinned manifests
    pinned = json.loads((two / "manifests" / "node0.json").read_text())
    assert set(pinned) == {"train", "val"} and Path(pinned["train"]["manifest"]).parent == two / "manifests"
    assert "images listed" not in (two / "ranks" / "worker_1.log").read_text()


def test_ranks_read_disjoint_shards_that_are_the_single_process_micro_batches(
    runs: dict[str, Path], tiny_folder: Path
) -> None:
    one, two = runs["one"], runs["two"]
    every_image = {str(p) for p in (tiny_folder / "train").rglob("*.png")}
    assert len(every_image) == 80
    for epoch in (1, 2):
        shards = [_reads(two, epoch, rank) for rank in (0, 1)]
        assert [len(s) for s in shards] == [BATCH, BATCH]
        assert not set(shards[0]) & set(shards[1])
        single = _reads(one, epoch, 0)
        # one process reads global micro-batches 0, 1, ... in turn; rank r's i-th is number i*2 + r
        for rank, shard in enumerate(shards):
            for i in range(len(shard) // BATCH):
                g = i * 2 + rank
                assert shard[i * BATCH : (i + 1) * BATCH] == single[g * BATCH : (g + 1) * BATCH]
        union = set(shards[0]) | set(shards[1])
        assert len(union) == 64 and union <= every_image  # all but the 16-image remainder
    assert _reads(two, 1, 0) != _reads(two, 2, 0)  # a new permutation each epoch


@pytest.mark.parametrize("resumed,source", [("two_then_one", "two"), ("one_then_two", "one")])
def test_a_run_resumes_on_another_device_count_with_the_same_global_batch(
    runs: dict[str, Path], resumed: str, source: str
) -> None:
    run_dir = runs[resumed]
    log_text = (run_dir / "run.log").read_text()
    assert "resumed from" in log_text and "at epoch 3, 0 steps done" in log_text
    assert "continue a run of" in log_text
    assert [row["epoch"] for row in _epoch_rows(run_dir)] == ["1", "2", "3"]
    # the third epoch reads the same micro-batches whichever set-up resumed
    single = _reads(runs["two_then_one"], 3, 0)
    shards = [_reads(runs["one_then_two"], 3, rank) for rank in (0, 1)]
    assert shards[0] + shards[1] == single
    # and both continue the same training: three steps, two of them on each set-up
    _assert_same_training(runs["two_then_one"] / "checkpoints" / "last.ckpt",
                          runs["one_then_two"] / "checkpoints" / "last.ckpt")  # fmt: skip


def test_another_global_batch_on_resume_is_one_line(runs: dict[str, Path], tiny_folder: Path, tmp_path: Path) -> None:
    result = run_cli(
        *tiny_data(tiny_folder, BATCH), *COMMON, "train.epochs=3", f"resume={runs['two']}", f"hydra.run.dir={tmp_path}"
    )  # fmt: skip
    line = one_line_error(result)
    assert "trained with a global batch of 64 (32 x 2 devices x 1 accumulation)" in line
    assert "this run's is 32 x 1 devices x 1 accumulation = 32" in line


def test_checkpointed_bn_statistics_are_the_average_of_the_ranks(runs: dict[str, Path], tiny_folder: Path) -> None:
    """The 2-rank resume trained epoch 3 as one step from the 1-process checkpoint: each rank's
    running statistics moved by its own micro-batch, and the checkpoint holds their average."""
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR
    from effv2.checkpoints import load_weights
    from effv2.config import register_configs
    from effv2.data.pipeline import open_train_split, train_epoch
    from effv2.models import build_model

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*tiny_data(tiny_folder, BATCH), *COMMON])
    split = open_train_split(cfg.data)
    index_of = {str(path): i for i, path in enumerate(split.files)}
    start = runs["one"] / "checkpoints" / "last.ckpt"  # where epoch 3 of one_then_two started
    per_rank = []
    for rank in (0, 1):
        net = build_model(cfg.model)
        load_weights(net, start, prefer_ema=False)
        indices = np.array([index_of[p] for p in _reads(runs["one_then_two"], 3, rank)])
        images, *_ = next(train_epoch(cfg.data, split, indices, 1).create_tuple_iterator(output_numpy=True))
        # epoch 3's micro-batch of this rank is global micro-batch 2 * 2 + rank: its masks
        net.rng_step.set_data(ms.Tensor(np.array([BatchPlan(BATCH, 2).global_micro(2, rank)], np.int64)))
        net.set_train(True)
        net(ms.Tensor(images))
        per_rank.append({p.name: p.asnumpy().copy() for p in net.get_parameters() if "moving_" in p.name})
    saved = ms.load_checkpoint(str(runs["one_then_two"] / "checkpoints" / "last.ckpt"))
    names = sorted(per_rank[0])
    assert len(names) == 26  # every BN layer of the micro network
    spread = max(float(np.abs(per_rank[0][n] - per_rank[1][n]).max()) for n in names)
    assert spread > 1e-3  # the ranks' own statistics really differ
    for name in names:
        expected = (per_rank[0][name] + per_rank[1][name]) / 2
        np.testing.assert_allclose(saved[name].asnumpy(), expected, rtol=1e-4, atol=1e-5, err_msg=name)


def test_eval_on_two_ranks_scores_each_image_once_like_one_process(
    best_ckpt: Path, eval_top1: float, tmp_path: Path
) -> None:
    result = run_cli(
        "task=eval", EVAL_32PX, f"ckpt={best_ckpt}", "hardware=cpu_2p", "hardware.master_port=8163",
        f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images"] == 359  # the digits' validation split, split 180 / 179 over the ranks
    assert metrics["val_top1"] == pytest.approx(eval_top1, abs=1e-9)
    assert all((tmp_path / "ranks" / f"rank_{r}.json").is_file() for r in (0, 1))


def test_the_seed_recipe_evaluates_on_one_cpu(best_ckpt: Path, eval_top1: float, tmp_path: Path) -> None:
    """The preset brings ascend910_16p and requires pretrained weights to train; evaluating a
    checkpoint on hardware=cpu needs neither (the data and model are the demo's here)."""
    result = run_cli(
        "experiment=effnetv2_s_finetune", "task=eval", "hardware=cpu", f"ckpt={best_ckpt}",
        "model=effnetv2_b0", "model.num_classes=10", "data=digits", EVAL_32PX, "data.eval_crop=squash",
        f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["val_top1"] == pytest.approx(eval_top1, abs=1e-9)


def test_sync_bn_on_cpu_ranks_is_one_line(tmp_path: Path) -> None:
    result = run_cli("hardware=cpu_2p", "hardware.sync_bn=true", f"hydra.run.dir={tmp_path}")
    assert "MindSpore 2.10 has no CPU kernel for SyncBatchNorm" in one_line_error(result)


@pytest.mark.parametrize("world_size,accumulation", [(1, 4), (2, 2), (4, 1)])
def test_batch_plans_with_one_global_batch_cut_an_epoch_into_the_same_steps(world_size: int, accumulation: int) -> None:
    order = epoch_order(103, seed=3, epoch=2)
    reference = BatchPlan(5, 1, 4)
    plan = BatchPlan(5, world_size, accumulation)
    assert plan.global_batch == 20 and plan.steps_per_epoch(103) == 5 and plan.dropped(103) == 3
    shards = [plan.rank_indices(order, rank) for rank in range(world_size)]
    for step in range(5):
        block = set(order[step * 20 : (step + 1) * 20].tolist())
        per_step = [s[step * accumulation * 5 : (step + 1) * accumulation * 5] for s in shards]
        assert set(np.concatenate(per_step).tolist()) == block
        # a mid-epoch position is a number of steps: the rest of the epoch is the same images
        rest = [s[step * accumulation * 5 :] for s in shards]
        assert set(np.concatenate(rest).tolist()) == set(reference.rank_indices(order, 0)[step * 20 :].tolist())


def _relative(paths: list[str]) -> list[str]:
    return ["/".join(path.split("/")[-2:]) for path in paths]


def test_two_ranks_on_packed_shards_train_what_one_process_trains_on_the_folder(
    runs: dict[str, Path], tiny_folder: Path, tmp_path: Path
) -> None:
    """tiny_folder packed into MindRecord shards and trained on 2 msrun ranks: the ranks read
    disjoint images, the single process's micro-batches, and end with its weights."""
    import subprocess
    import sys

    from conftest import REPO

    packed = tmp_path / "packed"
    result = subprocess.run([sys.executable, "-m", "effv2.data.pack", str(tiny_folder), str(packed),
                             "--shard-size", "4kB"], cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "two_on_shards"
    data = (*tiny_data(packed, BATCH), "data.format=mindrecord")
    result = run_cli(*data, *COMMON, *TWO_RANKS, "hardware.master_port=8164", "train.epochs=2",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    pinned = json.loads((run_dir / "manifests" / "node0.json").read_text())
    assert set(pinned) == {"train", "val"} and pinned["train"]["packed"] == str(packed / "train")
    for epoch in (1, 2):
        shards = [_relative(_reads(run_dir, epoch, rank)) for rank in (0, 1)]
        assert [len(s) for s in shards] == [BATCH, BATCH] and not set(shards[0]) & set(shards[1])
        single = _relative(_reads(runs["one"], epoch, 0))
        assert shards[0] + shards[1] == single[:BATCH] + single[BATCH:]  # global micro-batches 0 and 1
    _assert_same_training(runs["one"] / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "last.ckpt")


def test_the_mindrecord_data_group_is_imagenet_from_shards() -> None:
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR
    from effv2.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        data = compose(config_name="config", overrides=["data=mindrecord", "data.root=/shards"]).data
        imagenet = compose(config_name="config", overrides=["data=imagenet", "data.root=/shards"]).data
    assert data.format.name == "mindrecord" and data.name == "mindrecord"
    assert {k: v for k, v in imagenet.items() if k not in ("name", "format")} == {
        k: v for k, v in data.items() if k not in ("name", "format")
    }
