"""SLURM sweeps: hydra-submitit-launcher's SLURM launcher, waiting for its jobs the way a sweep
needs (``conf/hydra/launcher/slurm.yaml`` names it as ``_target_``). Hydra imports this module
whenever it starts: keep its imports light.

The plugin waits for the jobs one after another and raises at the first that SLURM ended without
a result (``scancel``, a node failure, the out-of-memory killer, a time limit with no requeue):
the sweep then ends with a traceback, stops waiting for the jobs after it and writes no summary.
Here every job is waited for; one that ended without a result gets a job record (``job.json``)
naming its SLURM job, the state SLURM gives it and the command that continues it, so the summary
lists it as failed and the others as they ended. How a job ended comes from ``sacct``: the
cluster needs accounting (slurmdbd), as submitit does.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf, open_dict

from effv2.sweep.summary import JOB_RECORD

try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher
except ImportError:  # no cluster extra: then there is no launcher to extend (and no hydra/launcher=submitit_slurm)
    submitit_launcher = None

log = logging.getLogger(__name__)

SACCT_INTERVAL_S = 15.0  # how often SLURM is asked how the unfinished jobs are; results are seen within 1 s
EXECUTOR_KEYS = {"submitit_folder", "max_num_timeout"}  # taken by the executor itself, not per job


class SlurmLauncher(submitit_launcher.SlurmLauncher if submitit_launcher else object):  # type: ignore[misc]
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None
        executor = submitit.AutoExecutor(
            cluster="slurm", folder=self.params["submitit_folder"],
            slurm_max_num_timeout=self.params.get("max_num_timeout", 0),
        )  # fmt: skip
        shared = set(OmegaConf.structured(submitit_launcher.BaseQueueConf).keys())
        executor.update_parameters(
            **{key if key in shared else f"slurm_{key}": value
               for key, value in self.params.items() if key not in EXECUTOR_KEYS}
        )  # fmt: skip
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("Submitit 'slurm' sweep output dir : %s", sweep_dir)
        numbers = [initial_job_idx + offset for offset in range(len(job_overrides))]
        for number, overrides in zip(numbers, job_overrides, strict=True):
            log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
        # the plugin's own job entry point (its __call__) runs each job, with these arguments
        jobs = executor.map_array(
            self, [list(overrides) for overrides in job_overrides], ["hydra.sweep.dir"] * len(numbers), numbers,
            [f"job_id_for_{number}" for number in numbers], [Singleton.get_state()] * len(numbers),
        )  # fmt: skip
        return self._wait(jobs, numbers, [list(o) for o in job_overrides])

    def _wait(self, jobs: list[Any], numbers: list[int], overrides: list[list[str]]) -> list[JobReturn]:
        """Every job's return, in submission order, once all have ended."""
        ended: dict[int, JobReturn] = {}
        asked = time.monotonic()
        while len(ended) < len(jobs):
            ask = time.monotonic() - asked > SACCT_INTERVAL_S
            if ask:
                jobs[0].watcher.update()  # one sacct call for every job of the sweep
                asked = time.monotonic()
            for position, job in enumerate(jobs):
                if position not in ended and job.done():
                    ended[position] = self._outcome(job, numbers[position], overrides[position])
            time.sleep(1.0)
        return [ended[position] for position in range(len(jobs))]

    def _outcome(self, job: Any, number: int, overrides: list[str]) -> JobReturn:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            return job.results()[0]
        except FailedJobError as exc:  # raised outside run.py's handling (e.g. while Hydra set the job up)
            lines = [line for line in str(exc).splitlines() if line.strip()]
            how = f"raised {lines[-1].strip() if lines else 'an error'}"
        except UncompletedJobError:
            how = f"ended {(job.state or 'UNKNOWN').split()[0]} before it finished"
        # only a job that failed needs its folder (composing its config costs a config load)
        job_dir = self._job_dir(number, overrides)
        resumable = (job_dir / "checkpoints").is_dir()
        command = shlex.join(["python", "run.py", *overrides, *([f"resume={job_dir}"] if resumable else [])])
        error = f"SLURM job {job.job_id} {how}; {'continue it' if resumable else 'run it again'} with: {command}"
        log.error("error: job %d: %s", number, error)
        record_path = job_dir / JOB_RECORD
        if not record_path.is_file():  # a job that wrote its own record knows better how it ended
            job_dir.mkdir(parents=True, exist_ok=True)
            record = {"job": number, "status": "failed", "overrides": overrides, "return_value": None,
                      "wall_s": None, "error": error, "slurm_job_id": job.job_id}  # fmt: skip
            record_path.write_text(json.dumps(record, indent=2) + "\n")
        # a failed job must not end the sweep (run.py does the same for a job that raised)
        ended = JobReturn(overrides=overrides, working_dir=str(job_dir), status=JobStatus.COMPLETED)
        ended.return_value = float("nan")
        return ended

    def _job_dir(self, number: int, overrides: list[str]) -> Path:
        """The folder Hydra gives job ``number`` (hydra.sweep.dir / hydra.sweep.subdir)."""
        assert self.config is not None and self.hydra_context is not None
        job_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(job_config.hydra.job):
            job_config.hydra.job.num = number
        return Path(str(job_config.hydra.sweep.dir)) / str(job_config.hydra.sweep.subdir)
