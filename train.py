"""Run the DITTO pipeline, or one phase of it.

    python train.py --configs atari beamrider --logdir logs/beamrider
    python train.py --configs cartpole small --logdir logs/cartpole --phase world_model
    python train.py --configs cartpole small --logdir logs/cartpole --world_model.steps 2e4
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from ditto_tf.config import Config, config_names
from ditto_tf.errors import UserError, command, quiet_tensorflow
from ditto_tf.rundir import RunDir

PHASES = ("collect", "world_model", "ditto", "dgail", "dbc", "bc", "evaluate")
PIPELINE = ["collect", "world_model", "ditto", "dgail", "dbc", "bc"]


def phase_function(phase: str) -> Callable[[Config, RunDir], object]:
    """The function that runs `phase` on (config, run directory). Imported here, not at the top, so
    that TensorFlow loads only after the flags were checked and its start-up noise silenced."""
    from ditto_tf import evaluation, wm_training
    from ditto_tf.agents import bc, dbc, dgail, ditto
    from ditto_tf.data import collect

    return {"collect": collect.run, "world_model": wm_training.run, "ditto": ditto.run,
            "dgail": dgail.run, "dbc": dbc.run, "bc": bc.run, "evaluate": evaluation.run}[phase]


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    try:
        names = ", ".join(config_names())
    except UserError as e:
        names = f"(unreadable: {e})"
    parser = argparse.ArgumentParser(
        description="Train DITTO and its baselines (D-GAIL, D-BC, pixel BC) offline.",
        epilog=f"config names: {names}. Any config key can be overridden with --key.sub value.",
    )
    parser.add_argument("--configs", nargs="+", default=[], help="named config blocks, merged in order")
    parser.add_argument("--logdir", required=True, help="run directory (resumed if it exists; "
                        "there, its stored config is the base for the blocks and flags given)")
    parser.add_argument(
        "--phase", default="all", choices=[*PHASES, "all"],
        help="one stage of the pipeline (evaluate: true-env returns and tables), or all of them in order",
    )
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's C++ start-up messages (CUDA probing, oneDNN notes)")
    return parser.parse_known_args(argv)


@command()
def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    rundir = RunDir(args.logdir)  # every path below is absolute, whatever the working directory
    with rundir.transaction():
        rundir.root.mkdir(parents=True, exist_ok=True)
        # A new run directory takes the blocks and flags; an existing one keeps its stored config
        # with them merged over it, and refuses changes to what it collected and built.
        config = rundir.configure(args.configs, overrides)
        quiet_tensorflow(args.verbose)  # after the cheap checks: a bad flag fails at once
        function = phase_function(args.phase) if args.phase != "all" else None
        if function is not None:
            function(config, rundir)
        else:  # every phase, then evaluation, the results table and where everything is
            from ditto_tf.pipeline import run_all

            run_all(config, rundir, PIPELINE, phase_function)
    return 0


if __name__ == "__main__":
    sys.exit(main())
