"""Exceptions that reach the user as a single line instead of a traceback."""


class UserError(Exception):
    """Bad input or an unavailable feature: the message names the value and what is accepted."""

    exit_code = 2


class Interrupted(UserError):
    """Training stopped on SIGTERM / SIGINT after writing a recovery checkpoint."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number
