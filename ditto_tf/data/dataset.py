"""Seeded sequence batches from episode directories, with memory bounded by the batch size.

    dataset = make_dataset([run.wm_episodes], batch=16, length=50, seed=0, start_batch=step)
    for batch in dataset:   # {image (B,L,H,W,C) uint8 and/or vector (B,L,D) float32,
        ...                 #  action (B,L,A) float32, reward (B,L), is_first, is_last,
                            #  is_terminal (B,L) bool}, is_first[:, 0] True

Compressed `.npz` members cannot be sliced without decompressing the whole member, and 1000
Atari episodes do not fit in RAM. So on first use each episode is decompressed once into an
uncompressed per-episode cache file (`<dir>/.cache/<name>.npz`, written atomically, rebuilt when
its source changes), and each sequence is read with `os.pread` at computed offsets. Pages read
that way live in the kernel page cache, not in this process's resident memory.

Sampling (DreamerV2's chunking): the episodes, in directory and index order, form one circular
stream; a window starts at a uniformly drawn frame of the stream and, where an episode ends
before the window does, continues into the next episode, whose `is_first` makes the RSSM reset
its state and zero the action (`RSSM.obs_step`). We chose this over padding with a loss mask:
every frame of a batch is real data (no compute spent on padding), the world-model loss needs
no mask, and on a circle every frame lies in exactly L of the N possible windows, so each frame
(the last frames of short episodes, where CartPole's pole falls, included) is sampled in
proportion to its share of the data. Windows only inside one episode left short episodes out
(30% of epsilon-expert CartPole episodes at L = 32) and starved episode ends (0.7% of samples
for the last 5 frames against a 4.6% share). Batch i is a pure function of (seed, i), so
resuming at step k with `start_batch=k` reproduces the stream.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import struct
import zipfile
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf
import tqdm

from ditto_tf.data.episodes import DTYPES, FLAG_KEYS, list_episodes, load_episode
from ditto_tf.errors import UserError
from ditto_tf.files import atomic_path

log = logging.getLogger(__name__)

CACHE_DIRNAME = ".cache"
_SOURCE_KEY = "_source"  # cache member holding the source file's (size, mtime_ns)
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # zip local file header: signature ... name, extra lengths


@dataclass(frozen=True)
class _Array:
    """Where one array's raw C-order bytes start in a cache file."""

    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


@dataclass(frozen=True)
class _Episode:
    source: pathlib.Path
    cache: pathlib.Path
    length: int
    arrays: dict[str, _Array]


def _array_offsets(path: pathlib.Path, keys: Sequence[str]) -> dict[str, _Array]:
    """Byte offsets of uncompressed `.npy` members inside an (uncompressed) npz file."""
    arrays = {}
    with open(path, "rb") as f, zipfile.ZipFile(f) as archive:
        for key in keys:
            info = archive.getinfo(f"{key}.npy")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"member {key!r} is compressed")
            f.seek(info.header_offset)
            signature, name_len, extra_len = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
            if signature != b"PK\x03\x04":
                raise ValueError(f"bad local header for member {key!r}")
            f.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
            if np.lib.format.read_magic(f) == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            if fortran:
                raise ValueError(f"member {key!r} is Fortran-ordered")
            arrays[key] = _Array(f.tell(), tuple(shape), np.dtype(dtype))
    return arrays


def _source_stamp(path: pathlib.Path) -> np.ndarray:
    stat = path.stat()
    return np.array([stat.st_size, stat.st_mtime_ns], np.int64)


def _open_cache(source: pathlib.Path, cache: pathlib.Path, keys: Sequence[str]) -> _Episode | None:
    """The cached episode if the cache exists, is intact and matches its source; else None."""
    if not cache.exists():
        return None
    try:
        with np.load(cache, allow_pickle=False) as npz:
            if not np.array_equal(npz[_SOURCE_KEY], _source_stamp(source)):
                return None
        arrays = _array_offsets(cache, keys)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if cache.stat().st_size < max(a.offset + a.row_bytes * a.shape[0] for a in arrays.values()):
        return None
    return _Episode(source, cache, arrays["action"].shape[0], arrays)


