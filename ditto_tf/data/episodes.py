"""Episode files: one compressed `.npz` per episode with DreamerV2 keys.

    image        (T, H, W, C) uint8   (when the world model or BC reads images)
    vector       (T, D) float32       (when it reads the env's 1-D state; see `obs_keys`)
    action       (T, A) float32   one-hot for discrete spaces; action[t] led to image[t], 0 at t=0
    reward       (T,) float32     reward[t] came with image[t], 0 at t=0
    is_first     (T,) bool        True at t=0
    is_last      (T,) bool        True at t=T-1 (the file holds a whole episode)
    is_terminal  (T,) bool        True where the env really ended (not a time limit)

At least one of image / vector is present. Extra keys are kept. Files are named `<index:06d>-<length>.npz`: names sort by index, and the
length is known without opening the file; the return (`episode_info`) reads only the small
`reward` member. Files appear atomically; a damaged file is reported in one line naming it.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import zipfile
import zlib
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np

from ditto_tf.errors import UserError, about
from ditto_tf.files import atomic_path

log = logging.getLogger(__name__)

FLAG_KEYS = ("action", "reward", "is_first", "is_last", "is_terminal")  # every episode has these
OBS_KEYS = ("image", "vector")  # observation keys: an episode holds one or both
KEYS = ("image", *FLAG_KEYS)  # a pixel episode
DTYPES = {
    "image": np.uint8,
    "vector": np.float32,
    "action": np.float32,
    "reward": np.float32,
    "is_first": np.bool_,
    "is_last": np.bool_,
    "is_terminal": np.bool_,
}
RANKS = {"image": 4, "vector": 2, "action": 2, "reward": 1, "is_first": 1, "is_last": 1, "is_terminal": 1}
# `<stem>-<length>.npz`; our stems are zero-padded indices, DreamerV2's are `<time>-<uuid>`.
NAME = re.compile(r"^(?P<stem>[^.].*)-(?P<length>\d+)\.npz$")
# Errors numpy / zipfile / zlib raise for a damaged archive or member.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError)


class EpisodeInfo(NamedTuple):
    """What is known about an episode file without loading its images."""

    path: pathlib.Path
    index: int | None  # None for names that are not `<index>-<length>.npz`
    length: int
    score: float  # the undiscounted return: sum of rewards


def episode_name(index: int, length: int) -> str:
    """The file name of episode `index` with `length` steps."""
    return f"{index:06d}-{length}.npz"


def parse_name(path: str | os.PathLike) -> tuple[int | None, int]:
    """(index, length) from an episode file name; UserError for other names."""
    path = pathlib.Path(path)
    match = NAME.match(path.name)
    if not match:
        raise UserError(f"{path}: not an episode file name (expected <index>-<length>.npz)")
    stem = match["stem"]
    return (int(stem) if stem.isdigit() else None), int(match["length"])


def check_episode(episode: Mapping[str, np.ndarray], where: str) -> int:
    """Validate keys, dtypes, ranks, lengths and flags; return the length T."""
    missing = [k for k in FLAG_KEYS if k not in episode]
    if missing:
        raise UserError(f"{where}: missing key(s) {missing}; has {sorted(episode)}")
    present = [k for k in OBS_KEYS if k in episode]
    if not present:
        raise UserError(f"{where}: no observation key (image or vector); has {sorted(episode)}")
    for key in (*present, *FLAG_KEYS):
        value = episode[key]
        if value.dtype != DTYPES[key]:
            expected = np.dtype(DTYPES[key]).name
            raise UserError(f"{where}: key {key!r} has dtype {value.dtype}, expected {expected}")
        if value.ndim != RANKS[key]:
            raise UserError(
                f"{where}: key {key!r} has shape {value.shape}, expected rank {RANKS[key]}"
            )
    lengths = {key: len(episode[key]) for key in episode if np.ndim(episode[key]) >= 1}
    first = present[0]
    length = lengths[first]
    if length < 1:
        raise UserError(f"{where}: empty episode (0 steps)")
    wrong = {k: n for k, n in lengths.items() if n != length}
    if wrong:
        raise UserError(f"{where}: inconsistent lengths: {first} has {length} steps but {wrong}")
    if min(episode[first].shape[1:]) < 1 or episode["action"].shape[1] < 1:
        raise UserError(
            f"{where}: empty {first} or action shape {episode[first].shape} {episode['action'].shape}"
        )
    if not episode["is_first"][0]:
        raise UserError(f"{where}: is_first[0] must be True")
    if not episode["is_last"][-1]:
        raise UserError(f"{where}: is_last[-1] must be True (a file holds a whole episode)")
    if np.any(episode["is_terminal"] & ~episode["is_last"]):
        raise UserError(f"{where}: is_terminal is True at a step where is_last is False")
    if not np.all(np.isfinite(episode["reward"])) or not np.all(np.isfinite(episode["action"])):
        raise UserError(f"{where}: reward or action holds NaN or inf")
    return length


def save_episode(directory: str | os.PathLike, episode: Mapping[str, Any], index: int) -> pathlib.Path:
    """Validate and write `episode` atomically as `<directory>/<index:06d>-<T>.npz`.

    Actions, rewards and flags are cast to their file dtypes; images must already be uint8.
    An older file with the same index (another length) is replaced.
    """
    directory = pathlib.Path(directory)
    data = {key: np.asarray(value) for key, value in episode.items()}
    for key in ("vector", *FLAG_KEYS):
        if key in data and data[key].dtype != DTYPES[key] and data[key].dtype.kind in "biuf":
            data[key] = data[key].astype(DTYPES[key])  # other kinds are left for the checks
    for key, value in data.items():
        if value.dtype.kind == "O":
            raise UserError(f"episode {index}: key {key!r} holds Python objects, not an array")
    length = check_episode(data, where=f"episode {index}")
    path = directory / episode_name(index, length)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: savez_compressed would append .npz to a name
            np.savez_compressed(f, **data)
    for other in directory.glob(f"{index:06d}-*.npz"):
        if other != path and NAME.match(other.name):
            other.unlink(missing_ok=True)
    return path


def _open(path: pathlib.Path) -> Any:
    if not path.exists():
        raise UserError(f"{path}: episode file not found")
    with about(path, "unreadable episode file", _READ_ERRORS, typed=True):
        npz = np.load(path, allow_pickle=False)
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise UserError(f"{path}: not an .npz archive (a single .npy array)")
    return npz


def _read(npz: Any, key: str, path: pathlib.Path) -> np.ndarray:
    with about(path, f"damaged member {key!r}", _READ_ERRORS, typed=True):
        return npz[key]


def load_episode(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load and validate one episode file; any fault is a one-line UserError naming the file."""
    path = pathlib.Path(path)
    _, named_length = parse_name(path)
    with _open(path) as npz:
        episode = {key: _read(npz, key, path) for key in npz.files}
    length = check_episode(episode, where=str(path))
    if length != named_length:
        raise UserError(f"{path}: holds {length} steps but its name says {named_length}")
    return episode


