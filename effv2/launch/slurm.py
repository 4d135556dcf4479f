"""Running under SLURM: preemption, time limits and requeueing, the way Lightning's SLURM
auto-requeue works.

SLURM warns a job before it ends it: ``--signal=USR2@<s>`` before the time limit (the Hydra launcher
config sets it, ``hydra.launcher.signal_delay_s``), SIGTERM when it preempts or requeues it
(``scontrol requeue``). Training treats both like Ctrl-C: the step in progress finishes, the
recovery checkpoint is written, the process exits. After USR2 the job asks SLURM to requeue it
(SIGTERM means SLURM is already doing so). When SLURM starts a requeued job again
(``SLURM_RESTART_COUNT`` > 0) in a run folder that holds a checkpoint, training resumes from it
as if ``resume=<run folder>`` had been given.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

# SLURM's warning before the time limit (submitit's default, hydra.launcher.signal_delay_s)
TIMEOUT_SIGNAL = signal.SIGUSR2


def job_id() -> str | None:
    """The job as squeue shows it and scancel / scontrol take it: ``<array job>_<task>`` for a
    task of a job array (each job of a sweep), else the job id. (SLURM 22.05's scancel silently
    ignores the numeric id of an array task other than the array's own.)"""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    return os.environ.get("SLURM_JOB_ID")


def log_job() -> None:
    """Say in the run's log which SLURM job this is."""
    if job_id() is None:
        return
    number = f" (job id {os.environ['SLURM_JOB_ID']})" if os.environ.get("SLURM_ARRAY_JOB_ID") else ""
    log.info("SLURM job %s%s on %s, restart %d", job_id(), number, os.environ.get("SLURMD_NODENAME", "?"),
             restart_count())  # fmt: skip


def restart_count() -> int:
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def requeued_resume(run_dir: Path) -> str | None:
    """``run_dir`` when this is a requeued SLURM job whose run folder holds a checkpoint."""
    from effv2.checkpoints import LAST, RECOVERY

    if restart_count() == 0 or not any((run_dir / "checkpoints" / name).is_file() for name in (LAST, RECOVERY)):
        return None
    log.info("SLURM restarted job %s (restart %d): resuming from %s", job_id(), restart_count(), run_dir)
    return str(run_dir)


def requeue_after(signal_number: int) -> bool:
    """After SLURM's time-limit warning, ask SLURM to run the job again; True if it was asked."""
    if job_id() is None or signal_number != TIMEOUT_SIGNAL:
        return False
    result = subprocess.run(["scontrol", "requeue", job_id()], capture_output=True, text=True)
    if result.returncode != 0:
        log.warning("could not requeue SLURM job %s: %s", job_id(), result.stderr.strip())
        return False
    log.info("requeued SLURM job %s: it continues from the recovery checkpoint when it runs again", job_id())
    return True
