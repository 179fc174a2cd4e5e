"""Expert episodes encoded into world-model states with the posterior filter, and cached.

The agents never see pixels in training: each expert episode (train and val) is run through the
encoder and `rssm.observe` once, and its posterior states are stored per episode under
`LOGDIR/latents/<key>/`, where the key hashes the world-model checkpoint (path, step and file
time). A new world-model checkpoint gives a new key, so stale latents are never used; the old
cache folders are removed.

Stored per step t: `deter` h_t (D,) float32, `stoch` z_t as class indices (S,) (z is one-hot,
so this is exact and S*K times smaller), `logit` the posterior's logits (S, K) float16 (the
`probs` and `mode` forms of eq. 8 compare with the posterior itself, not with the one sample
drawn at encoding), and `action`: the action the expert took in state t.
In the episode files action[t] is the one that led to image[t], so that is `action[t + 1]`;
the last step has none (`has_action` False).
"""

from __future__ import annotations

import hashlib
import pathlib
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
import tqdm

from ditto_tf.config import Config
from ditto_tf.data.episodes import list_episodes, load_episode
from ditto_tf.errors import UserError, about
from ditto_tf.files import atomic_path
from ditto_tf.rundir import RunDir

if TYPE_CHECKING:
    from ditto_tf.rssm import RSSM, State
    from ditto_tf.world_model import WorldModel

CHUNK = 128  # filter steps per compiled call (long Atari episodes are encoded in chunks)
GROUP = 8  # episodes filtered side by side (padded to the longest)
FORMAT = "v2-logit"  # the cache's file layout, part of its key


@dataclass
class ExpertLatents:
    """All steps of a set of expert episodes, concatenated; `starts[e]` is episode e's offset."""

    deter: np.ndarray  # (N, D) float32
    stoch: np.ndarray  # (N, S) int class indices
    action: np.ndarray  # (N, A) float32, the action taken in state t
    has_action: np.ndarray  # (N,) bool, False at each episode's last step
    starts: np.ndarray  # (E + 1,) int64 episode offsets
    classes: int  # K, classes per categorical
    logit: np.ndarray | None = None  # (N, S, K) float16 posterior logits (None: one-hot stand-in)

    @property
    def num_episodes(self) -> int:
        return len(self.starts) - 1

    def window_starts(self, length: int, with_actions: bool = False) -> np.ndarray:
        """Global indices i whose window i .. i+length-1 lies in one episode.

        With `with_actions`, every state of the window also has an expert action.
        """
        ends = self.starts[1:] - (1 if with_actions else 0)
        out = [np.arange(s, e - length + 1) for s, e in zip(self.starts[:-1], ends) if e - s >= length]
        if not out:
            longest = int(np.max(np.diff(self.starts))) if self.num_episodes else 0
            raise UserError(
                f"expert episodes: none is long enough for windows of {length} states "
                f"(longest has {longest} steps); lower agent.horizon")
        return np.concatenate(out)

    def windows(self, starts: np.ndarray, length: int) -> dict[str, np.ndarray]:
        """Windows (B, length, ...) of deter, stoch indices, logits and actions at `starts`."""
        index = np.asarray(starts)[:, None] + np.arange(length)[None]
        out = {"deter": self.deter[index], "stoch": self.stoch[index], "action": self.action[index]}
        if self.logit is not None:
            out["logit"] = self.logit[index]
        return out

    def sample_windows(self, valid: np.ndarray, batch: int, length: int, seed: int, step: int
                       ) -> dict[str, np.ndarray]:
        """A batch of windows drawn from `valid` starts; a pure function of (seed, step)."""
        rng = np.random.default_rng([seed, step])
        return self.windows(valid[rng.integers(len(valid), size=batch)], length)


def to_state(rssm: RSSM, deter: tf.Tensor, stoch: tf.Tensor, classes: int,
             logit: tf.Tensor | None = None) -> State:
    """Stored latents -> an RSSM state dict {deter, stoch one-hot, logit} in the model's dtypes.

    `logit` is the stored posterior's; without it, log of the one-hot (clipped) stands in (the
    prior step does not read it; eq. 8's `probs` and `mode` forms do).
    """
    init = rssm.initial(1)
    onehot = tf.one_hot(tf.cast(stoch, tf.int32), classes)
    logit = tf.math.log(onehot + 1e-8) if logit is None else logit
    return {"deter": tf.cast(deter, init["deter"].dtype),
            "stoch": tf.cast(onehot, init["stoch"].dtype),
            "logit": tf.cast(logit, init["logit"].dtype)}


def cache_key(checkpoint: str) -> str:
    """A short key naming a world-model checkpoint: its path, step and files' modification time."""
    path = pathlib.Path(checkpoint)
    stamps = sorted(f"{p.name}:{p.stat().st_mtime_ns}" for p in path.parent.glob(path.name + ".*"))
    # FORMAT: caches written before the posterior logits were stored get a new key (re-encoded).
    digest = hashlib.sha1("|".join([FORMAT, str(path.resolve()), *stamps]).encode()).hexdigest()[:10]
    return f"{path.name}-{digest}"


