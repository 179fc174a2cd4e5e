"""The one exception type that reaches the user as a one-line message, and the CLI wrapper."""

import functools
import sys
from typing import Any, Callable


class UserError(Exception):
    """Bad input from the user: printed as one line by the CLI, which exits non-zero.

    The message must name the file, key or value at fault.
    """


DEFAULT_INTERRUPTED = "interrupted; run the same command again to resume"


def command(interrupted: str = DEFAULT_INTERRUPTED) -> Callable[[Callable[..., Any]], Callable[..., int]]:
    """Decorate a command-line `main`: a UserError becomes one line `error: ...` on stderr and
    exit status 2 (no traceback); Ctrl-C prints `interrupted` and gives 130; otherwise 0."""

    def decorate(main: Callable[..., Any]) -> Callable[..., int]:
        @functools.wraps(main)
        def wrapper(*args: Any, **kwargs: Any) -> int:
            try:
                return int(main(*args, **kwargs) or 0)
            except UserError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print(interrupted, file=sys.stderr)
                return 130

        return wrapper

    return decorate
