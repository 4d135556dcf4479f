"""Images that fail to decode are found when they are decoded: training replaces each by the
next image of the split that decodes (keyed by the bad image's index, so any worker set-up and a
resume agree), names it once and counts it; evaluation leaves it out; ``error`` stops naming it;
``python -m effv2.data.verify`` reports every bad file up front."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from conftest import CONF_DIR, REPO, killed_after_first_recovery, one_line_error, resumable, run_cli
from effv2.config import register_configs
from effv2.data.pipeline import open_train_split, train_epoch
from effv2.data.sharding import epoch_order

register_configs()

AUGMENTED = (
    "data.train_size=48", "data.batch_size=8", "data.train_crop=random_resized_crop", "data.hflip_prob=0.5",
    "data.augment.randaug_layers=2", "data.augment.randaug_magnitude=15",
)  # fmt: skip


def _cfg(root: Path, *overrides: str, classes: int = 2):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=["data=imagefolder", f"data.root={root}", f"data.num_classes={classes}", *overrides],
        ).data


def _break(root: Path, split: str = "train") -> dict[Path, Path]:
    """Make two images of ``split`` bad: the 2nd file of the first class becomes a JPEG cut short
    (renamed .jpg), the 3rd of the second class a text file. Returns {bad file: its substitute}
    (the next file in the class folder, as the rule picks it: neither is last in its folder)."""
    classes = sorted(p for p in (root / split).iterdir())
    first, second = sorted(classes[0].iterdir()), sorted(classes[1].iterdir())
    photo = next(iter(sorted(Path(os.environ["PHOTO_JPEG"]).parent.iterdir())))
    truncated = first[1].with_suffix(".jpg")
    first[1].unlink()
    truncated.write_bytes(photo.read_bytes()[:-300])
    second[2].write_text("<html>403 Forbidden</html>")
    return {truncated: first[2], second[2]: second[3]}


def _by_hand(root: Path, bad: dict[Path, Path], into: Path) -> Path:
    """A copy of ``root`` with each bad file's bytes replaced by its substitute's."""
    shutil.copytree(root, into)
    for path, substitute in bad.items():
        (into / path.relative_to(root)).write_bytes(substitute.read_bytes())
    return into


@pytest.fixture(scope="module", autouse=True)
def _photo_jpeg(photo_folder: Path) -> None:
    os.environ["PHOTO_JPEG"] = str(next(iter(sorted((photo_folder / "train" / "class0").iterdir()))))


def _epoch(cfg, workers: int, kind: str = "thread") -> list[tuple[np.ndarray, ...]]:
    cfg.worker_kind = kind
    split = open_train_split(cfg)
    order = epoch_order(split.num_images, seed=0, epoch=1)
    dataset = train_epoch(cfg, split, order, workers, seed=0, epoch=1)
    return list(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))


def test_bad_images_get_the_substitute_rule_applied_by_hand(photo_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    shutil.copytree(photo_folder, root)
    bad = _break(root)
    by_hand = _by_hand(root, bad, tmp_path / "by_hand")
    expected = _epoch(_cfg(by_hand, *AUGMENTED), 1)
    split = open_train_split(_cfg(root, *AUGMENTED))
    bad_indices = sorted(list(map(str, split.files)).index(str(p)) for p in bad)
    for workers, kind in ((1, "thread"), (2, "process")):
        found = _epoch(_cfg(root, *AUGMENTED), workers, kind)
        assert len(found) == len(expected) == 3
        replaced = np.concatenate([batch[2] for batch in found])
        assert sorted(replaced[replaced[:, 0] >= 0, 0].tolist()) == bad_indices
        assert sorted(replaced[replaced[:, 0] >= 0, 1].tolist()) == [i + 1 for i in bad_indices]
        for (images, labels, _), (want_images, want_labels, want_replaced) in zip(found, expected, strict=True):
            np.testing.assert_array_equal(images, want_images)
            np.testing.assert_array_equal(labels, want_labels)
            assert (want_replaced == -1).all()


def test_a_substitute_across_a_class_boundary_brings_its_own_label(photo_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    shutil.copytree(photo_folder, root)
    last = sorted((root / "train" / "class0").iterdir())[-1]
    last.write_bytes(b"")
    split = open_train_split(_cfg(root, *AUGMENTED))
    index = list(map(str, split.files)).index(str(last))
    images, labels, replaced = (np.concatenate(parts) for parts in zip(*_epoch(_cfg(root, *AUGMENTED), 1), strict=True))
    row = int(np.flatnonzero(replaced[:, 0] == index)[0])
    assert replaced[row].tolist() == [index, index + 1] and split.labels[index] == 0 and labels[row] == 1


def test_verify_reports_every_bad_file(photo_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    shutil.copytree(photo_folder, root)
    bad = _break(root)
    (root / "val" / "class1" / "empty.png").write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-m", "effv2.data.verify", str(root), "--workers", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    reported = sorted(line.split(": ")[0].removeprefix("bad ") for line in lines if line.startswith("bad "))
    assert reported == sorted([*map(str, bad), str(root / "val" / "class1" / "empty.png")])
    assert any("truncated JPEG" in line for line in lines) and any("not a readable image" in line for line in lines)
    assert any("24 images decoded" in line and "2 bad" in line for line in lines)
    clean = subprocess.run([sys.executable, "-m", "effv2.data.verify", str(photo_folder)], cwd=REPO,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert clean.returncode == 0 and "0 bad" in clean.stdout


def test_on_bad_image_error_stops_at_the_first_naming_it(tiny_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_folder, root)
    broken = sorted((root / "train" / "4").iterdir())[0]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = run_cli(
        *(o for o in resumable(root)), "data.on_bad_image=error", "data.batch_size=80", "train.epochs=1",
        f"hydra.run.dir={tmp_path / 'r'}",
    )  # fmt: skip
    line = one_line_error(result)
    assert str(broken) in line and "bad training image" in line and "data.on_bad_image=skip" in line


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_a_run_with_bad_images_trains_as_by_hand_and_resumes_exactly(tiny_folder: Path, tmp_path: Path) -> None:
    """A truncated JPEG and a text file among the training images, a bad validation image: the
    run (SIGKILLed after its first recovery checkpoint, then resumed) ends with the very weights
    of an uninterrupted run on the folder where the substitute rule was applied by hand."""
    root = tmp_path / "bad"
    shutil.copytree(tiny_folder, root)
    bad = _break(root)
    reference_root = _by_hand(root, bad, tmp_path / "by_hand")
    broken_val = sorted((root / "val" / "7").iterdir())[0]
    broken_val.write_bytes(b"not an image")
    reference = tmp_path / "reference"
    result = run_cli(*resumable(reference_root), f"hydra.run.dir={reference}")
    assert result.returncode == 0, result.stderr[-3000:]

    overrides = (*resumable(root), "data.worker_kind=process", "hardware.num_workers=2")
    killed = killed_after_first_recovery(overrides, tmp_path / "killed")
    resumed = tmp_path / "resumed"
    result = run_cli(*overrides, f"resume={killed}", f"hydra.run.dir={resumed}")
    assert result.returncode == 0, result.stderr[-3000:]

    expected = ms.load_checkpoint(str(reference / "checkpoints" / "last.ckpt"))
    actual = ms.load_checkpoint(str(resumed / "checkpoints" / "last.ckpt"))
    for name in sorted(set(expected) - {"effv2_meta"}):
        np.testing.assert_array_equal(actual[name].asnumpy(), expected[name].asnumpy(), err_msg=name)
    log_text = (resumed / "run.log").read_text()
    for path in bad:  # named once in the resumed run, with the reason and what it trained instead
        assert log_text.count(f"bad image {path}:") == 1
    assert "truncated JPEG (no end-of-image marker); trained on" in log_text
    assert log_text.count(f"bad image {broken_val}:") == 1 and "left out of the evaluation" in log_text
    assert "2 bad images replaced by substitutes" in log_text
    rows = _rows(resumed)
    assert rows[-1]["epoch"] == "3" and rows[-1]["bad_images"] == "2"  # every image trains each epoch
    assert {row["bad_images"] for row in _rows(reference)} == {"0"}


def test_a_vanished_file_is_a_bad_image_and_a_broken_data_set_is_one_line(photo_folder: Path, tmp_path: Path) -> None:
    from effv2.data.bad_images import NO_SUBSTITUTE, BadImageLog
    from effv2.errors import UserError

    root = tmp_path / "data"
    shutil.copytree(photo_folder, root)
    cfg = _cfg(root, *AUGMENTED, "data.manifest_check=none")
    split = open_train_split(cfg)
    gone = sorted((root / "train" / "class0").iterdir())[4]
    gone.unlink()  # deleted after the listing: its read fails mid-epoch
    replaced = np.concatenate([batch[2] for batch in _epoch(cfg, 1)])
    index = list(map(str, split.files)).index(str(gone))
    assert replaced[replaced[:, 0] >= 0].tolist() == [[index, index + 1]]
    log = BadImageLog(split, "skip", "training")
    with pytest.raises(UserError, match=r"unreadable \(FileNotFoundError"):
        BadImageLog(split, "error", "training").report(np.array([index]), np.array([NO_SUBSTITUTE]))
    for path in (root / "train").rglob("*.jpg"):  # every image broken: no substitute anywhere
        path.write_bytes(b"")
    replaced = np.concatenate([batch[2] for batch in _epoch(cfg, 1)])
    assert (replaced[:, 1] == NO_SUBSTITUTE).all()
    with pytest.raises(UserError, match="and none of the 64 images after it decodes either"):
        log.report(replaced[:, 0], replaced[:, 1])
