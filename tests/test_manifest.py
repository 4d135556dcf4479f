"""Opening a split lists it and opens no image; its manifest is reused, re-listed when the folder
changed, pinned for the ranks of a job, and small at ImageNet's size."""

from __future__ import annotations

import logging
import shutil
import subprocess
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
# briefly hold the file's bytes as well (measured in benchmarks/bench_data.py)
MANIFEST_RSS_BOUND_MIB = 300


def _cfg(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=["data=imagefolder", f"data.root={root}", "data.num_classes=2", *overrides],
        ).data


class _Audit:
    """Every file opened and folder listed below ``root`` while active (sys.addaudithook)."""

    hooked: list[_Audit] = []

    def __init__(self, root: Path) -> None:
        self.root, self.opened, self.listed = str(root), [], []
        if not _Audit.hooked:
            sys.addaudithook(_Audit._dispatch)
        _Audit.hooked.append(self)

    @staticmethod
    def _dispatch(event: str, args: tuple) -> None:
        for audit in _Audit.hooked:
            if event == "open" and isinstance(args[0], str | Path) and str(args[0]).startswith(audit.root):
                audit.opened.append(str(args[0]))
            elif event == "os.scandir" and str(args[0]).startswith(audit.root):
                audit.listed.append(str(args[0]))

    def __enter__(self) -> _Audit:
        return self

    def __exit__(self, *exc: object) -> None:
        _Audit.hooked.remove(self)


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


def test_ranks_read_the_manifest_the_launching_process_pinned(photos: Path, tmp_path: Path) -> None:
    cfg = _cfg(photos)
    pin_splits(cfg, ["train", "val"], tmp_path)
    with _Audit(photos) as audit:
        split = open_split(cfg, "train", run_dir=tmp_path)
    assert audit.opened == [] and audit.listed == [] and split.num_images == 24
    # the manifest rewritten under the job (another run re-listed a changed folder): stop, say so
    (photos / "train" / "class0" / "000.jpg").unlink()
    open_split(cfg, "train")
    with pytest.raises(UserError, match="changed or vanished after the job started"):
        open_split(cfg, "train", run_dir=tmp_path)


def test_a_manifest_of_imagenets_size_loads_within_a_bound(tmp_path: Path) -> None:
    code = f"""
import gc
import numpy as np
from effv2.data import manifest
from effv2.data.file_table import FileTable
from effv2.data.split import ImageSplit, listing_fingerprint
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024
count = 1_281_167
names = tuple(f"n{{c:08d}}" for c in range(1000))
files = FileTable("/x", (f"{{names[i // 1282]}}/{{names[i // 1282]}}_{{i}}.JPEG" for i in range(count)))
labels = (np.arange(count) // 1282).astype(np.int32)
sizes = np.full(count, 110_000, np.int64)
split = ImageSplit("/x", names, files, labels, sizes, listing_fingerprint(names, files, labels, sizes))
manifest.write(split, "{tmp_path}/train.manifest.npz")
del split, files, labels, sizes
gc.collect()
base = rss()
loaded = manifest.load("{tmp_path}/train.manifest.npz", "/data/imagenet", "train")
gc.collect()
assert loaded.num_images == count and loaded.files[-1].endswith("_1281166.JPEG")
print(rss() - base, loaded.nbytes() / 2**20)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    grown, held = (float(v) for v in result.stdout.split())
    assert held < 80 and grown < MANIFEST_RSS_BOUND_MIB, (grown, held)


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
