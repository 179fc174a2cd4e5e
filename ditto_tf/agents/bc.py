"""Pixel behaviour cloning: a CNN shaped like the world-model encoder plus an MLP, end to end.

The network sees the frame at step t (with the `bc.frame_stack - 1` frames before it stacked on
the channel axis, the first frame repeated at an episode start) and is trained by maximum
likelihood on the action the expert took there, `action[t + 1]` of the episode file. No world
model is involved. Validation: action accuracy (continuous: mean absolute error) and
log-likelihood on the held-out expert episodes.
"""

from __future__ import annotations

import pathlib
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ditto_tf.agents.actor_critic import Optimizer, action_dist, dist_mode
from ditto_tf.agents.runner import action_space, already_trained, train_loop
from ditto_tf.data.episodes import load_episodes
from ditto_tf.errors import UserError
from ditto_tf.nets import MLP, ConvEncoder
from ditto_tf.world_model import image_shape, precision_policy

VAL_LIMIT = 2048  # held-out (frame, action) pairs scored at each validation


class BCNet(keras.Model):
    """Stacked frames (..., H, W, C * k) uint8 -> action distribution parameters."""

    def __init__(self, config: Any, act_dim: int, discrete: bool, **kwargs):
        kwargs.setdefault("dtype", precision_policy(config))
        super().__init__(**kwargs)
        c, enc = config.bc, config.world_model.encoder
        self.act_dim, self.discrete, self.frame_stack = act_dim, discrete, c.frame_stack
        self.encoder = ConvEncoder(c.depth, enc.kernels, enc.act, name="encoder", dtype=self.dtype_policy)
        self.head = MLP(act_dim if discrete else 2 * act_dim, c.mlp.layers, c.mlp.units, c.mlp.act,
                        name="head", dtype=self.dtype_policy)
        height, width, channels = image_shape(config)
        self.encoder.embed_size((height, width))  # a one-line error if the kernels do not fit
        self(tf.zeros([1, height, width, channels * c.frame_stack], tf.uint8))

    def call(self, image: tf.Tensor) -> tf.Tensor:
        x = tf.cast(image, self.compute_dtype) / 255.0 - 0.5
        return self.head(self.encoder(x))

    def dist(self, image: tf.Tensor) -> Any:
        return action_dist(self(image), self.discrete)


class FrameData:
    """Expert frames in memory with stacked-frame indices and the action taken at each step."""

    def __init__(self, episodes: list[dict[str, np.ndarray]], frame_stack: int):
        self.image = np.concatenate([e["image"] for e in episodes])
        taken = []
        history = []
        offset = 0
        for e in episodes:
            length = len(e["image"])
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
        has_action[np.cumsum([len(e["image"]) for e in episodes]) - 1] = False
        self.pairs = np.flatnonzero(has_action)

    def batch(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stacked frames (B, H, W, C * k) and actions (B, A) at global steps `index`."""
        frames = self.image[self.history[index]]  # (B, k, H, W, C)
        frames = np.moveaxis(frames, 1, -2)  # (B, H, W, k, C): oldest frame first on channels
        return frames.reshape(*frames.shape[:3], -1), self.action[index]


def _load(config: Any, logdir: pathlib.Path, split: str) -> FrameData:
    directory = logdir / "data" / "expert" / split
    limit = (config.agent.expert_episodes or config.data.expert_train) if split == "train" else None
    episodes = load_episodes(directory, limit, skip_corrupt=config.data.skip_corrupt)
    if not episodes or (limit is not None and len(episodes) < limit):
        raise UserError(f"{directory}: {len(episodes)} expert episodes, need {limit or 1}; "
                        "run --phase collect first")
    return FrameData(episodes, config.bc.frame_stack)


class BC:
    """The BC net, its optimizer and the compiled update / validation."""

    def __init__(self, config: Any, act_dim: int, discrete: bool):
        self.config, self.discrete = config, discrete
        self.net = BCNet(config, act_dim, discrete, name="bc")
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
    def update(self, image: tf.Tensor, action: tf.Tensor) -> dict[str, tf.Tensor]:
        action = self._clip(action)
        with tf.GradientTape() as tape:
            dist = self.net.dist(image)
            log_prob = tf.reduce_mean(dist.log_prob(action))
            loss = -log_prob
        metrics = self.opt(tape, loss, "bc")
        metrics.update({"log_prob": log_prob, "actor_entropy": tf.reduce_mean(dist.entropy())})
        metrics.update(self._score(dist, action))
        return metrics

    @tf.function
    def evaluate(self, image: tf.Tensor, action: tf.Tensor) -> dict[str, tf.Tensor]:
        action = self._clip(action)
        dist = self.net.dist(image)
        return {"expert_log_prob": tf.reduce_mean(dist.log_prob(action)), **self._score(dist, action)}


def run(config: Any, logdir: pathlib.Path) -> None:
    """`--phase bc`: pixel BC on the expert train episodes in the logdir."""
    if already_trained(logdir, "bc", config.bc.steps):
        return
    act_dim, discrete = action_space(config)
    train, val = _load(config, logdir, "train"), _load(config, logdir, "val")
    agent = BC(config, act_dim, discrete)
    rng = np.random.default_rng([config.seed, 7919])
    val_index = val.pairs if len(val.pairs) <= VAL_LIMIT else np.sort(
        rng.choice(val.pairs, VAL_LIMIT, replace=False))
    val_image, val_action = (tf.constant(x) for x in val.batch(val_index))

    def update(step: int) -> dict[str, tf.Tensor]:
        index = train.pairs[np.random.default_rng([config.seed, step]).integers(
            len(train.pairs), size=config.bc.batch)]
        image, action = train.batch(index)
        return agent.update(tf.constant(image), tf.constant(action))

    def validate() -> dict[str, tf.Tensor]:
        chunks = [agent.evaluate(val_image[i: i + 512], val_action[i: i + 512])
                  for i in range(0, len(val_index), 512)]
        weights = [min(512, len(val_index) - i) for i in range(0, len(val_index), 512)]
        return {k: sum(float(c[k]) * w for c, w in zip(chunks, weights)) / sum(weights)
                for k in chunks[0]}

    train_loop(config, logdir, "bc", config.bc.steps, agent.trackables(), update, validate)
