"""Evaluate trained agents in the true environment and tabulate / plot the results.

    python evaluate.py runs/cartpole                       # every agent of one run
    python evaluate.py runs/sweep/cartpole/* --out results # any mix of agents, N_E, H, seeds
    python evaluate.py runs/pong --episodes 5 --checkpoints 2

Protocol (paper section 4): the last K agent checkpoints x E true-env rollouts each, mean and
standard error (of the per-checkpoint means); random-policy and expert scores measured the same
way. Rollouts are cached per checkpoint under LOGDIR/eval/, so a re-run only plays what is new.
Writes results.md, results.csv, comparison.md (DITTO against each baseline: the difference in
mean return and its verdict, a loss being more than one SE of the difference below) and the PNG
figures (fig3_*, fig2_*, horizon_*) into --out.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

from ditto_tf.errors import UserError, command, quiet_tensorflow
from ditto_tf.runs import AGENTS


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=(
        "Counts default to each run's eval.* config keys (K=eval.checkpoints, "
        "E=eval.episodes, eval.envs)."))
    parser.add_argument("logdirs", nargs="+", metavar="LOGDIR", help="run directories (train.py --logdir)")
    parser.add_argument("--out", help="where tables and plots go (default: LOGDIR/eval, or the "
                        "runs' common parent/eval)")
    parser.add_argument("--checkpoints", type=int, help="K: last K checkpoints per agent")
    parser.add_argument("--episodes", type=int, help="E: rollouts per checkpoint")
    parser.add_argument("--envs", type=int, help="envs stepped in lock step")
    parser.add_argument("--reference-episodes", type=int,
                        help="rollouts of the random policy and of the expert (default K x E)")
    parser.add_argument("--agents", nargs="+", choices=AGENTS, default=list(AGENTS),
                        help="evaluate only these agents")
    parser.add_argument("--deterministic", action="store_true",
                        help="agents act with their policy's mode instead of sampling")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's C++ start-up messages (CUDA probing, oneDNN notes)")
    return parser.parse_args(argv)


@command("interrupted; run the same command again to resume (finished checkpoints are "
          "cached)")
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = lambda message, category, *rest: f"warning: {message}\n"
    from ditto_tf.evaluation import Protocol, report

    for name in ("checkpoints", "episodes", "envs", "reference_episodes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')}: must be at least 1, got {value}")
    quiet_tensorflow(args.verbose)
    protocol = Protocol(args.checkpoints, args.episodes, args.envs, args.reference_episodes,
                        args.deterministic)
    report(args.logdirs, args.out, protocol, args.agents, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
