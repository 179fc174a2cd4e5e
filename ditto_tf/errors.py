"""The one exception type that reaches the user as a one-line message, and the CLI helpers."""

import functools
import os
import sys
import tempfile
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


def quiet_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow without its C++ start-up noise (CUDA probing on a machine without a GPU,
    oneDNN and CPU-feature notes), unless `verbose` or the user set TF_CPP_MIN_LOG_LEVEL.

    TF_CPP_MIN_LOG_LEVEL=3 hides TensorFlow's own log lines, but the CUDA stub loader writes a
    few lines straight to file descriptor 2 during the import, before absl logging exists: the
    import runs with that descriptor captured, and the capture is replayed if the import fails.
    """
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
