"""Remote storage against a real S3 protocol server (moto's, on 127.0.0.1): training data read
from s3://, the run folder mirrored to s3://, a run killed and resumed from its s3:// folder on a
clean local directory, remote inputs of every task, failures in one line, no secret written."""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from conftest import (
    ALL_LOGGERS,
    REPO,
    check_logged_history,
    killed_after_first_recovery,
    one_line_error,
    resumable,
    run_cli,
)  # fmt: skip
from effv2.errors import UserError

# given to the runs only through the environment: it must appear in none of their files
SECRET = "effv2-test-secret-7f3a91c2"


@pytest.fixture(scope="module")
def s3(tiny_folder: Path) -> Iterator:
    """A moto S3 server with bucket effv2-data holding tiny_folder under tiny/, and an empty
    bucket effv2-runs; the credentials and endpoint are in the environment, as a user sets them."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = dict(os.environ)
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="effv2-test-key",
        AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
    )  # fmt: skip
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    for bucket in ("effv2-data", "effv2-runs"):
        fs.mkdir(bucket)
    fs.put(f"{tiny_folder}/", "effv2-data/tiny", recursive=True)
    yield fs
    os.environ.clear()
    os.environ.update(saved)
    server.stop()


def _remote_overrides(tiny_folder: Path, remote_run: str) -> tuple[str, ...]:
    local = f"data.root={tiny_folder}"
    return (
        *(o if o != local else "data.root=s3://effv2-data/tiny" for o in resumable(tiny_folder)),
        *ALL_LOGGERS, f"output.remote={remote_run}", "output.sync_interval=1",
    )  # fmt: skip


@pytest.fixture(scope="module")
def resumed_from_s3(s3, resumable_reference: Path, tiny_folder: Path, tmp_path_factory) -> tuple[Path, str]:
    """A run on s3:// data, mirrored to s3://, SIGKILLed after its first recovery checkpoint
    reached the bucket, its local folder deleted, resumed from s3://effv2-runs/killed into a new
    local folder. Returns (that folder, the resumed run's output)."""
    base = tmp_path_factory.mktemp("remote")
    killed = base / "killed"
    overrides = _remote_overrides(tiny_folder, "s3://effv2-runs/killed")
    proc = subprocess.Popen(
        [sys.executable, "run.py", *overrides, f"hydra.run.dir={killed}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(),
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        s3.invalidate_cache()
        if s3.exists("effv2-runs/killed/checkpoints/recovery.ckpt"):
            break
        time.sleep(0.3)
    time.sleep(random.uniform(0.0, 1.5))
    proc.kill()
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    shutil.rmtree(killed)  # a fresh machine: only the bucket remains

    resumed = base / "resumed"
    result = run_cli(
        *_remote_overrides(tiny_folder, "s3://effv2-runs/resumed"), "resume=s3://effv2-runs/killed",
        f"hydra.run.dir={resumed}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return resumed, result.stdout + result.stderr


def test_killed_run_resumed_from_s3_equals_the_uninterrupted_run(
    resumed_from_s3: tuple[Path, str], resumable_reference: Path, s3
) -> None:
    resumed, output = resumed_from_s3
    expected = ms.load_checkpoint(str(resumable_reference / "checkpoints" / "last.ckpt"))
    actual = ms.load_checkpoint(str(resumed / "checkpoints" / "last.ckpt"))
    assert set(expected) == set(actual)
    for name in sorted(set(expected) - {"effv2_meta"}):
        np.testing.assert_array_equal(actual[name].asnumpy(), expected[name].asnumpy(), err_msg=name)
    # the loggers continued the killed run's history: each step once, one MLflow run
    check_logged_history(resumed, epochs=3, steps_per_epoch=10)
    # the mirror: the whole folder, checkpoints under their names only, both places named
    s3.invalidate_cache()
    remote = {p.removeprefix("effv2-runs/resumed/") for p in s3.find("effv2-runs/resumed")}
    local = {p.relative_to(resumed).as_posix() for p in resumed.rglob("*") if p.is_file()}
    assert remote == local
    assert {"checkpoints/last.ckpt", "metrics.csv", ".hydra/config.yaml", "run.log"} <= remote
    assert s3.cat_file("effv2-runs/resumed/checkpoints/last.ckpt") == (resumed / "checkpoints/last.ckpt").read_bytes()
    assert f"run folder {resumed} mirrored to s3://effv2-runs/resumed" in output


def test_no_secret_in_any_file_local_or_mirrored(resumed_from_s3: tuple[Path, str], s3) -> None:
    resumed, output = resumed_from_s3
    assert SECRET not in output
    for path in resumed.rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
    s3.invalidate_cache()
    for key in s3.find("effv2-runs"):
        assert SECRET.encode() not in s3.cat_file(key), key


def test_eval_reads_checkpoint_and_data_from_s3(resumed_from_s3: tuple[Path, str], tmp_path: Path) -> None:
    resumed, _ = resumed_from_s3
    result = run_cli(
        "task=eval", "model=effnetv2_micro", "data=imagefolder", "data.root=s3://effv2-data/tiny",
        "data.num_classes=10", "data.eval_size=32", "data.eval_crop=squash", "data.remote_cache=true",
        "ckpt=s3://effv2-runs/resumed/checkpoints/last.ckpt", f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    scored = json.loads((tmp_path / "metrics.json").read_text())
    recorded = ms.load_checkpoint(str(resumed / "checkpoints" / "last.ckpt"))
    meta = json.loads(str(recorded["effv2_meta"]))
    assert scored["images"] == 30
    assert scored["val_top1"] == meta["metrics"]["ema_val_top1"]  # EMA weights, the same 30 images


def test_remote_inputs_of_every_task_are_fetched(s3, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from effv2.storage.remote_inputs import with_local_inputs

    s3.pipe({
        "effv2-runs/inputs/model.ckpt": b"ckpt", "effv2-runs/inputs/tf/model.index": b"index",
        "effv2-runs/inputs/tf/model.data-00000-of-00001": b"data", "effv2-runs/inputs/tf/other.index": b"other",
        "effv2-runs/inputs/export/m.onnx": b"onnx", "effv2-runs/inputs/export/m.export.json": b"{}",
        "effv2-runs/inputs/export/m.classes.json": b"[]", "effv2-runs/inputs/export/m2.onnx": b"not this",
        "effv2-runs/inputs/run/checkpoints/last.ckpt": b"last",
    })  # fmt: skip
    cfg = OmegaConf.create({
        "ckpt": "s3://effv2-runs/inputs/model.ckpt", "resume": "s3://effv2-runs/inputs/run",
        "model": {"pretrained": None}, "convert": {"source": "s3://effv2-runs/inputs/tf/model"},
        "infer": {"model": "s3://effv2-runs/inputs/export/m.onnx", "input": "s3://effv2-data/tiny/val/3"},
    })  # fmt: skip
    infer = with_local_inputs(cfg, "infer")
    assert Path(infer.ckpt).read_bytes() == b"ckpt"
    model = Path(infer.infer.model)
    assert sorted(p.name for p in model.parent.iterdir()) == ["m.classes.json", "m.export.json", "m.onnx"]
    assert sorted(p.name for p in Path(infer.infer.input).iterdir()) == sorted(
        p.rsplit("/", 1)[-1] for p in s3.find("effv2-data/tiny/val/3")
    )
    source = Path(with_local_inputs(cfg, "convert").convert.source)
    assert sorted(p.name for p in source.parent.iterdir()) == ["model.data-00000-of-00001", "model.index"]
    resume = Path(with_local_inputs(cfg, "train").resume)
    assert (resume / "checkpoints" / "last.ckpt").read_bytes() == b"last"
    assert cfg.ckpt.startswith("s3://"), "the config itself keeps the URL"

    with pytest.raises(UserError, match=r"^ckpt='s3://effv2-runs/inputs/missing.ckpt' does not exist$"):
        with_local_inputs(OmegaConf.create({"ckpt": "s3://effv2-runs/inputs/missing.ckpt"}), "eval")
    with pytest.raises(UserError, match=r"gs:// needs an fsspec backend that is not installed.*effv2\[remote\]"):
        with_local_inputs(OmegaConf.create({"ckpt": "gs://bucket/model.ckpt"}), "eval")


def test_mirror_moves_checkpoints_into_place_and_survives_a_broken_remote(s3, tmp_path: Path, caplog) -> None:
    from effv2.storage.mirror import RunMirror

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch\n1\n")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (run / "checkpoints" / ".last.123.tmp.ckpt").write_bytes(b"half")
    mirror = RunMirror(run, "s3://effv2-runs/mirror", interval=3600, retries=0)
    mirror.sync()
    s3.invalidate_cache()
    assert sorted(s3.find("effv2-runs/mirror")) == [
        "effv2-runs/mirror/checkpoints/last.ckpt",
        "effv2-runs/mirror/metrics.csv",
    ]
    (run / "checkpoints" / "last.ckpt").unlink()
    mirror.sync()
    s3.invalidate_cache()
    assert s3.find("effv2-runs/mirror") == ["effv2-runs/mirror/metrics.csv"]

    caplog.set_level(logging.WARNING)
    broken = RunMirror(run, "s3://effv2-no-such-bucket/run", interval=3600, retries=1)
    with broken:  # the training goes on: nothing is raised
        (run / "curves.png").write_bytes(b"png")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert broken.failed == 2 and len(warnings) == 2  # metrics.csv and curves.png
    assert all("failed after 2 tries" in w and "the local copy remains" in w for w in warnings)
    assert all("\n" not in w for w in warnings)


def test_a_missing_remote_data_root_is_one_line(s3, tmp_path: Path) -> None:
    result = run_cli(
        "data=imagefolder", "data.root=s3://effv2-data/nothing-here", "data.num_classes=10", "train.epochs=1",
        f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert "is not a folder" in one_line_error(result)


def test_mindrecord_shards_on_s3_train_and_resume_as_the_folder_does(
    s3, resumable_reference: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """tiny_folder packed straight into s3://, trained from there (whole shards fetched, kept with
    data.remote_cache), SIGKILLed after its first recovery checkpoint and resumed: the weights of
    the uninterrupted run on the folder, bit for bit."""
    packed = subprocess.run(
        [sys.executable, "-m", "effv2.data.pack", str(tiny_folder), "s3://effv2-data/packed", "--shard-size", "4kB"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ.copy(),
    )  # fmt: skip
    assert packed.returncode == 0, packed.stderr[-2000:]
    s3.invalidate_cache()
    assert len(s3.glob("effv2-data/packed/train/*.mindrecord")) > 1 and s3.exists("effv2-data/packed/train/pack.json")
    local = f"data.root={tiny_folder}"
    overrides = (
        *(o if o != local else "data.root=s3://effv2-data/packed" for o in resumable(tiny_folder)),
        "data.format=mindrecord", "data.remote_cache=true",
    )  # fmt: skip
    killed = killed_after_first_recovery(overrides, tmp_path / "killed")
    result = run_cli(*overrides, f"resume={killed}", f"hydra.run.dir={tmp_path / 'resumed'}")
    assert result.returncode == 0, result.stderr[-3000:]
    log_text = (tmp_path / "resumed" / "run.log").read_text()
    assert "fetched 0.0 MB of shards" in log_text  # the cache kept what the killed run fetched
    expected = ms.load_checkpoint(str(resumable_reference / "checkpoints" / "last.ckpt"))
    actual = ms.load_checkpoint(str(tmp_path / "resumed" / "checkpoints" / "last.ckpt"))
    for name in sorted(set(expected) - {"effv2_meta"}):
        np.testing.assert_array_equal(actual[name].asnumpy(), expected[name].asnumpy(), err_msg=name)


def test_a_manifest_on_s3_is_written_once_and_read_without_listing(s3, tiny_folder: Path) -> None:
    from effv2.config.schema import ManifestCheck
    from effv2.data import manifest

    s3.put(f"{tiny_folder}/train/", "effv2-data/listed/train", recursive=True)
    root, folder = "s3://effv2-data/listed", "s3://effv2-runs/manifests"
    listed = manifest.open_split(root, "train", folder)[0]
    s3.invalidate_cache()
    assert listed.num_images == 80 and s3.exists("effv2-runs/manifests/train.manifest.npz")
    assert listed.sizes.tolist() == [s3.info(p.removeprefix("s3://"))["size"] for p in listed.files]
    s3.rm("effv2-data/listed/train/0", recursive=True)  # the folder changes: a trusted manifest does not look
    trusted = manifest.open_split(root, "train", folder, ManifestCheck.none)[0]
    assert trusted.fingerprint == listed.fingerprint and trusted.files[0].startswith(f"{root}/train/")
    relisted = manifest.open_split(root, "train", folder)[0]
    assert relisted.num_images == 72 and relisted.fingerprint != listed.fingerprint
