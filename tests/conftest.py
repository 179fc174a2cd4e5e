"""Shared pytest fixtures: a tiny real config and the optional local RL Zoo folder.

The zoo folder (real RL Zoo agents, not shipped with the project) is found through the
environment variable DITTO_ZOO or at `../shared/zoo` beside the repository; tests that need it
use the `zoo_dir` fixture (or `requires_zoo`) and are skipped with a clear reason when absent.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) imports the repo too
    sys.path.insert(0, str(REPO_ROOT))

import pytest  # noqa: E402

from ditto_tf.config import Config, load_config  # noqa: E402


def find_zoo() -> pathlib.Path | None:
    """The local RL Zoo folder (DITTO_ZOO, else ../shared/zoo), or None when absent."""
    candidate = os.environ.get("DITTO_ZOO")
    path = pathlib.Path(candidate).expanduser() if candidate else REPO_ROOT.parent / "shared" / "zoo"
    return path if path.is_dir() else None


ZOO_DIR = find_zoo()
requires_zoo = pytest.mark.skipif(
    ZOO_DIR is None,
    reason="local RL Zoo folder not found: set DITTO_ZOO or place it at ../shared/zoo",
)


@pytest.fixture
def tiny_config() -> Config:
    """The `debug` config block: tiny sizes and counts, real components."""
    return load_config(["debug"])


@pytest.fixture
def zoo_dir() -> pathlib.Path:
    """Path of the local RL Zoo folder; skips the test when it is absent."""
    if ZOO_DIR is None:
        pytest.skip("local RL Zoo folder not found: set DITTO_ZOO or place it at ../shared/zoo")
    return ZOO_DIR


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_inside_pytests_directory(tmp_path_factory):
    """Point TMPDIR (and `tempfile`) into pytest's own temporary directory for the session: the
    processes the reliability tests SIGKILL cannot remove TensorFlow's autograph sources
    (/tmp/__autograph_generated_file*.py), and nothing the suite writes may land elsewhere."""
    directory = str(tmp_path_factory.mktemp("tmpdir"))
    old_env, old_module = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = directory, directory
    yield
    tempfile.tempdir = old_module
    if old_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old_env
