"""Behaviour cloning: a CNN shaped like the world-model encoder plus an MLP, end to end, on what
the world-model encoder reads (its `cnn_keys` / `mlp_keys`): images, vectors or both.

The network sees the observation at step t (with the `bc.frame_stack - 1` before it stacked: on
the channel axis for images, concatenated for vectors; the first one repeated at an episode
start) and is trained by maximum likelihood on the action the expert took there,
`action[t + 1]` of the episode file. Vectors are standardised with the statistics of the expert
training episodes, saved with the net. No world model is involved. Validation: action accuracy
(continuous: mean absolute error) and log-likelihood on the held-out expert episodes.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ditto_tf.agents.actor_critic import Optimizer, action_dist, dist_mode
from ditto_tf import obs_keys
from ditto_tf.agents.runner import already_trained, train_agent
from ditto_tf.config import Config
from ditto_tf.data.episodes import load_episodes
from ditto_tf.errors import UserError, within
from ditto_tf.nets import MLP, ConvEncoder, Standardize
from ditto_tf.rundir import RunDir
from ditto_tf.wm_data import MIN_STD
from ditto_tf.world_model import image_shape, precision_policy

VAL_LIMIT = 2048  # held-out (frame, action) pairs scored at each validation


def bc_keys(config: Config, shapes: dict[str, tuple[int, ...]]) -> obs_keys.Keys:
    """The observation keys BC reads: the world-model encoder's (so BC and the latent agents
    see the same observations)."""
    return obs_keys.select(config, shapes)


class BCNet(keras.Model):
    """Stacked observations {image (..., H, W, C * k) uint8, vector (..., D * k)} -> action
    distribution parameters. `shapes`: the env's observation shapes (default: the image)."""

    def __init__(self, config: Config, act_dim: int, discrete: bool,
                 shapes: dict[str, tuple[int, ...]] | None = None, **kwargs):
        kwargs.setdefault("dtype", precision_policy(config))
        super().__init__(**kwargs)
        c, enc = config.bc, config.world_model.encoder
        self.act_dim, self.discrete, self.frame_stack = act_dim, discrete, int(c.frame_stack)
        if self.frame_stack < 1:
            raise UserError(f"bc.frame_stack: {c.frame_stack}; want at least 1")
        shapes = {"image": image_shape(config)} if shapes is None else shapes
        keys = bc_keys(config, shapes)
        self.cnn_keys, self.mlp_keys = keys.encoder_cnn, keys.encoder_mlp
        self.encoder = self.standardize = None
        if self.cnn_keys:
            self.encoder = ConvEncoder(c.depth, enc.kernels, enc.act, name="encoder",
                                       dtype=self.dtype_policy)
            self.encoder.embed_size(image_shape(config))  # a one-line error if the kernels do not fit
        self.vector_size = sum(int(shapes[k][0]) for k in self.mlp_keys)
        if self.mlp_keys:
            self.standardize = Standardize(self.vector_size * self.frame_stack, name="standardize")
        self.head = MLP(act_dim if discrete else 2 * act_dim, c.mlp.layers, c.mlp.units, c.mlp.act,
                        name="head", dtype=self.dtype_policy)
        height, width, channels = image_shape(config)
        zeros = {}
        if self.cnn_keys:
            zeros["image"] = tf.zeros([1, height, width, channels * self.frame_stack], tf.uint8)
        if self.mlp_keys:
            zeros["vector"] = tf.zeros([1, self.vector_size * self.frame_stack])
        self(zeros)

    def set_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Standardisation of one step's vector (D,), repeated for each stacked step."""
        self.standardize.set(np.tile(mean, self.frame_stack), np.tile(std, self.frame_stack))

    def call(self, obs: dict[str, tf.Tensor]) -> tf.Tensor:
        parts = []
        if self.encoder is not None:
            parts.append(self.encoder(tf.cast(obs["image"], self.compute_dtype) / 255.0 - 0.5))
        if self.standardize is not None:
            parts.append(tf.cast(self.standardize(obs["vector"]), self.compute_dtype))
        return self.head(parts[0] if len(parts) == 1 else tf.concat(parts, -1))

    def dist(self, obs: dict[str, tf.Tensor]) -> Any:
        return action_dist(self(obs), self.discrete)


