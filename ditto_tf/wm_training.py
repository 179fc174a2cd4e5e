"""`--phase world_model`: train the world model on the collected episodes, resumably.

    python train.py --configs cartpole small --logdir DIR --phase world_model

Reads LOGDIR/data/wm (+ LOGDIR/data/expert/train if `world_model.train_on_expert`), writes
LOGDIR/world_model/{checkpoints/, model.json, metrics.jsonl, margin.json, TensorBoard events}.
At the video interval it also logs DITTO's signal margin (`ditto_tf.margin`) as
`eval/ditto_margin_*`. Checkpoints
hold the model, the optimizer and the step; the data stream is a pure function of (seed, step),
so the step is the whole sampler state and a killed run resumes where its last checkpoint was.
"""

from __future__ import annotations

import math
import pathlib
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

from ditto_tf.checkpoints import RESTORE_ERRORS, Checkpointer
from ditto_tf.config import Config
from ditto_tf.data.dataset import make_dataset
from ditto_tf.data.episodes import load_episodes
from ditto_tf.errors import UserError, about, within
from ditto_tf.logger import Logger
from ditto_tf.margin import PhaseMargin
from ditto_tf.rundir import RunDir
from ditto_tf.training import Phase, train_loop
from ditto_tf.wm_data import data_shapes, model_shapes, vector_statistics
from ditto_tf.world_model import WorldModel, WorldModelTrainer, video_strip

VIDEO_EPISODES = 6  # DreamerV2 shows 6 sequences side by side


def train_dirs(config: Config, run: RunDir) -> list[pathlib.Path]:
    """The episode directories the world model trains on."""
    dirs = [run.wm_episodes]
    if config.world_model.train_on_expert:
        dirs.append(run.expert_episodes("train"))
    for directory in dirs:
        if not directory.is_dir() or not any(directory.glob("*.npz")):
            raise UserError(f"{directory}: no episodes; run `--phase collect` first")
    return dirs


def _action_size(run: RunDir) -> int:
    """From model.json (written by training), else from the first episode found."""
    spec = run.spec()
    if spec is not None:
        return int(spec["action_size"])
    for name in ("expert_train", "wm", "expert_val"):
        episodes = load_episodes(run.episodes(name), limit=1)
        if episodes:
            return int(episodes[0]["action"].shape[-1])
    raise UserError(f"{run.model_spec}: missing, and no episodes under {run.data} to infer the action size")


def load_world_model(config: Config, run: RunDir) -> WorldModel:
    """Build the world model of `config` and restore the run's latest world-model checkpoint."""
    directory = run.wm_checkpoints
    _latest(directory)  # no checkpoint: say so before looking for its spec
    return restore_world_model(config, directory, _action_size(run), model_shapes(config, run))


def _latest(directory: pathlib.Path) -> str:
    latest = tf.train.latest_checkpoint(str(directory)) if directory.is_dir() else None
    if latest is None:
        raise UserError(f"{directory}: no world-model checkpoint; run `--phase world_model` first")
    return latest


def restore_world_model(config: Config, directory: pathlib.Path, action_size: int,
                        shapes: dict[str, tuple[int, ...]] | None = None) -> WorldModel:
    """The one world-model loader: a model of `config` restored from the newest checkpoint in
    `directory` (the model alone: the checkpoint may also hold an optimizer)."""
    latest = _latest(directory)
    model = WorldModel(config, action_size, shapes)
    with about(latest, "does not fit the world model of this config", RESTORE_ERRORS):
        tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    return model


def video_batch(config: Config, run: RunDir) -> dict[str, np.ndarray] | None:
    """Up to 6 held-out expert episodes (expert/val), cut to a common length, or None."""
    episodes = load_episodes(run.expert_episodes("val"), limit=VIDEO_EPISODES)
    context = config.world_model.openloop_context
    episodes = [e for e in episodes if len(e["action"]) > context]
    if not episodes:
        return None
    length = min(config.world_model.length, *(len(e["action"]) for e in episodes))
    keys = [k for k in ("image", "vector", "action", "is_first") if k in episodes[0]]
    return {k: np.stack([e[k][:length] for e in episodes]) for k in keys}


def openloop_report(model: WorldModel, batch: dict[str, np.ndarray], context: int) -> tuple[np.ndarray, float]:
    """(video (T, 3H, B*W, C) in [0, 1], mean squared pixel error of the open-loop frames)."""
    truth, pred = model.open_loop(model.preprocess(batch), context)
    mse = float(tf.reduce_mean(tf.square(truth[:, context:] - pred[:, context:])))
    return video_strip(truth, pred).numpy(), mse


