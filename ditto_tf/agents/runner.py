"""What every agent phase shares: world model + expert latents, and `train_agent`.

`train_agent` resumes from the newest checkpoint in `LOGDIR/<agent>/checkpoints` and runs the
shared loop of `ditto_tf.training` (TensorBoard + metrics.jsonl in `LOGDIR/<agent>`: `train/...`
averaged over the log interval and `val/...` on the held-out expert episodes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import tensorflow as tf

from ditto_tf.agents.latents import ExpertLatents, load_expert_latents, to_state
from ditto_tf.checkpoints import Checkpointer
from ditto_tf.config import Config
from ditto_tf.envs import make_env
from ditto_tf.errors import UserError
from ditto_tf.rundir import RunDir
from ditto_tf.training import Metrics, Phase, train_loop

if TYPE_CHECKING:
    from ditto_tf.world_model import WorldModel


def observation_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """{observation key: shape} the task's env offers with this config (image and/or vector)."""
    from ditto_tf.obs_keys import env_shapes

    env = make_env(config, seed=config.seed)
    try:
        return env_shapes(env)
    finally:
        env.close()


def world_model_checkpoint(run: RunDir) -> str:
    """The newest world-model checkpoint of the run, or a one-line error."""
    directory = run.wm_checkpoints
    latest = tf.train.latest_checkpoint(str(directory))
    if latest is None:
        raise UserError(f"{directory}: no world-model checkpoint; run --phase world_model first")
    return latest


@dataclass
class LatentSetup:
    """A trained world model and the expert episodes encoded with it."""

    wm: WorldModel
    checkpoint: str
    train: ExpertLatents
    val: ExpertLatents
    act_dim: int
    discrete: bool

    def states(self, windows: Mapping[str, np.ndarray]) -> dict[str, tf.Tensor]:
        """Stored windows -> RSSM state dicts (B, L, ...)."""
        return to_state(self.wm.rssm, tf.constant(windows["deter"]), tf.constant(windows["stoch"]),
                        self.train.classes,
                        tf.constant(windows["logit"]) if "logit" in windows else None)


def prepare_latent(config: Config, run: RunDir) -> LatentSetup:
    """Load the run's world model and encode (or read cached) expert latents."""
    from ditto_tf.wm_training import load_world_model  # the world-model phase owns loading

    act_dim, discrete = run.action_space(config)
    wm = load_world_model(config, run)
    checkpoint = world_model_checkpoint(run)
    train = load_expert_latents(config, run, wm, checkpoint, "train")
    val = load_expert_latents(config, run, wm, checkpoint, "val")
    return LatentSetup(wm, checkpoint, train, val, act_dim, discrete)


def validation_windows(setup: LatentSetup, length: int, count: int, seed: int
                       ) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """A fixed set of held-out expert windows (states, actions) with an action at every step."""
    valid = setup.val.window_starts(length, with_actions=True)
    rng = np.random.default_rng([seed, 7919])
    starts = valid if len(valid) <= count else np.sort(rng.choice(valid, count, replace=False))
    windows = setup.val.windows(starts, length)
    return setup.states(windows), tf.constant(windows["action"])


def already_trained(run: RunDir, name: str, steps: int) -> bool:
    """True (and says so) when the newest checkpoint of `name` already has `steps` updates,
    so a finished phase returns without loading the world model or the data."""
    directory = run.checkpoints(name)
    done = run.latest_step(name)
    if done and done >= steps:
        print(f"{name}: already trained for {done} >= {steps} updates ({directory})")
        return True
    return False


def train_agent(config: Config, run: RunDir, name: str, steps: int,
                trackables: Mapping[str, Any], update: Callable[[int], Metrics],
                validate: Callable[[], Metrics] | None = None) -> int:
    """Resume agent `name` from its newest checkpoint and run `ditto_tf.training.train_loop` up
    to `steps` updates (logging to the phase's folder); returns the final step."""
    directory = run.phase_dir(name)
    checkpointer = Checkpointer(run.checkpoints(name), config.keep_checkpoints, **trackables)
    start = checkpointer.restore()
    if start >= steps:
        print(f"{name}: already trained for {start} >= {steps} updates ({directory})")
        return start
    return train_loop(config, Phase(name, directory, steps, update, validate), checkpointer, start)
