"""What every agent phase shares: world model + expert latents, and the train loop.

The loop resumes from the newest checkpoint in `LOGDIR/<agent>/checkpoints`, logs to
`LOGDIR/<agent>` (TensorBoard + metrics.jsonl: `train/...` averaged over the log interval and
`val/...` on the held-out expert episodes), shows a progress bar, saves every
`checkpoint_every` updates and at the end, and stops on a non-finite loss without saving, so
the last good checkpoint stays the newest.
"""

from __future__ import annotations

import math
import pathlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import tensorflow as tf
import tqdm

from ditto_tf.agents.latents import ExpertLatents, load_expert_latents, to_state
from ditto_tf.checkpoints import Checkpointer
from ditto_tf.config import Config
from ditto_tf.envs import make_env
from ditto_tf.errors import UserError
from ditto_tf.logger import Logger, summary_line
from ditto_tf.rundir import RunDir

Metrics = Mapping[str, Any]


def action_space(config: Config, logdir: str | pathlib.Path) -> tuple[int, bool]:
    """(action size, discrete) of the run's task, from its spec (no environment is built;
    see `RunDir.action_space` for run directories older than the spec's `discrete`)."""
    return RunDir(logdir).action_space(config)


def observation_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """{observation key: shape} the task's env offers with this config (image and/or vector)."""
    from ditto_tf.obs_keys import env_shapes

    env = make_env(config, seed=config.seed)
    try:
        return env_shapes(env)
    finally:
        env.close()


def world_model_checkpoint(logdir: str | pathlib.Path) -> str:
    """The newest world-model checkpoint in the logdir, or a one-line error."""
    directory = RunDir(logdir).wm_checkpoints
    latest = tf.train.latest_checkpoint(str(directory))
    if latest is None:
        raise UserError(f"{directory}: no world-model checkpoint; run --phase world_model first")
    return latest


@dataclass
class LatentSetup:
    """A trained world model and the expert episodes encoded with it."""

    wm: Any
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


def prepare_latent(config: Config, logdir: pathlib.Path) -> LatentSetup:
    """Load the world model from the logdir and encode (or read cached) expert latents."""
    from ditto_tf.wm_training import load_world_model  # the world-model phase owns loading

    act_dim, discrete = action_space(config, logdir)
    wm = load_world_model(config, logdir)
    checkpoint = world_model_checkpoint(logdir)
    train = load_expert_latents(config, logdir, wm, checkpoint, "train")
    val = load_expert_latents(config, logdir, wm, checkpoint, "val")
    return LatentSetup(wm, checkpoint, train, val, act_dim, discrete)


def validation_windows(setup: LatentSetup, length: int, count: int, seed: int
                       ) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """A fixed set of held-out expert windows (states, actions) with an action at every step."""
    valid = setup.val.window_starts(length, with_actions=True)
    rng = np.random.default_rng([seed, 7919])
    starts = valid if len(valid) <= count else np.sort(rng.choice(valid, count, replace=False))
    windows = setup.val.windows(starts, length)
    return setup.states(windows), tf.constant(windows["action"])


def already_trained(logdir: pathlib.Path, name: str, steps: int) -> bool:
    """True (and says so) when the newest checkpoint of `name` already has `steps` updates,
    so a finished phase returns without loading the world model or the data."""
    run = RunDir(logdir)
    directory = run.checkpoints(name)
    done = run.latest_step(name)
    if done and done >= steps:
        print(f"{name}: already trained for {done} >= {steps} updates ({directory})")
        return True
    return False


def _finite_check(name: str, metrics: Mapping[str, float], step: int, ckpt: Checkpointer) -> None:
    for key, value in metrics.items():
        if key.endswith("loss") and not math.isfinite(value):
            latest = ckpt.manager.latest_checkpoint or "none yet"
            raise UserError(
                f"{name}: {key} is {value} at update {step}; stopped without saving, the last good "
                f"checkpoint is kept ({latest}). Try a lower learning rate or check the world model")


def train_loop(config: Config, logdir: pathlib.Path, name: str, steps: int,
               trackables: Mapping[str, Any], update: Callable[[int], Metrics],
               validate: Callable[[], Metrics] | None = None) -> int:
    """Run `update(step)` for steps [resumed step, steps); returns the final step.

    `update(step)` gets the number of updates done before it (batches are a pure function of it,
    so a resumed run continues the same stream).
    """
    run = RunDir(logdir)
    directory = run.phase_dir(name)
    ckpt = Checkpointer(run.checkpoints(name), config.keep_checkpoints, **trackables)
    start = ckpt.restore()
    if start >= steps:
        print(f"{name}: already trained for {start} >= {steps} updates ({directory})")
        return start
    logger = Logger(directory, resume_step=start)  # drops rows of updates redone after a kill
    sums: dict[str, float] = {}
    headline: dict[str, float] = {}  # the last logged train and val metrics, for the summary
    count, last_time, began = 0, time.time(), time.time()
    bar = tqdm.tqdm(total=steps, initial=start, desc=name, unit="upd", dynamic_ncols=True)
    step = start
    for step in range(start + 1, steps + 1):
        metrics = {k: float(v) for k, v in update(step - 1).items()}
        try:
            _finite_check(name, metrics, step, ckpt)
        except UserError:
            bar.close()  # first, so that the one-line error starts its own line
            raise
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value
        count += 1
        bar.update(1)
        if step % config.log_every == 0 or step == steps:
            now = time.time()
            logger.scalars({k: v / count for k, v in sums.items()}, prefix="train/")
            logger.scalar("train/updates_per_second", count / max(now - last_time, 1e-9))
            headline.update({k: v / count for k, v in sums.items()})
            shown = {}
            if validate is not None:
                val = {k: float(v) for k, v in validate().items()}
                logger.scalars(val, prefix="val/")
                headline.update(val)  # held-out values win over training ones of the same name
                shown = {k: val[k] for k in ("latent_distance", "action_accuracy") if k in val}
            logger.write(step)
            loss_key = next((k for k in sums if k.endswith("loss")), None)
            if loss_key:
                shown[loss_key] = sums[loss_key] / count
            bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()})
            sums, count, last_time = {}, 0, now
        if step % config.checkpoint_every == 0 or step == steps:
            ckpt.save(step)
    bar.close()
    print(summary_line(name, step, steps, step - start, time.time() - began, headline), flush=True)
    return step