def episode_info(path: str | os.PathLike) -> EpisodeInfo:
    """Index, length and return of an episode, reading only its `reward` member."""
    path = pathlib.Path(path)
    index, length = parse_name(path)
    with _open(path) as npz:
        if "reward" not in npz.files:
            raise UserError(f"{path}: missing key(s) ['reward']; has {sorted(npz.files)}")
        reward = _read(npz, "reward", path)
    if reward.ndim != 1 or len(reward) != length:
        raise UserError(f"{path}: reward has shape {reward.shape} but the name says {length} steps")
    return EpisodeInfo(path, index, length, float(np.sum(reward, dtype=np.float64)))


def _sort_key(path: pathlib.Path) -> tuple[int, int, str]:
    index, _ = parse_name(path)
    return (0, index, "") if index is not None else (1, 0, path.name)


def _quick_check(path: pathlib.Path) -> None:
    """Cheap check that catches truncated files and missing keys without decompressing images."""
    with _open(path) as npz:
        names = {f[:-4] if f.endswith(".npy") else f for f in npz.files}
        missing = [k for k in FLAG_KEYS if k not in names]
        if missing:
            raise UserError(f"{path}: missing key(s) {missing}; has {sorted(names)}")
        if not any(k in names for k in OBS_KEYS):
            raise UserError(f"{path}: no observation key (image or vector); has {sorted(names)}")


def list_episodes(
    directory: str | os.PathLike, skip_corrupt: bool = False, check: bool = True
) -> list[pathlib.Path]:
    """Episode files in `directory`, sorted by index; temp and hidden files are ignored.

    With `check`, each file's zip directory and keys are read (cheap: no image is decompressed)
    and a damaged file raises UserError, or is logged and left out when `skip_corrupt` is set.
    A missing directory is an empty list.
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    paths = []
    for path in directory.iterdir():
        if path.name.startswith(".") or path.suffix != ".npz" or not path.is_file():
            continue  # temp files of atomic writes are `.<name>.<random>.tmp`
        try:
            parse_name(path)
            if check:
                _quick_check(path)
        except UserError as e:
            if not skip_corrupt:
                raise
            log.warning("skipping episode file: %s", e)
            continue
        paths.append(path)
    paths.sort(key=_sort_key)
    indices = [parse_name(p)[0] for p in paths]
    for a, b, ia, ib in zip(paths, paths[1:], indices, indices[1:]):
        if ia is not None and ia == ib:
            raise UserError(f"{directory}: two files with index {ia}: {a.name} and {b.name}")
    return paths


def load_episodes(
    directory: str | os.PathLike, limit: int | None = None, skip_corrupt: bool = False
) -> list[dict[str, np.ndarray]]:
    """Load the first `limit` episodes of `directory` by index (all when None), in order.

    Loads whole episodes into memory: meant for the few expert episodes (N_E), not for the
    world-model data (use `ditto_tf.data.dataset`).
    """
    episodes: list[dict[str, np.ndarray]] = []
    for path in list_episodes(directory, skip_corrupt=skip_corrupt):
        if limit is not None and len(episodes) >= limit:
            break
        try:
            episodes.append(load_episode(path))
        except UserError as e:
            if not skip_corrupt:
                raise
            log.warning("skipping episode file: %s", e)
    return episodes


def scan_episodes(paths: Iterable[str | os.PathLike]) -> list[EpisodeInfo]:
    """`episode_info` for each path (returns and lengths for manifests and summaries)."""
    return [episode_info(p) for p in paths]


def next_index(directory: str | os.PathLike) -> int:
    """The index after the highest existing one (0 for an empty directory): for resuming."""
    indices = [parse_name(p)[0] for p in list_episodes(directory, check=False)]
    return max((i for i in indices if i is not None), default=-1) + 1
