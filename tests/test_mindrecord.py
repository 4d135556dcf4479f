"""Packed MindRecord shards: ``python -m effv2.data.pack`` writes them (leaving out what does
not decode), and ``data.format=mindrecord`` reads back by index the very batches the folder gives."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from conftest import CONF_DIR, REPO
from effv2.config import register_configs
from effv2.data.pipeline import build_eval_split, open_train_split, train_epoch
from effv2.data.sharding import BatchPlan, epoch_order
from effv2.errors import UserError

register_configs()

AUGMENTED = (
    "data.train_size=48", "data.batch_size=4", "data.train_crop=random_resized_crop", "data.hflip_prob=0.5",
    "data.augment.randaug_layers=2", "data.augment.randaug_magnitude=15",
)  # fmt: skip


def _cfg(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=["data=imagefolder", f"data.root={root}", "data.num_classes=2", *AUGMENTED, *overrides],
        ).data


def _pack(root: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "effv2.data.pack", str(root), str(out), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def packed(photo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The photo folder (634 kB of training JPEGs) packed into shards of ~200 kB."""
    out = tmp_path_factory.mktemp("packed") / "shards"
    result = _pack(photo_folder, out, "--shard-size", "200kB", "--workers", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_packing_writes_shards_with_the_class_names_and_counts(packed: Path, photo_folder: Path) -> None:
    info = json.loads((packed / "train" / "pack.json").read_text())
    assert info["images"] == 24 and info["class_names"] == ["class0", "class1"] and info["class_counts"] == [12, 12]
    assert len(info["shards"]) > 1 and sum(s["rows"] for s in info["shards"]) == 24
    assert all(s["bytes"] <= 200_000 or s["rows"] == 1 for s in info["shards"])
    source_bytes = sum(p.stat().st_size for p in (photo_folder / "train").rglob("*.jpg"))
    assert sum(s["bytes"] for s in info["shards"]) == source_bytes
    for shard in info["shards"]:
        assert (packed / "train" / shard["file"]).is_file() and (packed / "train" / f"{shard['file']}.db").is_file()
    assert json.loads((packed / "val" / "pack.json").read_text())["images"] == 8


@pytest.mark.parametrize("workers,kind", [(1, "thread"), (2, "process")])
def test_shards_give_the_batches_the_folder_gives(packed: Path, photo_folder: Path, workers: int, kind: str) -> None:
    folder_cfg = _cfg(photo_folder, f"data.worker_kind={kind}")
    shard_cfg = _cfg(packed, "data.format=mindrecord", f"data.worker_kind={kind}")
    folder, shards = open_train_split(folder_cfg), open_train_split(shard_cfg)
    assert shards.fingerprint != "" and shards.class_names == folder.class_names
    assert [s.split("/")[-2:] for s in shards.files] == [s.split("/")[-2:] for s in folder.files]
    plan = BatchPlan(4, world_size=2)
    for rank in (0, 1):  # a rank's share of a keyed epoch, as the trainer asks for it
        indices = plan.rank_indices(epoch_order(folder.num_images, seed=0, epoch=2), rank)
        want = list(train_epoch(folder_cfg, folder, indices, workers, seed=0, epoch=2).create_tuple_iterator(
            num_epochs=1, output_numpy=True))  # fmt: skip
        got = list(train_epoch(shard_cfg, shards, indices, workers, seed=0, epoch=2).create_tuple_iterator(
            num_epochs=1, output_numpy=True))  # fmt: skip
        assert len(got) == len(want) == 3
        for (images, labels, _), (want_images, want_labels, _) in zip(got, want, strict=True):
            np.testing.assert_array_equal(images, want_images)
            np.testing.assert_array_equal(labels, want_labels)
    # evaluation reads the validation shards in the folder's order
    evaluated = [build_eval_split(cfg, 1, shard=(1, 2)) for cfg in (folder_cfg, shard_cfg)]
    batches = [np.concatenate([b[0] for b in e.dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)])
               for e in evaluated]  # fmt: skip
    np.testing.assert_array_equal(batches[0], batches[1])


def test_bad_images_are_left_out_of_a_pack(photo_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    shutil.copytree(photo_folder, root)
    (root / "train" / "class1" / "005.jpg").write_bytes(b"<html>not found</html>")
    result = _pack(root, tmp_path / "out", "--split", "train")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 left out" in result.stdout and "005.jpg" in result.stderr
    info = json.loads((tmp_path / "out" / "train" / "pack.json").read_text())
    assert info["images"] == 23 and info["class_counts"] == [12, 11]
    assert info["left_out"][0]["path"] == "class1/005.jpg" and "not a readable image" in info["left_out"][0]["problem"]
    shards = open_train_split(_cfg(tmp_path / "out", "data.format=mindrecord"))
    assert shards.num_images == 23 and "class1/005.jpg" not in shards.files.relative_paths()


def test_a_folder_that_is_not_a_pack_and_a_bad_shard_size_are_one_line(photo_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="holds no pack.json; pack an ImageFolder with python -m effv2.data.pack"):
        open_train_split(_cfg(photo_folder, "data.format=mindrecord"))
    result = _pack(photo_folder, tmp_path / "out", "--shard-size", "lots")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: --shard-size='lots' is not a size such as 1GB, 512MB or 256MiB"
    ]
