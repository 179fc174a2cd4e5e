"""Policies that act in the true environment from raw observation dicts, batched over envs.

    policy = load_policy(config, RunDir(logdir), 'ditto', checkpoint)   # or 'dgail', 'dbc', 'bc'
    episodes = drive(envs, policy, quotas(20, len(envs)))      # ditto_tf.driver: an actor
    actions = policy.act(obs)          # (N, A): one-hot rows for discrete envs, else vectors
    policy.load(other_checkpoint)      # e.g. the last 10 checkpoints, world model loaded once

Latent agents (DITTO, D-GAIL, D-BC) filter the frames with the world model's encoder and RSSM
posterior (`obs_step` with the previous action, reset where `is_first`) and act on the state
features, as in training. BC acts on the (stacked) observations directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import tensorflow as tf

from ditto_tf.agents.actor_critic import action_dist, dist_mode, make_actor
from ditto_tf.agents.runner import observation_shapes
from ditto_tf.config import Config
from ditto_tf.checkpoints import RESTORE_ERRORS
from ditto_tf.errors import UserError, about
from ditto_tf.rundir import RunDir
from ditto_tf.runs import LATENT_AGENTS

if TYPE_CHECKING:
    from ditto_tf.world_model import WorldModel
# World models loaded by `load_policy`, keyed by their checkpoint: evaluating the last 10 agent
# checkpoints builds and restores the world model once, not 10 times.
_WORLD_MODELS: dict[tuple[str, str], WorldModel] = {}


def _restore(path: str, **objects: Any) -> None:
    """Restore only `objects` (e.g. the actor) from an agent checkpoint, or a one-line error."""
    if not tf.io.gfile.exists(f"{path}.index"):
        raise UserError(f"{path}: agent checkpoint not found")
    with about(path, "checkpoint cannot be restored", RESTORE_ERRORS):
        tf.train.Checkpoint(**objects).restore(path).expect_partial().assert_existing_objects_matched()


class LatentPolicy:
    """Encoder + RSSM posterior filter + actor; keeps one filter state per env."""

    def __init__(self, config: Config, wm: WorldModel, act_dim: int, discrete: bool,
                 checkpoint: str | None = None, deterministic: bool = False):
        self.wm, self.act_dim, self.discrete = wm, act_dim, discrete
        self.deterministic = deterministic
        self.actor = make_actor(config, act_dim, discrete)
        self.actor(tf.zeros([1, wm.rssm.feat_size]))
        self.state: dict[str, tf.Tensor] | None = None
        self.prev_action: tf.Tensor | None = None
        if checkpoint:
            self.load(checkpoint)

    def load(self, checkpoint: str) -> None:
        """Load the actor of an agent checkpoint (the world model stays); resets the filter."""
        _restore(checkpoint, actor=self.actor)
        self.reset()

    def reset(self, index: int | None = None, seed: int | None = None) -> None:
        """index None: forget every env's filter state. An env's new episode needs nothing: its
        filter restarts at the observation's `is_first`."""
        if index is None:
            self.state, self.prev_action = None, None

    @tf.function
    def _step(self, obs: dict[str, tf.Tensor], is_first: tf.Tensor, state: dict[str, tf.Tensor],
              prev_action: tf.Tensor, mode: bool) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        data = self.wm.preprocess({**obs, "action": prev_action, "is_first": is_first})
        embed = self.wm.embed(data)
        post, _ = self.wm.rssm.obs_step(state, data["action"], embed, data["is_first"])
        dist = action_dist(self.actor(self.wm.rssm.get_feat(post)), self.discrete)
        action = dist_mode(dist, self.discrete) if mode else dist.sample()
        return tf.stop_gradient(action), post

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """obs: {image (N, H, W, C) uint8 and/or vector (N, D), is_first (N,) bool, ...}
        -> actions (N, A) float32."""
        keys = [*self.wm.keys.encoder_cnn, *self.wm.keys.encoder_mlp]
        missing = [k for k in keys if k not in obs]
        if missing:
            raise UserError(f"the world model reads {missing}, which the env does not offer "
                            f"(it offers {sorted(obs)}); check world_model cnn_keys / mlp_keys")
        inputs = {k: tf.constant(np.asarray(obs[k])) for k in keys}
        count = len(obs["is_first"])
        is_first = np.asarray(obs["is_first"], bool)
        if self.state is None or int(self.state["deter"].shape[0]) != count:
            self.state = self.wm.rssm.initial(count)
            self.prev_action = tf.zeros([count, self.act_dim], tf.float32)
            is_first = np.ones(count, bool)
        action, self.state = self._step(inputs, tf.constant(is_first), self.state,
                                        self.prev_action, self.deterministic)
        self.prev_action = action
        return action.numpy()

    def record_actions(self, actions: np.ndarray) -> None:
        """The actions really taken after the last call (N, A), when someone else drove the env
        (e.g. the expert, to measure agreement on its states): the filter conditions on them."""
        self.prev_action = tf.constant(actions, tf.float32)


