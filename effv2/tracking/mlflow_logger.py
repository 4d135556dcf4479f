"""logger=mlflow: one MLflow run per training, eval, export or infer run, through ``MlflowClient``
(no global state).

Params are the flattened composed config, metrics the epoch rows at their global step (a task's
result at step 0, its own params as ``<task>.<name>``, its report as an artifact), tags the task,
checkpoint, variant, hardware, experiment option, data and run folder; curves.png, metrics.json and
optionally best.ckpt become artifacts when the run ends. The store is ``logger.mlflow.tracking_uri``,
else ``$MLFLOW_TRACKING_URI``, else SQLite in the run folder (``mlflow/``; in a multirun the sweep
folder's, so the jobs are runs of one experiment named after the sweep). A resumed run continues
the same run id: in the store it was written to, or, for a run-folder store, in a copy of it
moved into the new run folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from effv2.config.schema import MLflowLoggerConfig
from effv2.tracking.base import Logger, ResumePoint, RunContext, RunStatus, TaskResult, numeric, require

STORE_FOLDER = "mlflow"
DEFAULT_EXPERIMENT = "effv2"
_PARAMS_PER_CALL = 100  # MLflow's limit of params per log_batch
_PARAM_LENGTH = 6000  # and of a param value's length


def _store_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def relocate_store(source: Path, recorded: Path, target: Path) -> None:
    """Copy a run-folder store (``source``, first written at ``recorded``) to ``target``; its
    database holds absolute artifact locations, which move along."""
    shutil.copytree(source, target, dirs_exist_ok=True)
    old, new = (recorded / "artifacts").as_uri(), (target / "artifacts").as_uri()
    with sqlite3.connect(target / "mlflow.db") as db:
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (old, new))
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (old, new))


def purge_after(store: Path, run_id: str, step: int) -> int:
    """Delete the metric values of ``run_id`` logged after ``step`` in a run-folder store, and
    recompute the latest values MLflow shows. A killed run can log an epoch's metrics after its
    last surviving checkpoint; the resumed run logs them again, so they would appear twice (MLflow
    has no purge of its own; TensorBoard's is ``purge_step``). Returns the rows deleted."""
    with sqlite3.connect(store / "mlflow.db") as db:
        removed = db.execute("DELETE FROM metrics WHERE run_uuid = ? AND step > ?", (run_id, step)).rowcount
        if removed:
            db.execute("DELETE FROM latest_metrics WHERE run_uuid = ?", (run_id,))
            # MLflow's latest value: the highest step, then the newest timestamp, then the largest value
            db.execute(
                """INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)
                SELECT key, value, timestamp, step, is_nan, run_uuid FROM metrics AS m
                WHERE run_uuid = ? AND NOT EXISTS (
                    SELECT 1 FROM metrics AS n WHERE n.run_uuid = m.run_uuid AND n.key = m.key AND (
                        n.step > m.step OR (n.step = m.step AND (
                            n.timestamp > m.timestamp OR (n.timestamp = m.timestamp AND n.value > m.value)))))""",
                (run_id,),
            )
    return removed


class MLflowLogger(Logger):
    name = "mlflow"

    def __init__(self, cfg: MLflowLoggerConfig, context: RunContext) -> None:
        self.context = context
        self.log_best_checkpoint = cfg.log_best_checkpoint
        store_home = context.sweep_dir or context.run_dir
        self.store_folder: Path | None = None
        self.tracking_uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not self.tracking_uri:
            self.store_folder = store_home / STORE_FOLDER
            self.tracking_uri = _store_uri(self.store_folder)
        default_name = context.sweep_dir.name if context.sweep_dir else DEFAULT_EXPERIMENT
        self.experiment = cfg.experiment or default_name
        self.run_id: str | None = None
        self.client: Any = None
        self.last_step = 0

    def adopt(self, point: ResumePoint) -> None:
        previous = point.state.get(self.name)
        if not previous:
            return
        self.run_id = previous["run_id"]
        self.experiment = previous["experiment"]
        old_folder = previous.get("store_folder")
        if self.store_folder is not None and old_folder and not self.context.multirun:
            # the store lived in the interrupted run's folder: it moves into this one
            source = point.run_dir / STORE_FOLDER
            if source.is_dir() and source.resolve() != self.store_folder.resolve():
                relocate_store(source, Path(old_folder), self.store_folder)
            if (self.store_folder / "mlflow.db").is_file():
                purge_after(self.store_folder, self.run_id, point.global_step)
        elif self.store_folder is not None:
            self.tracking_uri = previous["tracking_uri"]  # another shared store: continue there
            self.store_folder = Path(old_folder) if old_folder else None

    @contextlib.contextmanager
    def _store_lock(self) -> Iterator[None]:
        """Jobs of a sweep running in parallel share the sweep's store: one at a time opens it
        (creating its tables) and the experiment."""
        if self.store_folder is None:
            yield
            return
        (self.store_folder / "artifacts").mkdir(parents=True, exist_ok=True)
        with (self.store_folder / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def start(self) -> None:
        tracking = require("mlflow.tracking", self.name)
        with self._store_lock():
            self.client = tracking.MlflowClient(self.tracking_uri)  # creates a new store's tables
            if self.run_id is not None:
                self.client.update_run(self.run_id, status="RUNNING")
                return
            experiment = self.client.get_experiment_by_name(self.experiment)
            if experiment is not None:
                experiment_id = experiment.experiment_id
            else:
                location = (self.store_folder / "artifacts").as_uri() if self.store_folder else None
                experiment_id = self.client.create_experiment(self.experiment, artifact_location=location)
        run = self.client.create_run(experiment_id, run_name=self.context.job_name, tags=self.context.tags)
        self.run_id = run.info.run_id
        self._log_params()

    def _log_params(self) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:_PARAM_LENGTH]) for k, v in self.context.flat_config.items()]
        for first in range(0, len(params), _PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[first : first + _PARAMS_PER_CALL])

    def _log_metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def log_epoch(self, step: int, row: dict[str, Any]) -> None:
        self._log_metrics(step, numeric(row))
        self.last_step = step

    def log_result(self, result: TaskResult) -> None:
        from mlflow.entities import Param

        params = [Param(f"{result.task}.{k}", str(v)[:_PARAM_LENGTH]) for k, v in result.params.items()]
        for first in range(0, len(params), _PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[first : first + _PARAMS_PER_CALL])
        self._log_metrics(0, result.metrics)
        for path in result.artifacts:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))

    def state(self) -> dict[str, Any]:
        if self.run_id is None:
            return {}
        store = str(self.store_folder) if self.store_folder else None
        return {
            self.name: {
                "run_id": self.run_id,
                "experiment": self.experiment,
                "tracking_uri": self.tracking_uri,
                "store_folder": store,
            }
        }

    def finish(self, final: dict[str, Any] | None, status: RunStatus) -> None:
        if self.client is None or self.run_id is None:
            return
        run_dir = self.context.run_dir
        if final is not None:
            self._log_metrics(self.last_step, {f"final_{k}": v for k, v in numeric(final).items()})
            artifacts = [run_dir / "curves.png", run_dir / "metrics.json"]
            if self.log_best_checkpoint:
                artifacts.append(run_dir / "checkpoints" / "best.ckpt")
            for path in artifacts:
                if path.is_file():
                    self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status=status.value)
