"""Opening a split lists it and opens no image; its manifest is reused, re-listed when the folder
changed, pinned for the ranks of a job, and small at ImageNet's size."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from conftest import CONF_DIR, REPO
from effv2.config import register_configs
from effv2.data import manifest
from effv2.data.pipeline import open_split, pin_splits
from effv2.errors import UserError

register_configs()

# a 1.28M-entry manifest (ImageNet's training split): its arrays take ~64 MiB; loading it may
# briefly hold the file's bytes as well (measured in benchmarks/bench_open.py)
MANIFEST_RSS_BOUND_MIB = 300


def _cfg(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=["data=imagefolder", f"data.root={root}", "data.num_classes=2", *overrides],
        ).data


_ACTIVE: list[_Audit] = []  # the audits in progress; the hook itself is never removed (Python cannot)


def _dispatch(event: str, args: tuple, active: list = _ACTIVE) -> None:
    # ``active`` is bound at definition: the hook still runs at interpreter exit, after the globals are gone
    for audit in active:
        if event == "open" and isinstance(args[0], str | Path) and str(args[0]).startswith(audit.root):
            audit.opened.append(str(args[0]))
        elif event == "os.scandir" and str(args[0]).startswith(audit.root):
            audit.listed.append(str(args[0]))


sys.addaudithook(_dispatch)


class _Audit:
    """Every file opened and folder listed below ``root`` while active (sys.addaudithook)."""

    def __init__(self, root: Path) -> None:
        self.root, self.opened, self.listed = str(root), [], []

    def __enter__(self) -> _Audit:
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _ACTIVE.remove(self)


@pytest.fixture
def photos(photo_folder: Path, tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    shutil.copytree(photo_folder, root)
    return root


def test_opening_a_split_opens_no_image_and_the_manifest_is_reused(photos: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    cfg = _cfg(photos)
    with _Audit(photos) as audit:
        split = open_split(cfg, "train")
    assert split.num_images == 24 and audit.opened == [] and audit.listed  # listed, not read
    location = Path(manifest.manifest_path(photos, "train"))
    assert location.is_file() and "manifest written to" in caplog.text
    assert split.sizes.tolist() == [p.stat().st_size for p in map(Path, split.files)]
    written = location.stat().st_mtime_ns
    # the default check lists again, finds the same fingerprint and leaves the manifest alone
    again = open_split(cfg, "train")
    assert again.fingerprint == split.fingerprint and location.stat().st_mtime_ns == written
    assert "as in its manifest" in caplog.text
    # manifest_check=none reads the manifest and lists nothing
    with _Audit(photos) as audit:
        trusted = open_split(_cfg(photos, "data.manifest_check=none"), "train")
    assert audit.opened == [] and audit.listed == []
    assert list(trusted.files) == list(split.files) and trusted.labels.tolist() == split.labels.tolist()


def test_a_changed_folder_is_relisted_with_one_line(photos: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    cfg = _cfg(photos)
    before = open_split(cfg, "train")
    (photos / "train" / "class0" / "000.jpg").unlink()
    shutil.copy(photos / "train" / "class1" / "001.jpg", photos / "train" / "class1" / "100.jpg")
    with (photos / "train" / "class1" / "002.jpg").open("ab") as handle:
        handle.write(b"\0" * 10)  # rewritten in place with another size: the folder's listing shows it
    caplog.clear()
    after = open_split(cfg, "train")
    lines = [r.getMessage() for r in caplog.records if "changed since its manifest" in r.getMessage()]
    assert len(lines) == 1 and "(1 added, 1 removed, 1 resized)" in lines[0]
    assert after.fingerprint != before.fingerprint and after.num_images == 24
    assert manifest.load(manifest.manifest_path(photos, "train"), photos, "train").fingerprint == after.fingerprint


def test_a_manifest_folder_of_ones_own_and_a_damaged_manifest(photos: Path, tmp_path: Path, caplog) -> None:
    folder = tmp_path / "manifests"
    split = open_split(_cfg(photos, f"data.manifest={folder}"), "train")
    assert (folder / "train.manifest.npz").is_file()
    (folder / "train.manifest.npz").write_bytes(b"not a manifest")
    again = open_split(_cfg(photos, f"data.manifest={folder}"), "train")  # re-listed, with a warning
    assert again.fingerprint == split.fingerprint and "is not an effv2 manifest" in caplog.text


def test_ranks_read_the_copy_the_launching_process_pinned(photos: Path, tmp_path: Path) -> None:
    cfg = _cfg(photos)
    pin_splits(cfg, ["train", "val"], tmp_path, node=1)
    with _Audit(photos) as audit:
        split = open_split(cfg, "train", run_dir=tmp_path, node=1)
    assert audit.opened == [] and audit.listed == [] and split.num_images == 24
    # the folder and its cached manifest change under the running job: its ranks keep the pinned copy
    (photos / "train" / "class0" / "000.jpg").unlink()
    assert open_split(cfg, "train").num_images == 23
    assert open_split(cfg, "train", run_dir=tmp_path, node=1).fingerprint == split.fingerprint
    assert sorted(p.name for p in (tmp_path / "manifests").iterdir()) == [
        "node1.json",
        f"train.node1{manifest.SUFFIX}",
        f"val.node1{manifest.SUFFIX}",
    ]
    pinned = tmp_path / "manifests" / f"train.node1{manifest.SUFFIX}"
    pinned.write_bytes(manifest.encode(open_split(cfg, "train")))
    with pytest.raises(UserError, match="changed after the job started"):
        open_split(cfg, "train", run_dir=tmp_path, node=1)


def test_a_manifest_of_another_split_is_not_taken_for_this_one(photos: Path, tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    open_split(_cfg(photos, f"data.manifest={folder}"), "train")
    other = tmp_path / "other"
    shutil.copytree(photos, other)
    (other / "train" / "class0" / "000.jpg").unlink()
    with pytest.raises(UserError, match=r"is the manifest of .*photos/train, not of .*other/train"):
        open_split(_cfg(other, f"data.manifest={folder}", "data.manifest_check=none"), "train")
    assert open_split(_cfg(other, f"data.manifest={folder}"), "train").num_images == 23  # listed again


def test_a_manifest_of_imagenets_size_loads_within_a_bound(tmp_path: Path) -> None:
    """A synthetic 1,281,167-entry manifest, written and loaded in a fresh process (bench_open's
    measurement, which docs/data.md quotes)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_open import manifest_rss

    measured = manifest_rss(tmp_path)
    assert measured["arrays_mib"] < 80 and measured["rss_growth_mib"] < MANIFEST_RSS_BOUND_MIB, measured


def test_a_manifest_records_the_listing(photos: Path) -> None:
    split = open_split(_cfg(photos), "val")
    data = manifest.encode(split)
    loaded = manifest.decode(data, str(photos / "val"), photos / "val", None, "x")
    assert loaded.fingerprint == split.fingerprint and list(loaded.files) == list(split.files)
    np.testing.assert_array_equal(loaded.sizes, split.sizes)
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0xFF
    with pytest.raises(UserError, match="not an effv2 manifest|is damaged"):
        manifest.decode(bytes(damaged), "", "", None, "x")
