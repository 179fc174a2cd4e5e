"""What the world model reads from the data: observation shapes, the model spec, vector statistics.

    shapes, keys = data_shapes(config, dirs)        # {image: (64, 64, 1), vector: (4,)}, [vector]
    stats = vector_statistics(dirs, ['vector'])     # {vector: (mean (D,), std (D,))}
    shapes = model_shapes(config, run)              # what load_world_model builds

The spec `model.json` is written and read by `ditto_tf.rundir.RunDir` (`save_spec`, `spec`); a
spec without `obs_shapes` (image models, the DreamerV2 import) is an image model.
"""

from __future__ import annotations

import pathlib
import zipfile
from typing import Sequence

import numpy as np

from ditto_tf import obs_keys
from ditto_tf.config import Config
from ditto_tf.data.episodes import OBS_KEYS, list_episodes
from ditto_tf.errors import UserError, about, within
from ditto_tf.rundir import RunDir

# Floor of the per-dimension standard deviation: a dimension that barely varies in the data
# (e.g. LunarLander's leg contacts in some datasets) must not be blown up by 1 / std.
MIN_STD = 1e-2


def _member_shape(archive: zipfile.ZipFile, key: str) -> tuple[int, ...]:
    """Shape of member `key` of an episode archive, from its .npy header (no decompression)."""
    with archive.open(f"{key}.npy") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        return tuple(read(f)[0])


def episode_shapes(path: pathlib.Path) -> dict[str, tuple[int, ...]]:
    """{observation key: per-step shape} of one episode file."""
    with about(path, "unreadable episode file", (OSError, KeyError, ValueError, zipfile.BadZipFile),
               typed=True), zipfile.ZipFile(path) as archive:
        names = {n[:-4] for n in archive.namelist()}
        return {k: _member_shape(archive, k)[1:] for k in OBS_KEYS if k in names}


def data_shapes(config: Config, dirs: Sequence[pathlib.Path]) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """(observation shapes of the data, the keys the config's world model reads from it)."""
    paths = list_episodes(dirs[0], skip_corrupt=config.data.skip_corrupt)
    if not paths:
        raise UserError(f"{dirs[0]}: no episodes; run `--phase collect` first")
    shapes = episode_shapes(paths[0])
    with within(paths[0]):
        keys = obs_keys.select(config, shapes)
    return {k: shapes[k] for k in keys.stored}, keys.stored


def model_shapes(config: Config, run: RunDir) -> dict[str, tuple[int, ...]] | None:
    """The observation shapes the run's world model was trained on (None: an image model
    of the config's env.size, as the DreamerV2 import writes it)."""
    shapes = (run.spec() or {}).get("obs_shapes")
    return {k: tuple(int(s) for s in v) for k, v in shapes.items()} if shapes else None


def vector_statistics(dirs: Sequence[pathlib.Path], keys: Sequence[str], skip_corrupt: bool = False,
                      binary: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{key: (mean, std)} per dimension over every step of every episode in `dirs`.

    Reads only the `keys` members (small: a CartPole state is 4 floats a step). A non-finite
    value is a one-line error naming the file. `binary` (`world_model.decoder.mlp_dist: binary`):
    every value must lie in [0, 1], and the statistics are the identity (mean 0, std 1), so the
    vectors are read as they are.
    """
    sums = {k: 0.0 for k in keys}
    squares = {k: 0.0 for k in keys}
    count = 0
    for directory in dirs:
        for path in list_episodes(directory, skip_corrupt=skip_corrupt):
            with np.load(path) as npz:
                for key in keys:
                    if key not in npz.files:
                        raise UserError(f"{path}: has no {key!r}; the config's world_model "
                                        "mlp_keys need it: collect into another --logdir")
                    value = npz[key].astype(np.float64)
                    if not np.all(np.isfinite(value)):
                        raise UserError(f"{path}: key {key!r} holds NaN or inf")
                    if binary and (value.min() < 0.0 or value.max() > 1.0):
                        raise UserError(f"{path}: key {key!r} holds values in [{value.min():g}, "
                                        f"{value.max():g}], but world_model.decoder.mlp_dist "
                                        "binary needs them in [0, 1]; use mse")
                    sums[key] = sums[key] + value.sum(0)
                    squares[key] = squares[key] + np.square(value).sum(0)
                count += len(value)
    if not count:
        raise UserError(f"{dirs[0]}: no episodes; run `--phase collect` first")
    if binary:
        return {k: (np.zeros_like(sums[k], np.float32), np.ones_like(sums[k], np.float32)) for k in keys}
    out = {}
    for key in keys:
        mean = sums[key] / count
        std = np.sqrt(np.maximum(squares[key] / count - np.square(mean), 0.0))
        out[key] = (mean.astype(np.float32), np.maximum(std, MIN_STD).astype(np.float32))
    return out
