"""Shared test setup.

MindSpore's oneDNN is 20-30x slower on AVX-512 CPUs unless the ISA is capped before mindspore
is imported, so the cap is set here, before any test module imports it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"


# The files whose tests read the suite's trained runs (the session fixtures `runs`,
# `trained_run`, `best_ckpt`, `eval_run`: about three minutes of training together) go to one
# pytest-xdist worker (pyproject: -n 2), which builds them once; every other file goes to a worker
# as a whole, its module fixtures built once (`resumable_reference`, one short run read by
# test_slurm and three other files, may be built on both workers: duplicated, not clashing).
SHARED_TRAINED_RUNS = {"test_data_parallel", "test_deploy", "test_multinode", "test_run_cli", "test_slurm"}


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    # xdist's own loadgroup marks do not reach pytest 9.2's node ids (xdist 3.8 rewrites
    # Item._nodeid, which pytest 9.2 no longer reads), so the grouping is a scheduler's scope
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "trained runs" if Path(module).stem in SHARED_TRAINED_RUNS else module

    return SharedFixtureScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def _mindspore_on_cpu() -> None:
    """The device is fixed once per process, before any test runs a kernel."""
    import mindspore as ms

    ms.set_device("CPU")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tests materialise the digits into their own cache, never the user's."""
    cache = tmp_path_factory.mktemp("effv2-cache")
    os.environ["EFFV2_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def digits_root(_cache_dir: Path) -> Path:
    from effv2.data.digits import materialise_digits

    return materialise_digits()


@pytest.fixture(scope="session")
def tiny_folder(digits_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of real digits small enough for runs that are all compile and no epoch:
    10 classes, 8 training and 3 validation images each."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    for split, count in (("train", 8), ("val", 3)):
        for class_dir in sorted((digits_root / split).iterdir()):
            target = root / split / class_dir.name
            target.mkdir(parents=True)
            for image in sorted(class_dir.iterdir())[:count]:
                shutil.copy(image, target / image.name)
    return root


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of real photographs as JPEGs at ImageNet-like sizes (crops of the two photos
    scikit-learn ships, 120-427 x 120-640 px, quality 70-95; 4:2:0, 4:4:4 and progressive files):
    2 classes, 12 training and 4 validation images each."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("photos") / "data"
    for split, count in (("train", 12), ("val", 4)):
        for label in range(2):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for index in range(count):
                photo = photos[(index + label) % 2]
                height, width = int(rng.integers(120, 428)), int(rng.integers(120, 641))
                top, left = int(rng.integers(0, 428 - height)), int(rng.integers(0, 641 - width))
                options = ({}, {"subsampling": 0}, {"progressive": True})[index % 3]
                Image.fromarray(photo[top : top + height, left : left + width]).save(
                    folder / f"{index:03d}.jpg", quality=int(rng.integers(70, 96)), **options
                )
    return root


def tiny_data(root: Path, batch_size: int = 16, model: str = "effnetv2_micro") -> tuple[str, ...]:
    """Overrides that train ``model`` (by default the micro network: every block kind, compiles in
    seconds) on :func:`tiny_folder` at 32 px (80 training images)."""
    return (
        f"model={model}", "data=imagefolder", f"data.root={root}", "data.num_classes=10",
        f"data.batch_size={batch_size}", "data.train_size=32", "data.eval_size=32", "data.train_crop=squash",
        "data.eval_crop=squash",
        "data.hflip_prob=0",
    )  # fmt: skip


def resumable(root: Path) -> tuple[str, ...]:
    """A short run for the interrupt-and-resume tests: 3 epochs of 10 steps on :func:`tiny_folder`
    with random-resized crops, flips and RandAugment (all keyed per image), EMA, a recovery
    checkpoint every 7 steps."""
    return (
        *tiny_data(root, batch_size=8), "train.epochs=3", "train.ema.enabled=true", "train.ema.decay=0.99",
        "train.checkpoint.recovery_interval=7", "data.train_crop=random_resized_crop", "data.hflip_prob=0.5",
        "data.augment.randaug_layers=2", "data.augment.randaug_magnitude=15",
    )  # fmt: skip


@pytest.fixture(scope="session")
def resumable_reference(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of one uninterrupted :func:`resumable` run."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = run_cli(*resumable(tiny_folder), f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def killed_after_first_recovery(overrides: tuple[str, ...], run_dir: Path, jitter_s: float = 0.0) -> Path:
    """Start ``python run.py <overrides>`` in ``run_dir``, SIGKILL it once its first recovery
    checkpoint exists (plus up to ``jitter_s`` seconds), and check it died before finishing."""
    import random
    import time

    proc = subprocess.Popen([sys.executable, "run.py", *overrides, f"hydra.run.dir={run_dir}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())  # fmt: skip
    recovery = run_dir / "checkpoints" / "recovery.ckpt"
    deadline = time.monotonic() + 300
    while not recovery.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(random.uniform(0.0, jitter_s))
    proc.kill()
    proc.wait()
    assert recovery.exists(), "the run never wrote a recovery checkpoint"
    assert not (run_dir / "metrics.json").exists(), "the run finished before it could be killed"
    return run_dir


def sigterm_once_logged(overrides: tuple[str, ...], run_dir: Path, text: str, timeout: float = 300) -> int:
    """``python run.py <overrides>`` in ``run_dir``, sent SIGTERM as soon as its run.log shows
    ``text`` (honoured after the step in progress); its exit status."""
    proc = subprocess.Popen(
        [sys.executable, "run.py", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(),
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    log = run_dir / "run.log"
    while proc.poll() is None and time.monotonic() < deadline:
        if log.exists() and text in log.read_text():
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    return proc.wait(timeout=timeout)


def run_cli(*overrides: str, timeout: float = 600, unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``python run.py <overrides>`` as a real subprocess with the same interpreter."""
    env = {key: value for key, value in os.environ.items() if key not in unset}
    return subprocess.run(
        [sys.executable, "run.py", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, "HYDRA_FULL_ERROR": "0"},
    )


def one_line_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """The single "error:" line of a failed run; fails the test on a traceback or more lines."""
    assert result.returncode == code, (result.stdout + result.stderr)[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return errors[0]


# a tiny but complete training run: 2 epochs at 32 px, EMA, a recovery checkpoint every 7 steps
TINY_TRAIN = (
    "train.epochs=2",
    "data.train_size=32",
    "data.eval_size=32",
    "train.ema.enabled=true",
    "train.ema.decay=0.99",
    "train.checkpoint.recovery_interval=7",
    # MindSpore's own operators: the stock CPU path end to end (the rest of the suite runs effv2's
    # kernels, the default), and the checkpoint the export, INT8 and inference tests were set on
    "hardware.cpu_kernels=false",
)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(run folder, stdout) of one uninterrupted TINY_TRAIN run, shared by the tests that read it."""
    run_dir = tmp_path_factory.mktemp("train") / "run"
    # without the oneDNN cap in the environment: hardware=cpu must apply it itself
    result = run_cli(*TINY_TRAIN, f"hydra.run.dir={run_dir}", unset=("ONEDNN_MAX_CPU_ISA",))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result.stdout


@pytest.fixture(scope="session")
def best_ckpt(trained_run: tuple[Path, str]) -> Path:
    return trained_run[0] / "checkpoints" / "best.ckpt"


EVAL_32PX = "data.eval_size=32"


# the trackers that keep an eval / export / infer run's result (tests/test_deploy.py reads them)
TASK_LOGGERS = "logger=[csv,tensorboard,mlflow]"


@pytest.fixture(scope="session")
def eval_run(best_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of :func:`best_ckpt` through ``task=eval`` in one process, to every logger."""
    run_dir = tmp_path_factory.mktemp("eval")
    result = run_cli("task=eval", EVAL_32PX, f"ckpt={best_ckpt}", TASK_LOGGERS, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


@pytest.fixture(scope="session")
def eval_top1(eval_run: Path) -> float:
    """val top-1 of :func:`best_ckpt` through ``task=eval`` in one process."""
    return json.loads((eval_run / "metrics.json").read_text())["val_top1"]


# every logger, the per-step scalars at each optimizer step
ALL_LOGGERS = ("logger=[csv,tensorboard,mlflow]", "logger.tensorboard.log_every_n_steps=1")


def check_logged_history(run_dir: Path, epochs: int, steps_per_epoch: int, run_id: str | None = None) -> str:
    """The TensorBoard events and the MLflow run of a finished (maybe resumed) run, read back with
    TensorBoard's own reader and ``MlflowClient``: every step and epoch exactly once. Returns the
    MLflow run id (``run_id``: the one the run must have continued)."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    last = epochs * steps_per_epoch
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, last + 1))
    assert [e.step for e in events.Scalars("epoch/val_top1")] == list(range(steps_per_epoch, last + 1, steps_per_epoch))
    assert "config" in events.Tags()["tensors"] or "config/text_summary" in events.Tags()["tensors"]

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("effv2").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    if run_id is not None:
        assert run.info.run_id == run_id
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val_top1")
    assert sorted(m.step for m in history) == list(range(steps_per_epoch, last + 1, steps_per_epoch))
    assert run.data.params["model.name"] == "effnetv2_micro" and run.data.tags["variant"] == "effnetv2_micro"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"curves.png", "metrics.json"}
    return run.info.run_id


def mlflow_run_of(run_dir: Path) -> tuple[str, str]:
    """(run id, status) of the single MLflow run in ``run_dir``'s store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("effv2").experiment_id])
    return run.info.run_id, run.info.status


# the data-parallel equivalence: per-device batch 32, so 80 training images give one step of 64
# per epoch and drop 16; drop_path 0.2 and the head dropout 0.2 (the micro network's) are on
BATCH = 32
ONE_PROCESS = ("hardware=cpu", "train.accumulation_steps=2")
TWO_RANKS = ("hardware=cpu_2p",)
COMMON = ("scheduler=constant", "optimizer=rmsprop", "data.record_reads=true", "train.checkpoint.keep_top_k=5")


@pytest.fixture(scope="session")
def runs(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The data-parallel runs (tests/test_data_parallel.py, test_multinode.py): two epochs on one
    process (accumulation 2) and on two ranks, then each resumed for a third epoch on the other."""
    base = tmp_path_factory.mktemp("dp")
    plan = {
        "one": (*ONE_PROCESS, "train.epochs=2"),
        "two": (*TWO_RANKS, "hardware.master_port=8161", "train.epochs=2"),
        "two_then_one": (*ONE_PROCESS, "train.epochs=3", f"resume={base / 'two'}"),
        "one_then_two": (*TWO_RANKS, "hardware.master_port=8162", "train.epochs=3", f"resume={base / 'one'}"),
    }
    for name, overrides in plan.items():
        result = run_cli(*tiny_data(tiny_folder, BATCH), *COMMON, *overrides, f"hydra.run.dir={base / name}")
        assert result.returncode == 0, f"{name}: {(result.stdout + result.stderr)[-3000:]}"
    return {name: base / name for name in plan}
