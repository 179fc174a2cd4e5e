"""Open-loop image prediction error of a trained world model versus the untrained one.

    python train.py --configs cartpole small --logdir DIR --phase collect
    flock /tmp/ditto_heavy.lock python benchmarks/world_model_quality.py --logdir DIR \
        --configs cartpole small --steps 1500

On the held-out expert episodes (DIR/data/expert/val): windows of `context + horizon` frames;
the model observes `context` frames, then predicts `horizon` frames open loop under the true
actions (DreamerV2's `video_pred`). Reported: mean squared error per pixel (images in [0, 1])
over the open-loop frames for the untrained model (same seed, before any update), the trained
one (`--phase world_model` for `--steps` updates, resumable, timed), and two reference
predictors that need no model: the last observed frame repeated, and the mean training frame.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ditto_tf.config import load_config  # noqa: E402
from ditto_tf.data.episodes import load_episodes  # noqa: E402
from ditto_tf.wm_training import load_world_model, run, train_dirs  # noqa: E402
from ditto_tf.world_model import WorldModel  # noqa: E402
from ditto_tf.rundir import RunDir


def windows(episodes: list[dict], size: int, stride: int) -> dict[str, np.ndarray]:
    """All windows of `size` steps starting every `stride` steps, with is_first at the start."""
    out: dict[str, list] = {"image": [], "action": [], "is_first": []}
    for episode in episodes:
        for start in range(0, len(episode["image"]) - size + 1, stride):
            for key in out:
                out[key].append(episode[key][start:start + size])
    batch = {k: np.stack(v) for k, v in out.items()}
    batch["is_first"][:, 0] = True
    return batch


def openloop_mse(model: WorldModel, batch: dict[str, np.ndarray], context: int, chunk: int = 32) -> np.ndarray:
    """Per-horizon-step MSE (horizon,) averaged over windows, pixels in [0, 1]."""
    errors = []
    for i in range(0, len(batch["image"]), chunk):
        part = {k: v[i:i + chunk] for k, v in batch.items()}
        truth, pred = model.open_loop(model.preprocess(part), context)
        errors.append(tf.reduce_mean(tf.square(truth - pred)[:, context:], [2, 3, 4]).numpy())
    return np.concatenate(errors).mean(0)


def baselines(batch: dict[str, np.ndarray], context: int, mean_frame: np.ndarray) -> dict[str, float]:
    truth = batch["image"][:, context:].astype(np.float32) / 255
    last = batch["image"][:, context - 1:context].astype(np.float32) / 255
    return {"repeat_last_frame": float(np.mean((truth - last) ** 2)),
            "mean_training_frame": float(np.mean((truth - mean_frame) ** 2))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", required=True, type=pathlib.Path)
    parser.add_argument("--configs", nargs="+", default=["cartpole", "small"])
    parser.add_argument("--steps", type=int, default=1500, help="world-model updates")
    parser.add_argument("--context", type=int, default=5)
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--stride", type=int, default=25, help="window starts within an episode")
    args, overrides = parser.parse_known_args()
    config = load_config(args.configs, ["--world_model.steps", str(args.steps), "--precision",
                                        "float32", *overrides])
    rundir = RunDir(args.logdir)
    val = load_episodes(rundir.expert_episodes("val"))
    batch = windows(val, args.context + args.horizon, args.stride)
    train = [e for d in train_dirs(config, rundir) for e in load_episodes(d, limit=20)]
    mean_frame = np.concatenate([e["image"] for e in train]).astype(np.float32).mean(0) / 255

    keras.utils.set_random_seed(config.seed)
    untrained = WorldModel(config, int(batch["action"].shape[-1]))
    before = openloop_mse(untrained, batch, args.context)
    start = time.perf_counter()
    run(config, rundir)
    seconds = time.perf_counter() - start
    tf.random.set_seed(config.seed)
    after = openloop_mse(load_world_model(config, rundir), batch, args.context)
    result = dict(
        configs=" ".join(args.configs), steps=args.steps, windows=len(batch["image"]),
        val_episodes=len(val), train_seconds_this_call=round(seconds, 1),
        untrained_mse=round(float(before.mean()), 5), trained_mse=round(float(after.mean()), 5),
        trained_mse_by_step={i + 1: round(float(after[i]), 5) for i in (0, 4, 9, args.horizon - 1)
                             if i < args.horizon},
        **{k: round(v, 5) for k, v in baselines(batch, args.context, mean_frame).items()})
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