def stack_vectors(episode: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    """The mlp keys of one episode side by side: (T, D) float32."""
    return np.concatenate([np.asarray(episode[k], np.float32) for k in keys], -1)


class FrameData:
    """Expert observations in memory with stacked-step indices and the action taken at each step.

    `keys`: the cnn keys (at most `image`) and mlp keys BC reads; mlp keys are concatenated into
    one `vector`.
    """

    def __init__(self, episodes: list[dict[str, np.ndarray]], frame_stack: int,
                 cnn_keys: list[str] = ("image",), mlp_keys: list[str] = ()):
        self.arrays: dict[str, np.ndarray] = {}
        if cnn_keys:
            self.arrays["image"] = np.concatenate([e["image"] for e in episodes])
        if mlp_keys:
            self.arrays["vector"] = np.concatenate([stack_vectors(e, list(mlp_keys)) for e in episodes])
        taken = []
        history = []
        offset = 0
        for e in episodes:
            length = len(e["action"])
            action = np.zeros_like(e["action"])
            action[:-1] = e["action"][1:]  # action[t] led to image[t]: the one taken at t is t+1
            taken.append(action)
            steps = np.arange(length)
            # index of frame t - j for j = k-1 .. 0, clamped to the episode's first frame
            lag = np.maximum(steps[:, None] - np.arange(frame_stack - 1, -1, -1)[None], 0)
            history.append(offset + lag)
            offset += length
        self.action = np.concatenate(taken)
        self.history = np.concatenate(history)
        has_action = np.ones(offset, bool)
        has_action[np.cumsum([len(e["action"]) for e in episodes]) - 1] = False
        self.pairs = np.flatnonzero(has_action)

    def batch(self, index: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Stacked observations {image (B, H, W, C * k), vector (B, D * k)} and actions (B, A)
        at global steps `index`; the oldest step comes first."""
        obs = {}
        if "image" in self.arrays:
            frames = self.arrays["image"][self.history[index]]  # (B, k, H, W, C)
            frames = np.moveaxis(frames, 1, -2)  # (B, H, W, k, C): oldest frame first on channels
            obs["image"] = frames.reshape(*frames.shape[:3], -1)
        if "vector" in self.arrays:
            vectors = self.arrays["vector"][self.history[index]]  # (B, k, D)
            obs["vector"] = vectors.reshape(len(index), -1)
        return obs, self.action[index]


def _load(config: Config, run: RunDir, split: str
          ) -> tuple[list[dict[str, np.ndarray]], dict[str, tuple[int, ...]]]:
    """The expert episodes of `split` and their observation shapes."""
    directory = run.expert_episodes(split)
    limit = (config.agent.expert_episodes or config.data.expert_train) if split == "train" else None
    episodes = load_episodes(directory, limit, skip_corrupt=config.data.skip_corrupt)
    if not episodes or (limit is not None and len(episodes) < limit):
        raise UserError(f"{directory}: {len(episodes)} expert episodes, need {limit or 1}; "
                        "run --phase collect first")
    shapes = {k: episodes[0][k].shape[1:] for k in obs_keys.OBS_KEYS if k in episodes[0]}
    with within(directory):
        bc_keys(config, shapes)
    return episodes, shapes


class BC:
    """The BC net, its optimizer and the compiled update / validation."""

    def __init__(self, config: Config, act_dim: int, discrete: bool,
                 shapes: dict[str, tuple[int, ...]] | None = None):
        self.config, self.discrete = config, discrete
        self.net = BCNet(config, act_dim, discrete, shapes, name="bc")
        self.opt = Optimizer(self.net, config.bc.lr, config.agent.eps, config.agent.clip, "bc_opt")

    def trackables(self) -> dict[str, Any]:
        return {"bc": self.net, "bc_opt": self.opt.optimizer}

    def _score(self, dist: Any, action: tf.Tensor) -> dict[str, tf.Tensor]:
        mode = dist_mode(dist, self.discrete)
        if self.discrete:
            match = tf.argmax(mode, -1) == tf.argmax(action, -1)
            return {"action_accuracy": tf.reduce_mean(tf.cast(match, tf.float32))}
        return {"action_error": tf.reduce_mean(tf.abs(mode - action))}

    def _clip(self, action: tf.Tensor) -> tf.Tensor:
        return action if self.discrete else tf.clip_by_value(action, -1.0 + 1e-4, 1.0 - 1e-4)

    @tf.function
    def update(self, obs: dict[str, tf.Tensor], action: tf.Tensor) -> dict[str, tf.Tensor]:
        action = self._clip(action)
        with tf.GradientTape() as tape:
            dist = self.net.dist(obs)
            log_prob = tf.reduce_mean(dist.log_prob(action))
            loss = -log_prob
        metrics = self.opt(tape, loss, "bc")
        metrics.update({"log_prob": log_prob, "actor_entropy": tf.reduce_mean(dist.entropy())})
        metrics.update(self._score(dist, action))
        return metrics

    @tf.function
    def evaluate(self, obs: dict[str, tf.Tensor], action: tf.Tensor) -> dict[str, tf.Tensor]:
        action = self._clip(action)
        dist = self.net.dist(obs)
        return {"expert_log_prob": tf.reduce_mean(dist.log_prob(action)), **self._score(dist, action)}


def run(config: Config, run: RunDir) -> None:
    """`--phase bc`: BC on the run's expert train episodes."""
    if already_trained(run, "bc", config.bc.steps):
        return
    act_dim, discrete = run.action_space(config)
    (train_eps, shapes), (val_eps, _) = _load(config, run, "train"), _load(config, run, "val")
    agent = BC(config, act_dim, discrete, shapes)
    net, stack = agent.net, config.bc.frame_stack
    train = FrameData(train_eps, stack, net.cnn_keys, net.mlp_keys)
    val = FrameData(val_eps, stack, net.cnn_keys, net.mlp_keys)
    if net.mlp_keys:  # statistics of the data BC learns from; a resumed run restores the saved ones
        vector = train.arrays["vector"].astype(np.float64)
        net.set_statistics(vector.mean(0), np.maximum(vector.std(0), MIN_STD))
    rng = np.random.default_rng([config.seed, 7919])
    val_index = val.pairs if len(val.pairs) <= VAL_LIMIT else np.sort(
        rng.choice(val.pairs, VAL_LIMIT, replace=False))
    val_obs, val_action = val.batch(val_index)
    val_obs = {k: tf.constant(v) for k, v in val_obs.items()}
    val_action = tf.constant(val_action)

    def update(step: int) -> dict[str, tf.Tensor]:
        index = train.pairs[np.random.default_rng([config.seed, step]).integers(
            len(train.pairs), size=config.bc.batch)]
        obs, action = train.batch(index)
        return agent.update({k: tf.constant(v) for k, v in obs.items()}, tf.constant(action))

    def validate() -> dict[str, tf.Tensor]:
        chunks = [agent.evaluate({k: v[i: i + 512] for k, v in val_obs.items()},
                                 val_action[i: i + 512])
                  for i in range(0, len(val_index), 512)]
        weights = [min(512, len(val_index) - i) for i in range(0, len(val_index), 512)]
        return {k: sum(float(c[k]) * w for c, w in zip(chunks, weights)) / sum(weights)
                for k in chunks[0]}

    train_agent(config, run, "bc", config.bc.steps, agent.trackables(), update, validate)
