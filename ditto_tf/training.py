"""One training loop for every phase that learns: the world model, DITTO, D-GAIL, D-BC and BC.

    checkpointer = Checkpointer(directory, config.keep_checkpoints, model=..., optimizer=...)
    start = checkpointer.restore()
    train_loop(config, Phase(name, logdir, steps, update, validate=...), checkpointer, start)

`update(step)` runs one update given the number done before it (batches are a pure function of
it, so a resumed run continues the same stream). Every `log_every` updates and at the end, the
metrics averaged since the last log go to `train/...` with `train/updates_per_second`, and
`validate()` to `val/...` (TensorBoard + metrics.jsonl); every `checkpoint_every` updates and at
the end a checkpoint is saved. A non-finite loss stops the run without saving, so the last good
checkpoint stays the newest. The phase ends with one summary line.
"""

from __future__ import annotations

import collections
import math
import pathlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import tqdm

from ditto_tf.checkpoints import Checkpointer
from ditto_tf.config import Config
from ditto_tf.errors import UserError
from ditto_tf.logger import Logger, summary_line

Metrics = Mapping[str, Any]


class Extras(Protocol):
    """A phase's own reports inside the loop (the world model's videos and DITTO margin)."""

    def after_update(self, step: int, logger: Logger) -> Mapping[str, float]:
        """Called after every update, before the step's metrics are written: logs what it
        wants and returns values for the summary line."""

    def summary(self, seconds: float) -> str:
        """Appended to the summary line (`seconds`: the phase's wall time so far)."""


def stop_on_nonfinite(name: str, metrics: Mapping[str, float], update: int,
                      checkpointer: Checkpointer) -> None:
    """The agents' check: any `...loss` that is NaN or infinite stops the phase in one line."""
    for key, value in metrics.items():
        if key.endswith("loss") and not math.isfinite(value):
            latest = checkpointer.manager.latest_checkpoint or "none yet"
            raise UserError(
                f"{name}: {key} is {value} at update {update}; stopped without saving, the last good "
                f"checkpoint is kept ({latest}). Try a lower learning rate or check the world model")


def agent_postfix(train: Mapping[str, float], val: Mapping[str, float]) -> dict[str, str]:
    """The progress bar's postfix: held-out latent distance / action accuracy and the first loss."""
    shown = {k: val[k] for k in ("latent_distance", "action_accuracy") if k in val}
    loss_key = next((k for k in train if k.endswith("loss")), None)
    if loss_key:
        shown[loss_key] = train[loss_key]
    return {k: f"{v:.3g}" for k, v in shown.items()}


@dataclass
class Phase:
    """What a learning phase plugs into `train_loop`."""

    name: str                                   # progress bar and summary line
    directory: pathlib.Path                     # metrics.jsonl and TensorBoard events
    steps: int                                  # updates in total (resumed ones included)
    update: Callable[[int], Metrics]            # one update, given the updates done before it
    validate: Callable[[], Metrics] | None = None   # held-out metrics at every log step
    check: Callable[[str, Mapping[str, float], int, Checkpointer], None] = stop_on_nonfinite
    postfix: Callable[[Mapping[str, float], Mapping[str, float]], dict[str, str]] = agent_postfix
    extras: Extras | None = None


def train_loop(config: Config, phase: Phase, checkpointer: Checkpointer, start: int) -> int:
    """Run `phase.update` for updates [start, phase.steps) (see the module docstring); returns
    the final step. `checkpointer` is restored already and `start` is its step."""
    logger = Logger(phase.directory, resume_step=start)  # drops rows of updates redone after a kill
    sums: dict[str, float] = collections.defaultdict(float)
    headline: dict[str, float] = {}  # the last logged metrics, for the summary line
    count, step, saving = 0, start, 0.0  # saving: seconds spent saving since the last log
    began = last_time = time.perf_counter()
    bar = tqdm.tqdm(total=phase.steps, initial=start, desc=phase.name, unit="update",
                    dynamic_ncols=True)
    try:
        while step < phase.steps:
            metrics = {k: float(v) for k, v in phase.update(step).items()}
            phase.check(phase.name, metrics, step + 1, checkpointer)
            step, count = step + 1, count + 1
            for key, value in metrics.items():
                sums[key] += value
            bar.update(1)
            log = step % config.log_every == 0 or step == phase.steps
            if log:
                now = time.perf_counter()
                train = {k: v / count for k, v in sums.items()}
                logger.scalars(train, prefix="train/")
                logger.scalar("train/updates_per_second",
                              count / max(now - last_time - saving, 1e-9))
                headline.update(train)
                val = {k: float(v) for k, v in phase.validate().items()} if phase.validate else {}
                logger.scalars(val, prefix="val/")
                headline.update(val)  # held-out values win over training ones of the same name
                bar.set_postfix(phase.postfix(train, val))
                sums.clear()
                count, last_time, saving = 0, now, 0.0
            if phase.extras is not None:
                headline.update(phase.extras.after_update(step, logger))
            save = step % config.checkpoint_every == 0 or step == phase.steps
            if log or save:
                logger.write(step)
            if save:  # saving is not training time (the count of updates goes on)
                saved = time.perf_counter()
                checkpointer.save(step)
                saving += time.perf_counter() - saved
    finally:
        bar.close()  # first, so that a one-line error starts its own line
    seconds = time.perf_counter() - began
    line = summary_line(phase.name, step, phase.steps, step - start, seconds, headline)
    print(line + (phase.extras.summary(seconds) if phase.extras else ""), flush=True)
    return step
