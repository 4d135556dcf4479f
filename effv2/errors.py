"""The one exception type that reaches the user as a single line instead of a traceback."""


class UserError(Exception):
    """Bad input or an unavailable feature: the message names the value and what is accepted."""
