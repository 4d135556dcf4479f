"""Stop requests: SIGTERM / SIGINT, and SLURM's time-limit warning (SIGUSR2), become a request
the loop honours after the current step, writing the recovery checkpoint (effv2.launch.slurm)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

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