class BCPolicy:
    """The BC net on the last `bc.frame_stack` observations of each env."""

    def __init__(self, config: Config, act_dim: int, discrete: bool, checkpoint: str | None = None,
                 deterministic: bool = False, shapes: dict[str, tuple[int, ...]] | None = None):
        from ditto_tf.agents.bc import BCNet  # bc.py pulls in the data modules

        self.net = BCNet(config, act_dim, discrete, shapes, name="bc")
        self.discrete, self.deterministic = discrete, deterministic
        self.frames: dict[str, np.ndarray] | None = None  # key -> (N, k, ...)
        if checkpoint:
            self.load(checkpoint)

    def load(self, checkpoint: str) -> None:
        _restore(checkpoint, bc=self.net)
        self.reset()

    def reset(self, index: int | None = None, seed: int | None = None) -> None:
        """index None: forget every env's frames. An env's new episode needs nothing: its stack
        restarts at the observation's `is_first`."""
        if index is None:
            self.frames = None

    @tf.function
    def _act(self, obs: dict[str, tf.Tensor], mode: bool) -> tf.Tensor:
        dist = self.net.dist(obs)
        return dist_mode(dist, self.discrete) if mode else dist.sample()

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """As `LatentPolicy.act`, from the last `bc.frame_stack` observations of each env."""
        from ditto_tf.agents.bc import stack_vectors

        current = {}
        if self.net.cnn_keys:
            current["image"] = np.asarray(obs["image"])
        if self.net.mlp_keys:
            current["vector"] = stack_vectors(obs, self.net.mlp_keys)
        is_first = np.asarray(obs["is_first"], bool)
        count, k = len(is_first), self.net.frame_stack
        if self.frames is None or len(next(iter(self.frames.values()))) != count:
            self.frames = {key: np.repeat(x[:, None], k, 1) for key, x in current.items()}
        else:
            for key, x in current.items():
                frames = np.concatenate([self.frames[key][:, 1:], x[:, None]], 1)
                frames[is_first] = x[is_first][:, None]  # new episode: repeat its first step
                self.frames[key] = frames
        stacked = {}
        if "image" in self.frames:  # (N, k, H, W, C) -> (N, H, W, k * C), oldest first
            stacked["image"] = np.moveaxis(self.frames["image"], 1, -2).reshape(count, *current["image"].shape[1:3], -1)
        if "vector" in self.frames:
            stacked["vector"] = self.frames["vector"].reshape(count, -1)
        return self._act({key: tf.constant(x) for key, x in stacked.items()},
                         self.deterministic).numpy()

    def record_actions(self, actions: np.ndarray) -> None:
        """As `LatentPolicy.record_actions`; BC looks at frames only, so nothing to do."""


def load_policy(config: Config, run: RunDir, agent: str,
                checkpoint: str | None = None, wm: WorldModel | None = None,
                deterministic: bool = False) -> LatentPolicy | BCPolicy:
    """The policy of `agent` in the run, loaded from `checkpoint` (default: the newest one).

    Pass `wm` to share one loaded world model between several latent policies.
    """
    if agent not in (*LATENT_AGENTS, "bc"):
        raise UserError(f"agent {agent!r} is not one of ditto, dgail, dbc, bc")
    if checkpoint is None:
        checkpoint = tf.train.latest_checkpoint(str(run.checkpoints(agent)))
        if checkpoint is None:
            raise UserError(f"{run.checkpoints(agent)}: no {agent} checkpoint; train it first")
    act_dim, discrete = run.action_space(config)
    if agent == "bc":
        return BCPolicy(config, act_dim, discrete, checkpoint, deterministic,
                        observation_shapes(config))
    if wm is None:
        from ditto_tf.agents.runner import world_model_checkpoint
        from ditto_tf.wm_training import load_world_model

        key = (str(run.root.resolve()), world_model_checkpoint(run))
        if key not in _WORLD_MODELS:
            _WORLD_MODELS.clear()  # keep at most one world model alive
            _WORLD_MODELS[key] = load_world_model(config, run)
        wm = _WORLD_MODELS[key]
    return LatentPolicy(config, wm, act_dim, discrete, checkpoint, deterministic)
