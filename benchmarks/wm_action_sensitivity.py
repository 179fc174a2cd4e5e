"""Does the world model's imagination respond to actions? The signal DITTO learns from.

    python benchmarks/wm_action_sensitivity.py LOGDIR [--horizon 15] [--starts 256]

From held-out expert states (posterior latents of `data/expert/val`), the prior is rolled open
loop for H steps (mode latents, no sampling noise) under (a) the expert's own next actions and
(b) each constant action. Printed per latent (`stoch` z as in paper eq. 8, `deter` h): the mean
eq.-8 reward of each rollout against the expert's real latents at the same steps. DITTO can only
learn when the expert's actions earn clearly more than the others; equal rewards mean that the
imagined future does not depend on the action (world-model quality / data coverage).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def sensitivity(logdir: pathlib.Path, horizon: int, count: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """{latent: {rollout name: mean eq.-8 reward vs the expert's latents over steps 1..H}}."""
    import tensorflow as tf

    from ditto_tf.agents.ditto import ditto_reward, select_latent
    from ditto_tf.agents.latents import load_expert_latents, to_state
    from ditto_tf.agents.runner import world_model_checkpoint
    from ditto_tf.runs import load_run_config
    from ditto_tf.wm_training import load_world_model

    config = load_run_config(logdir)
    wm = load_world_model(config, logdir)
    val = load_expert_latents(config, logdir, wm, world_model_checkpoint(logdir), "val")
    length = horizon + 1
    valid = val.window_starts(length, with_actions=True)
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.choice(valid, min(count, len(valid)), replace=False))
    windows = val.windows(starts, length)
    expert = to_state(wm.rssm, tf.constant(windows["deter"]), tf.constant(windows["stoch"]), val.classes)
    start = {k: v[:, 0] for k, v in expert.items()}
    actions = tf.constant(windows["action"][:, :horizon], tf.float32)  # action at t leads to t+1
    plans = {"expert actions": actions}
    for k in range(actions.shape[-1]):
        plans[f"always action {k}"] = tf.one_hot(tf.fill(tf.shape(actions)[:2], k), actions.shape[-1])
    out: dict[str, dict[str, float]] = {}
    for latent in ("stoch", "deter"):
        target = select_latent({k: v[:, 1:] for k, v in expert.items()}, latent)
        out[latent] = {}
        for name, plan in plans.items():
            imagined = wm.rssm.rollout(plan, start, sample=False)
            reward = ditto_reward(target, select_latent(imagined, latent))
            out[latent][name] = float(tf.reduce_mean(reward))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("logdirs", nargs="+", help="run directories with a world model and expert/val")
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--starts", type=int, default=256)
    args = parser.parse_args()
    for logdir in map(pathlib.Path, args.logdirs):
        result = sensitivity(logdir, args.horizon, args.starts)
        print(f"{logdir} (H={args.horizon}, mean eq.-8 reward vs the expert's real latents)")
        for latent, rows in result.items():
            print(f"  {latent:<6} " + ", ".join(f"{k}: {v:.3f}" for k, v in rows.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
