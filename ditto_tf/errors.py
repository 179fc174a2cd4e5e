"""The one exception type that reaches the user as a one-line message."""


class UserError(Exception):
    """Bad input from the user: printed as one line by the CLI, which exits non-zero.

    The message must name the file, key or value at fault.
    """
