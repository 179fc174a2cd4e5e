"""DITTO's signal margin of a run's world model: does imagination reward the expert's actions?

    python benchmarks/wm_action_sensitivity.py LOGDIR [LOGDIR ...] [--horizon H] [--starts 256]

From held-out expert states (posterior latents of `data/expert/val`, the agents' own latent
cache), the prior is rolled open loop for H steps (default: the run's `agent.horizon`; mode
latents, no sampling noise) under the expert's own next actions, uniformly random actions and
each constant action. Printed per row (z under each reward form, h, feat): the mean eq.-8
reward of each rollout against the expert's real latents at the same steps, and the margin
expert / random - 1 (`ditto_tf.margin`). The `expert, sampled` column is the expert's actions
with sampled latents, as in DITTO's training: the noise ceiling of each reward form. DITTO can
only learn when the expert's actions earn clearly more than the others; a margin near zero means
that the imagined future does not depend on the action (world-model quality / data coverage).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ditto_tf.errors import command  # noqa: E402


def report(logdir: pathlib.Path, horizon: int | None, count: int, seed: int = 0):
    """The margin report of the run in `logdir` (its world model and expert/val latents)."""
    from ditto_tf.agents.latents import load_expert_latents
    from ditto_tf.agents.runner import world_model_checkpoint
    from ditto_tf.margin import measure
    from ditto_tf.rundir import RunDir
    from ditto_tf.runs import load_run_config
    from ditto_tf.wm_training import load_world_model

    config = load_run_config(logdir)
    run = RunDir(logdir)
    wm = load_world_model(config, run)
    val = load_expert_latents(config, run, wm, world_model_checkpoint(run), "val")
    return measure(wm.rssm, val, horizon or int(config.agent.horizon), count, seed)


@command()
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("logdirs", nargs="+", help="run directories with a world model and expert/val")
    parser.add_argument("--horizon", type=int, default=None, help="default: the run's agent.horizon")
    parser.add_argument("--starts", type=int, default=256)
    args = parser.parse_args()
    for logdir in map(pathlib.Path, args.logdirs):
        result = report(logdir, args.horizon, args.starts)
        print(f"{logdir} (H={result.horizon}, {result.starts} held-out expert starts; "
              "mean eq.-8 reward vs the expert's real latents)")
        for line in result.lines():
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