class _Reports:
    """The world model's reports at `video_every` updates and at the end: open-loop videos and
    errors of held-out expert episodes, and DITTO's signal margin (`eval/ditto_margin_*`)."""

    def __init__(self, config: Config, model: WorldModel, run: RunDir):
        self.config, self.model = config, model
        self.videos = video_batch(config, run)
        self.margin = PhaseMargin.create(config, run)

    def after_update(self, step: int, logger: Logger) -> dict[str, float]:
        wm, model, headline = self.config.world_model, self.model, {}
        if step % wm.video_every and step != wm.steps:
            return headline
        if self.videos is not None and model.decoder is not None:
            video, mse = openloop_report(model, self.videos, wm.openloop_context)
            logger.video("openl_image", video)
            logger.scalar("eval/openl_mse", mse)
            headline["openl_mse"] = mse
        if self.videos is not None and model.mlp_decoder is not None:  # no picture of a vector
            error = float(model.open_loop_vector(model.preprocess(self.videos), wm.openloop_context))
            logger.scalar("eval/openl_vector_mse", error)
            headline["openl_vector_mse"] = error
        if self.margin is not None:
            logger.scalars(self.margin(model, step).scalars(), prefix="eval/")
        return headline

    def summary(self, seconds: float) -> str:
        margin = self.margin
        if margin is None or margin.last is None:
            return ""
        return (f"; DITTO margin (expert / random actions - 1, H={margin.horizon}): "
                f"{margin.last.summary()} [{margin.seconds:.1f} s, "
                f"{margin.seconds / max(seconds, 1e-9):.1%} of the phase]")


def _stop_on_nonfinite(name: str, metrics: Mapping[str, float], update: int,
                       checkpointer: Checkpointer) -> None:
    """A NaN or infinite `model_loss` stops the phase in one line naming the losses."""
    if not math.isfinite(metrics["model_loss"]):
        kept = checkpointer.manager.latest_checkpoint or "none (no checkpoint yet)"
        losses = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.endswith("_loss"))
        raise UserError(f"{name}: loss is {metrics['model_loss']} at update {update} ({losses}); "
                        f"stopped. Last good checkpoint: {kept}. Lower world_model.lr or check the data")


def _postfix(train: Mapping[str, float], val: Mapping[str, float]) -> dict[str, str]:
    """The progress bar's postfix: the world model's loss and KL."""
    return {"kl": f"{train['model_kl']:.2f}", "loss": f"{train['model_loss']:.1f}"}


def run(config: Config, run: RunDir) -> int:
    """Train for `world_model.steps` updates in total (resuming); returns the final step."""
    wm = config.world_model
    dirs = train_dirs(config, run)
    keras.utils.set_random_seed(config.seed)  # initial weights and latent samples
    shapes, keys = data_shapes(config, dirs)
    # Only the first batch is needed to learn the shapes; the stream is rebuilt at the restored step.
    spec = make_dataset(dirs, wm.batch, wm.length, config.seed,
                        skip_corrupt=config.data.skip_corrupt, keys=keys).element_spec
    action_size = int(spec["action"].shape[-1])
    with within(dirs[0]):
        model = WorldModel(config, action_size, shapes)
    if model.keys.mlp:  # statistics of the training data; a resumed run restores the saved ones
        model.set_statistics(vector_statistics(dirs, model.keys.mlp, config.data.skip_corrupt,
                                               binary=model.binary_vectors))
    trainer = WorldModelTrainer(model, config)
    checkpointer = Checkpointer(run.wm_checkpoints, config.keep_checkpoints,
                                model=model, optimizer=trainer.optimizer)
    step = checkpointer.restore()
    run.save_spec(action_size, shapes, run.action_space(config)[1])
    if step >= wm.steps:
        print(f"world model: already trained ({step} of {wm.steps} updates) in {run.world_model}")
        return step
    if step:
        print(f"world model: resuming from step {step} ({checkpointer.manager.latest_checkpoint})")
    dataset = iter(make_dataset(dirs, wm.batch, wm.length, config.seed, start_batch=step,
                                skip_corrupt=config.data.skip_corrupt, keys=keys))
    phase = Phase("world model", run.world_model, wm.steps,
                  update=lambda _: trainer.train(next(dataset)), check=_stop_on_nonfinite,
                  postfix=_postfix, extras=_Reports(config, model, run))
    return train_loop(config, phase, checkpointer, step)