class Encoder:
    """Posterior filter over whole episodes, compiled once per (group, chunk) shape."""

    def __init__(self, wm: WorldModel):
        self.wm = wm

    @tf.function
    def _chunk(self, obs: dict[str, tf.Tensor], action: tf.Tensor, is_first: tf.Tensor,
               state: dict[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        data = self.wm.preprocess({**obs, "action": action, "is_first": is_first})
        embed = self.wm.embed(data)
        post, _ = self.wm.rssm.observe(embed, data["action"], data["is_first"], state)
        last = {k: v[:, -1] for k, v in post.items()}
        return post, last

    def __call__(self, episodes: list[dict[str, np.ndarray]]
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Episodes (whole, T_e steps each) -> [(deter (T_e, D), stoch indices (T_e, S),
        posterior logits (T_e, S, K) float16)]."""
        group = min(GROUP, len(episodes))
        length = max(len(e["action"]) for e in episodes)
        obs = [*self.wm.keys.encoder_cnn, *self.wm.keys.encoder_mlp]
        padded = -(-length // CHUNK) * CHUNK
        # Pad to the full group so every call has the same shape (no retracing).
        arrays = {k: np.zeros((group, padded, *episodes[0][k].shape[1:]), episodes[0][k].dtype)
                  for k in (*obs, "action", "is_first")}
        for i, episode in enumerate(episodes):
            for key in arrays:
                arrays[key][i, : len(episode[key])] = episode[key]
        state = self.wm.rssm.initial(group)
        deter, stoch, logit = [], [], []
        for start in range(0, padded, CHUNK):
            part = slice(start, start + CHUNK)
            post, state = self._chunk({k: tf.constant(arrays[k][:, part]) for k in obs},
                                      tf.constant(arrays["action"][:, part]),
                                      tf.constant(arrays["is_first"][:, part]), state)
            deter.append(tf.cast(post["deter"], tf.float32).numpy())
            stoch.append(tf.argmax(post["stoch"], -1).numpy())
            logit.append(tf.cast(post["logit"], tf.float16).numpy())
        deter_all, stoch_all = np.concatenate(deter, 1), np.concatenate(stoch, 1)
        logit_all = np.concatenate(logit, 1)
        return [(deter_all[i, : len(e["action"])], stoch_all[i, : len(e["action"])],
                 logit_all[i, : len(e["action"])]) for i, e in enumerate(episodes)]


def _save(path: pathlib.Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to the temp name
            np.savez_compressed(f, **arrays)


def load_expert_latents(config: Config, run: RunDir, wm: WorldModel, checkpoint: str,
                        split: str) -> ExpertLatents:
    """Latents of the expert `split` (train: the first N_E episodes by index; val: all).

    Episodes already encoded with this world-model checkpoint are read from the cache; the rest
    are encoded (with a progress bar) and cached.
    """
    directory = run.expert_episodes(split)
    paths = list_episodes(directory, skip_corrupt=config.data.skip_corrupt)
    if split == "train":
        count = config.agent.expert_episodes or config.data.expert_train
        if len(paths) < count:
            raise UserError(f"{directory}: {len(paths)} expert episodes, but {count} are needed "
                            "(agent.expert_episodes / data.expert_train); run --phase collect")
        paths = paths[:count]
    if not paths:
        raise UserError(f"{directory}: no expert episodes; run --phase collect first")
    root = run.latents
    key = cache_key(checkpoint)
    cache = root / key
    if root.is_dir():  # latents of older world-model checkpoints are stale
        for old in root.iterdir():
            if old.is_dir() and old.name != key:
                shutil.rmtree(old, ignore_errors=True)
    files = [cache / f"{split}-{p.stem}.npz" for p in paths]
    missing = [(p, f) for p, f in zip(paths, files) if not f.exists()]
    if missing:
        encoder = Encoder(wm)
        bar = tqdm.tqdm(total=len(missing), desc=f"encoding expert {split} episodes", unit="ep")
        for i in range(0, len(missing), GROUP):
            group = missing[i: i + GROUP]
            episodes = [load_episode(p) for p, _ in group]
            for (_, file), episode, (deter, stoch, logit) in zip(group, episodes, encoder(episodes)):
                _save(file, deter=deter, stoch=stoch.astype(np.int16), logit=logit,
                      action=taken_actions(episode))
            bar.update(len(group))
        bar.close()
    parts = []
    for file in files:
        with about(file, "latent cache unreadable", (OSError, ValueError, KeyError), typed=True,
                   hint="; delete it"), np.load(file) as data:
            parts.append({k: data[k] for k in ("deter", "stoch", "logit", "action")})
    return assemble(parts, int(config.world_model.rssm.discrete))


def taken_actions(episode: dict[str, np.ndarray]) -> np.ndarray:
    """The action taken in state t: the episode file's action[t] led to image t, so it is
    `action[t + 1]`; the last step has none (zeros)."""
    action = np.zeros_like(episode["action"])
    action[:-1] = episode["action"][1:]
    return action


def encode_episodes(wm: WorldModel, episodes: list[dict[str, np.ndarray]], classes: int,
                    encoder: Encoder | None = None) -> ExpertLatents:
    """Episodes -> ExpertLatents with the model's current weights, in memory (no cache): for
    measurements during world-model training, when every checkpoint would be a new cache."""
    encoder = encoder or Encoder(wm)
    parts = []
    for i in range(0, len(episodes), GROUP):
        group = episodes[i: i + GROUP]
        parts += [{"deter": d, "stoch": s, "logit": lg, "action": taken_actions(e)}
                  for e, (d, s, lg) in zip(group, encoder(group))]
    return assemble(parts, classes)


def assemble(parts: list[dict[str, np.ndarray]], classes: int) -> ExpertLatents:
    """Per-episode arrays {deter, stoch, logit, action} -> one ExpertLatents."""
    lengths = np.array([len(p["deter"]) for p in parts])
    has_action = np.ones(lengths.sum(), bool)
    has_action[np.cumsum(lengths) - 1] = False
    return ExpertLatents(
        deter=np.concatenate([p["deter"] for p in parts]),
        stoch=np.concatenate([p["stoch"] for p in parts]),
        logit=np.concatenate([p["logit"] for p in parts]),
        action=np.concatenate([p["action"] for p in parts]),
        has_action=has_action,
        starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        classes=classes,
    )
