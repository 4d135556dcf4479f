"""Stop requests: SIGTERM / SIGINT, and SLURM's time-limit warning (SIGUSR2), become a request
the loop honours after the current step, writing the recovery checkpoint (effv2.launch.slurm)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from effv2.errors import Interrupted, UserError
from effv2.launch import slurm


class StopRequests:
    def __init__(self) -> None:
        self.signal_number: int | None = None

    def _handle(self, signal_number: int, frame: object) -> None:
        self.signal_number = signal_number

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequests]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        signals = (signal.SIGTERM, signal.SIGINT, slurm.TIMEOUT_SIGNAL)
        previous = {sig: signal.signal(sig, self._handle) for sig in signals}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def interrupted(number: int, steps_done: int, epoch: int, recovery: Path, run_dir: Path, requeued: bool) -> Interrupted:
    """The error that ends a run stopped by signal ``number`` after step ``steps_done``."""
    then = "SLURM runs it again from there" if requeued else f"continue with resume={run_dir}"
    return Interrupted(
        f"{signal.Signals(number).name} received: stopped after step {steps_done} (epoch {epoch}) and wrote "
        f"{recovery}; {then}",
        number,
    )


def diverged(loss: float, step: int, epoch: int, last_good: Path) -> UserError:
    """The error that ends a run whose loss became ``loss`` (inf / NaN) at step ``step`` (1-based)."""
    where = f"the last good checkpoint is {last_good}" if last_good.exists() else "no checkpoint was written yet"
    return UserError(
        f"training loss became {loss} at step {step} (epoch {epoch}); {where}. "
        "Lower optimizer.lr, set train.clip_grad_norm, or use train.loss_scale.kind=dynamic"
    )
