"""Phase `collect`: record world-model and expert episodes as the world model will see them.

    python train.py --configs cartpole small --logdir DIR --phase collect --expert.folder ZOO

Writes, under `DIR/data/`:

    wm/*.npz             data.wm_episodes episodes of data.wm_policy
                         (expert | random | epsilon | another zoo algo such as a2c)
    expert/train/*.npz   data.expert_train expert episodes (N_E)
    expert/val/*.npz     data.expert_val held-out expert episodes
    manifest.jsonl       one line per episode: set, index, file, agent, seed, return, length
                         (frames, with the reset frame), steps (env steps = length - 1)
    summary.json         per-set return mean +- std; `expert` is the normaliser of every result

Episodes hold the observation keys the config reads (`obs_keys`: image and/or vector); with
no cnn key matching `image`, frames are not even rendered. Each episode is a full game to the env's real end (Atari: game over, unclipped score). The
expert acts on its own observation pipeline (it reads `env.native_obs`); we record the env's
pixel frames. Episode i of a set is seeded from (config.seed, set, i), so a
second run tops every set up to the requested count without redoing or duplicating episodes;
each file appears atomically, so a kill loses at most the episode in progress.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import pathlib
import time
import zipfile
from typing import Any, Iterator

import numpy as np
import tqdm

from ditto_tf import envs, obs_keys
from ditto_tf.config import Config
from ditto_tf.data import episodes
from ditto_tf.data.policies import Entry, build_policies
from ditto_tf.driver import Episode, drive
from ditto_tf.errors import UserError
from ditto_tf.files import atomic_write_text
from ditto_tf.rundir import EPISODE_SETS, RunDir

# set name -> (directory under LOGDIR/data, seed stream id). The ids keep seeds of different
# sets apart; never renumber them or resumed datasets get different seeds.
SETS = {name: (EPISODE_SETS[name], number)
        for name, number in (("wm", 0), ("expert_train", 1), ("expert_val", 2))}


def episode_seed(seed: int, name: str, index: int) -> int:
    """The seed of episode `index` of set `name`: a pure function of its arguments."""
    return int(np.random.SeedSequence([int(seed), SETS[name][1], int(index)]).generate_state(1)[0])


# ----------------------------------------------------------------------------------------------
# Manifest and summary


def _image_header(path: pathlib.Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of an episode's images, read from the .npy header (no decompression)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("image.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
        return tuple(shape), np.dtype(dtype)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _check_existing(paths: list[pathlib.Path], env: envs.Env, keys: list[str]) -> None:
    """Refuse to top up a set recorded with other observation keys or image settings."""
    if not paths:
        return
    try:
        with zipfile.ZipFile(paths[-1]) as archive:
            held = sorted(n[:-4] for n in archive.namelist() if n[:-4] in obs_keys.OBS_KEYS)
    except (OSError, zipfile.BadZipFile):
        held = keys  # a damaged file is reported by the episode checks, not here
    if held != keys:
        raise UserError(f"{paths[-1]}: holds observation keys {held} but the config's "
                        f"world_model cnn_keys / mlp_keys need {keys}; use another --logdir")
    if "image" not in keys:
        return
    header = _image_header(paths[-1])
    expected = env.obs_space["image"].shape
    if header is not None and header[0][1:] != expected:
        raise UserError(f"{paths[-1]}: holds {header[0][1:]} images but env.size/env.grayscale "
                        f"give {expected}; use another --logdir or the same settings")


def _stats(returns: list[float]) -> dict[str, float]:
    values = np.asarray(returns, np.float64)
    if not len(values):
        return {"episodes": 0}
    return {"episodes": int(len(values)), "mean": float(values.mean()), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max())}


class Manifest:
    """`manifest.jsonl` (one line per episode on disk) and `summary.json`, rewritten atomically.

    Entries of earlier runs are kept as written; an episode file without an entry (a kill
    between the episode write and the manifest write) gets one rebuilt from the file and the
    deterministic seed.
    """

    def __init__(self, run: RunDir, config: Config, action: dict[str, Any] | None = None):
        self.root, self.path, self.summary_path = run.data, run.manifest, run.summary
        self.config = config
        self.action = action  # {size, discrete} of the env, recorded in the summary
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for number, line in enumerate(self.path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    self.entries[entry["file"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise UserError(f"{self.path}:{number}: not a manifest line: {line[:60]!r}") from None

    def add(self, name: str, path: pathlib.Path, agent: str, seed: int,
            ret: float | None = None) -> None:
        relative = path.relative_to(self.root).as_posix()
        if ret is None:
            ret = episodes.episode_info(path).score
        index, length = episodes.parse_name(path)
        self.entries[relative] = {"set": name, "index": index, "file": relative, "agent": agent,
                                  "seed": seed, "return": float(ret), "length": length,
                                  "steps": length - 1}  # length counts the reset frame

    def sync(self, name: str, paths: list[pathlib.Path], agent: str) -> None:
        """Keep entries of the files in `paths`; add missing ones; drop entries of gone files."""
        prefix = SETS[name][0] + "/"
        present = {p.relative_to(self.root).as_posix(): p for p in paths}
        for key in [k for k in self.entries if k.startswith(prefix) and k not in present]:
            del self.entries[key]
        for key, path in present.items():
            if key not in self.entries:
                index = episodes.parse_name(path)[0] or 0
                self.add(name, path, agent, episode_seed(self.config.seed, name, index))

    def returns(self, *names: str) -> list[float]:
        return [e["return"] for e in self._sorted() if e["set"] in names]

    def _sorted(self) -> list[dict[str, Any]]:
        order = {name: i for i, name in enumerate(SETS)}
        return sorted(self.entries.values(), key=lambda e: (order.get(e["set"], 9), e["index"] or 0))

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {name: _stats(self.returns(name)) for name in SETS}
        summary["expert"] = _stats(self.returns("expert_train", "expert_val"))
        agents = sorted({e["agent"] for e in self.entries.values() if e["set"] != "wm"})
        summary["expert"]["agent"] = " | ".join(agents)
        summary["task"] = self.config.task
        summary["wm_policy"] = self.config.data.wm_policy
        if self.action is not None:
            summary["action"] = self.action
        return summary

    def write(self) -> dict[str, Any]:
        lines = "".join(json.dumps(e) + "\n" for e in self._sorted())
        atomic_write_text(self.path, lines)
        summary = self.summary()
        atomic_write_text(self.summary_path, json.dumps(summary, indent=2) + "\n")
        return summary


# ----------------------------------------------------------------------------------------------
# The phase


@contextlib.contextmanager
def _exclusive(run: RunDir) -> Iterator[None]:
    """One collector per logdir: two would write the same episode indices."""
    root = run.data
    root.mkdir(parents=True, exist_ok=True)
    with open(run.collect_lock, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{root}: another collect is running on this logdir") from None
        yield


def _remove_stale_temps(directory: pathlib.Path) -> None:
    """Temp files of writes a kill interrupted (`.<name>.<random>.tmp`); never final files."""
    if directory.is_dir():
        for path in directory.glob(".*.tmp"):
            path.unlink(missing_ok=True)


def run(config: Config, run: RunDir) -> dict[str, Any]:
    """Collect (or top up) every set, then print and return the summary."""
    counts = {"wm": int(config.data.wm_episodes), "expert_train": int(config.data.expert_train),
              "expert_val": int(config.data.expert_val)}
    for key, count in zip(("wm_episodes", "expert_train", "expert_val"), counts.values()):
        if count < 0:
            raise UserError(f"data.{key}: {count} is negative")
    if config.env.life_done:  # datasets hold whole games; the expert still sees life losses
        print("collect: recording full games (env.life_done applies to training envs, not data)")
        config = config.update({"env.life_done": False})
    # Everything that can fail on bad input (env id, expert folder/zip/hub, action spaces)
    # happens here, before the first file is written.
    env = envs.make_env(config, seed=int(config.seed))
    keys = obs_keys.select(config, obs_keys.env_shapes(env)).stored
    policies = build_policies(config, env)
    root = run.data
    existing = {name: episodes.list_episodes(run.episodes(name), skip_corrupt=False)
                for name in SETS}
    for paths in existing.values():
        _check_existing(paths, env, keys)

    with _exclusive(run):
        manifest = Manifest(run, config, {"size": env.action_size, "discrete": env.discrete})
        for name in SETS:
            _remove_stale_temps(run.episodes(name))
            manifest.sync(name, existing[name], policies[name][0])
        _remove_stale_temps(root)
        manifest.write()
        for name, count in counts.items():
            _collect_set(config, run, env, name, count, policies[name], manifest, keys)
        summary = manifest.write()
    env.close()
    expert = summary["expert"]
    if expert["episodes"]:
        print(f"expert {expert['agent']} on {config.task}: return {expert['mean']:.2f} +- "
              f"{expert['std']:.2f} over {expert['episodes']} episodes "
              f"(summary in {run.summary})")
    wm = summary["wm"]
    if wm["episodes"]:
        print(f"wm data ({config.data.wm_policy}): return {wm['mean']:.2f} +- {wm['std']:.2f} "
              f"over {wm['episodes']} episodes")
    return summary


def _collect_set(config: Config, run: RunDir, env: envs.Env, name: str, count: int,
                 entry: Entry, manifest: Manifest, keys: list[str]) -> None:
    """Record the episodes of set `name` whose index in [0, count) has no file yet."""
    directory = run.episodes(name)
    done = {episodes.parse_name(p)[0] for p in episodes.list_episodes(directory)}
    missing = [i for i in range(count) if i not in done]
    if not missing:
        return
    agent, actor = entry
    seeds = [episode_seed(config.seed, name, index) for index in missing]
    returns = manifest.returns(name)
    bar = tqdm.tqdm(total=count, initial=count - len(missing), desc=f"collect {SETS[name][0]}",
                    unit="ep", dynamic_ncols=True)
    steps, start = 0, time.perf_counter()

    def postfix() -> None:
        rate = steps / max(time.perf_counter() - start, 1e-9)
        mean = f"{np.mean(returns):.1f}" if returns else "-"
        bar.set_postfix_str(f"return {mean}, {rate:.0f} steps/s", refresh=True)

    def on_step() -> None:
        nonlocal steps
        steps += 1
        if steps % 1000 == 0:
            postfix()

    def save(episode: Episode) -> None:
        nonlocal steps
        steps += 1  # the reset frame
        path = episodes.save_episode(directory, episode.data, missing[episode.number])
        ret = float(np.sum(episode.data["reward"], dtype=np.float64))
        manifest.add(name, path, agent, seeds[episode.number], ret)
        manifest.write()
        returns.append(ret)
        bar.update(1)
        postfix()

    try:
        drive([env], actor, [len(missing)], seeds=lambda _, number: seeds[number], record=True,
              keys=keys, on_step=on_step, on_episode=save)
    finally:
        bar.close()