def _write_cache(
    source: pathlib.Path, stamp: np.ndarray, episode: dict[str, np.ndarray],
    cache: pathlib.Path, keys: Sequence[str],
) -> _Episode:
    """Write a validated episode uncompressed to `cache` atomically, stamped with its source."""
    missing = [key for key in keys if key not in episode]
    if missing:
        raise UserError(f"{source}: has no {missing} (holds {sorted(episode)}); the config's "
                        "world_model cnn_keys / mlp_keys need it: collect into another --logdir")
    data = {key: np.ascontiguousarray(episode[key]) for key in keys}
    try:
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **data, **{_SOURCE_KEY: stamp})
    except OSError as e:
        raise UserError(
            f"{cache.parent}: cannot write the episode cache ({e.strerror}); pass another cache_dir"
        ) from None
    return _Episode(source, cache, len(data["action"]), _array_offsets(cache, keys))


def _prune_cache(cache_root: pathlib.Path, names: set[str]) -> None:
    """Delete cache files whose episode file no longer exists (they would only waste disk)."""
    if cache_root.is_dir():
        for cache in cache_root.glob("*.npz"):
            if cache.name not in names:
                cache.unlink(missing_ok=True)


class SequenceSampler:
    """Samples (batch, length) sequence batches from episode directories through a disk cache.

    Args:
      directories: one or more episode directories (their episodes are pooled).
      batch, length: batch size B and sequence length L.
      seed: batch i is a pure function of (seed, i).
      cache_dir: where uncompressed caches go (default `<directory>/.cache` for each directory).
      limit: use only the first `limit` valid episodes (by index) of each directory; a list
        gives one limit (or None) per directory.
      skip_corrupt: leave out (and log) damaged episode files instead of failing.
      keys: the observation keys to read (default: image); flags and actions are always read.
    """

    def __init__(
        self,
        directories: str | os.PathLike | Iterable[str | os.PathLike],
        batch: int,
        length: int,
        seed: int,
        cache_dir: str | os.PathLike | None = None,
        limit: int | Sequence[int | None] | None = None,
        skip_corrupt: bool = False,
        keys: Sequence[str] = ("image",),
    ):
        if isinstance(directories, (str, os.PathLike)):
            directories = [directories]
        self.directories = [pathlib.Path(d) for d in directories]
        if not self.directories:
            raise UserError("no episode directory given")
        if batch < 1 or length < 1:
            raise UserError(f"batch ({batch}) and length ({length}) must be positive")
        if seed < 0:
            raise UserError(f"seed must be a non-negative integer, got {seed}")
        self.batch, self.length, self.seed = int(batch), int(length), int(seed)
        self.keys = (*sorted(keys), *FLAG_KEYS)
        limits = list(limit) if isinstance(limit, (list, tuple)) else [limit] * len(self.directories)
        if len(limits) != len(self.directories):
            raise UserError(f"{len(limits)} limits given for {len(self.directories)} directories")
        episodes = []
        for directory, count in zip(self.directories, limits):
            episodes += self._load_directory(directory, cache_dir, count, skip_corrupt)
        self.episodes = episodes
        first = self.episodes[0]
        self.shapes = {k: (self.length, *a.shape[1:]) for k, a in first.arrays.items()}
        for episode in self.episodes[1:]:
            for key, array in episode.arrays.items():
                if array.shape[1:] != first.arrays[key].shape[1:]:
                    raise UserError(
                        f"{episode.source}: {key} shape {array.shape[1:]} differs from "
                        f"{first.arrays[key].shape[1:]} in {first.source}"
                    )
        lengths = np.array([e.length for e in self.episodes], np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(lengths)])  # frame numbering of the stream

    def _load_directory(
        self, directory: pathlib.Path, cache_dir: str | os.PathLike | None,
        limit: int | None, skip_corrupt: bool,
    ) -> list[_Episode]:
        if not directory.is_dir():
            raise UserError(f"{directory}: episode directory not found")
        all_paths = list_episodes(directory, skip_corrupt=skip_corrupt, check=False)
        paths = all_paths[:limit] if limit is not None and not skip_corrupt else all_paths
        if not paths:
            raise UserError(f"{directory}: no episode files (<index>-<length>.npz)")
        if cache_dir:  # one subfolder per source directory keeps same-named episodes apart
            digest = hashlib.sha1(str(directory.resolve()).encode()).hexdigest()[:10]
            cache_root = pathlib.Path(cache_dir) / f"{directory.name}-{digest}"
        else:
            cache_root = directory / CACHE_DIRNAME
        _prune_cache(cache_root, {path.name for path in all_paths})
        episodes = []
        progress = tqdm.tqdm(paths, desc=f"episode cache {directory}", unit="ep",
                             disable=len(paths) < 50, leave=False)
        for path in progress:
            if limit is not None and len(episodes) >= limit:
                break
            cache = cache_root / path.name
            episode = _open_cache(path, cache, self.keys)
            if episode is None:  # first use, or the source changed: decompress and validate once
                stamp = _source_stamp(path)
                try:
                    data = load_episode(path)
                except UserError as e:
                    if not skip_corrupt:
                        raise
                    log.warning("skipping episode file: %s", e)
                    continue
                episode = _write_cache(path, stamp, data, cache, self.keys)
            episodes.append(episode)
        if not episodes:
            raise UserError(f"{directory}: no readable episode files (all {len(paths)} skipped)")
        return episodes

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_steps(self) -> int:
        return sum(e.length for e in self.episodes)

    def sample_indices(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(episode numbers, start steps) of the B sequences of batch i; pure in (seed, i)."""
        rng = np.random.default_rng([self.seed, int(i)])
        starts = rng.integers(self._offsets[-1], size=self.batch)
        episode = np.searchsorted(self._offsets, starts, side="right") - 1
        return episode, starts - self._offsets[episode]

    def _read(self, out: dict[str, np.ndarray], b: int, e: int, start: int, at: int,
              count: int) -> None:
        """Rows start .. start+count-1 of episode e into rows at .. of sequence b of `out`."""
        episode = self.episodes[e]
        fd = os.open(episode.cache, os.O_RDONLY)
        try:
            for key in self.keys:
                array = episode.arrays[key]
                size = array.row_bytes * count
                raw = os.pread(fd, size, array.offset + array.row_bytes * int(start))
                if len(raw) != size:
                    raise UserError(f"{episode.cache}: episode cache truncated; delete it")
                out[key][b, at:at + count] = np.frombuffer(raw, array.dtype).reshape(
                    (count, *self.shapes[key][1:]))
        finally:
            os.close(fd)

    def sample_batch(self, i: int) -> dict[str, np.ndarray]:
        """Batch i as numpy arrays; `is_first[:, 0]` is True (each sequence starts fresh).

        A window that outlasts its episode continues at the start of the next one (chunking,
        see the module docstring); that episode's `is_first` marks the boundary.
        """
        out = {k: np.empty((self.batch, *self.shapes[k]), DTYPES[k]) for k in self.keys}
        for b, (e, start) in enumerate(zip(*self.sample_indices(i))):
            filled, e, start = 0, int(e), int(start)
            while filled < self.length:
                count = min(self.length - filled, self.episodes[e].length - start)
                self._read(out, b, e, start, filled, count)
                filled += count
                e, start = (e + 1) % len(self.episodes), 0
        out["is_first"][:, 0] = True
        return out

    def dataset(self, start_batch: int = 0, prefetch: int = 2) -> tf.data.Dataset:
        """An endless tf.data stream of batches start_batch, start_batch + 1, ..."""
        keys = list(self.keys)

        def sample(i: np.ndarray) -> list[np.ndarray]:
            batch = self.sample_batch(int(i))
            return [batch[k] for k in keys]

        def to_dict(i: tf.Tensor) -> dict[str, tf.Tensor]:
            values = tf.numpy_function(sample, [i], [tf.as_dtype(DTYPES[k]) for k in keys])
            out = {}
            for key, value in zip(keys, values):
                value.set_shape((self.batch, *self.shapes[key]))
                out[key] = value
            return out

        # Order is kept (deterministic map), so parallel sampling does not change the stream.
        return (
            tf.data.Dataset.counter(int(start_batch), dtype=tf.int64)
            .map(to_dict, num_parallel_calls=2, deterministic=True)
            .prefetch(prefetch)
        )


def make_dataset(
    directories: str | os.PathLike | Iterable[str | os.PathLike],
    batch: int,
    length: int,
    seed: int,
    start_batch: int = 0,
    cache_dir: str | os.PathLike | None = None,
    limit: int | Sequence[int | None] | None = None,
    skip_corrupt: bool = False,
    keys: Sequence[str] = ("image",),
) -> tf.data.Dataset:
    """A seeded tf.data stream of sequence batches (see the module docstring)."""
    sampler = SequenceSampler(directories, batch, length, seed, cache_dir, limit, skip_corrupt, keys)
    return sampler.dataset(start_batch)
