"""The one exception type that reaches the user as a one-line message, the helpers that build
it from a file and an exception, and the CLI helpers."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pathlib
import sys
import tempfile
from typing import Any, Callable, Iterator


class UserError(Exception):
    """Bad input from the user: printed as one line by the CLI, which exits non-zero.

    The message must name the file, key or value at fault.
    """


Errors = type[BaseException] | tuple[type[BaseException], ...]


def first_line(error: BaseException, typed: bool = False, limit: int | None = None) -> str:
    """What a one-line message quotes of `error`: the first line of its text (at most `limit`
    characters), or its type name when it has none; `typed` puts the type name in front."""
    text = str(error).strip()
    line = text.splitlines()[0][:limit] if text else ""
    if typed:
        return f"{type(error).__name__}: {line}" if line else type(error).__name__
    return line or type(error).__name__


@contextlib.contextmanager
def about(where: object, what: str, errors: Errors = Exception, typed: bool = False,
          limit: int | None = None, hint: str = "") -> Iterator[None]:
    """Turn an exception of `errors` inside the block into the one line `{where}: {what}
    ({first line of it}){hint}` (see `first_line`); a UserError passes through as it is.

        with about(path, "checkpoint cannot be restored", RESTORE_ERRORS):
            checkpoint.restore(path)
    """
    try:
        yield
    except UserError:
        raise
    except errors as e:
        raise UserError(f"{where}: {what} ({first_line(e, typed, limit)}){hint}") from None


@contextlib.contextmanager
def within(where: object) -> Iterator[None]:
    """A UserError inside the block gets `{where}: ` in front: the file whose content was bad.

        with within(path):
            keys = obs_keys.select(config, episode_shapes(path))
    """
    try:
        yield
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def read_text(path: str | os.PathLike, missing: str | None = None) -> str | None:
    """The text of `path`; when it does not exist, None, or with `missing` the one line
    `{path}: {missing}`."""
    try:
        return pathlib.Path(path).read_text()
    except FileNotFoundError:
        if missing is None:
            return None
        raise UserError(f"{path}: {missing}") from None


def read_json(path: str | os.PathLike, missing: str | None = None) -> Any:
    """The JSON value in `path` (None when it does not exist, unless `missing`: see `read_text`);
    invalid JSON is the one line `{path}: not valid JSON (...)`."""
    text = read_text(path, missing)
    if text is None:
        return None
    with about(path, "not valid JSON", json.JSONDecodeError):
        return json.loads(text)


def read_yaml(path: str | os.PathLike, missing: str | None = None) -> Any:
    """The YAML value in `path`, read safely (no code runs); None when it does not exist, unless
    `missing` (see `read_text`); invalid YAML is the one line `{path}: not valid YAML (...)`."""
    import ruamel.yaml  # only the commands that read YAML pay for it

    text = read_text(path, missing)
    if text is None:
        return None
    with about(path, "not valid YAML", ruamel.yaml.YAMLError):
        return ruamel.yaml.YAML(typ="safe", pure=True).load(text)


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
