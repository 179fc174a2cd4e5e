"""The real training loop's overhead: `train.py --phase world_model` / `--phase ditto` against
the bare update on the same batch shape.

    python train.py --configs cartpole small --logdir /tmp/perf17/cp --phase collect \
        --expert.folder ../shared/zoo --data.wm_episodes 12 --data.expert_train 4 --data.expert_val 4
    flock /tmp/ditto_heavy.lock python benchmarks/loop_overhead.py --data /tmp/perf17/cp \
        --phases world_model --wm_steps 500 --set='--world_model.video_every 500 --checkpoint_every 250'

Runs the phases with train.py in a fresh run folder whose `data/` links to `--data` (world model
first, then DITTO on it), with the config's own log, checkpoint and video intervals unless
overridden by `--set`. The loop's seconds per update are taken from the TensorBoard wall times of
the log rows after the first (the first interval holds the tracing): everything inside the loop
counts, data, logging, validation, videos, the DITTO margin and checkpoints. The bare update is
`benchmarks/world_model_speed.py` / `actor_critic_speed.py`'s measurement at the same sizes,
in its own process. Overhead = loop / bare - 1.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

PHASES = ("world_model", "ditto")


def log_times(directory: pathlib.Path) -> list[tuple[int, float]]:
    """(step, wall time) of every `train/updates_per_second` row in a phase's event files."""
    import tensorflow as tf

    rows = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            if any(v.tag == "train/updates_per_second" for v in event.summary.value):
                rows.append((int(event.step), float(event.wall_time)))
    return sorted(rows)


def loop_seconds(directory: pathlib.Path) -> tuple[float, int, list[float]]:
    """Seconds per update between the first and the last log row, the updates spanned, and
    the seconds per update of each interval between log rows (a slow one shows a checkpoint,
    a video, or another process on the cores)."""
    rows = log_times(directory)
    if len(rows) < 2:
        raise SystemExit(f"{directory}: fewer than two log rows; raise the phase's steps")
    (first, t0), (last, t1) = rows[0], rows[-1]
    intervals = [(b - a) / (j - i) for (i, a), (j, b) in zip(rows, rows[1:])]
    return (t1 - t0) / (last - first), last - first, intervals


def bare(phase: str, configs: list[str], steps: int, code: pathlib.Path) -> float:
    """Median seconds of the bare update of `code`'s ditto_tf in this process (call it in a
    fresh one: ditto_tf is imported from `code` first)."""
    sys.path.insert(0, str(code))
    from ditto_tf.config import load_config

    config = load_config(configs)
    if phase == "world_model":
        import world_model_speed

        wm = config.world_model
        return world_model_speed.measure(configs, wm.batch, wm.length, "float32", steps, 2)["median_s"]
    import actor_critic_speed

    actor_critic_speed.SIZES["bench"] = configs
    agent = config.agent
    return actor_critic_speed.measure("bench", "float32", steps, agent.batch, agent.horizon, 2)["median"]


def run_phase(phase: str, configs: list[str], logdir: pathlib.Path, steps: int,
              extra: list[str], code: pathlib.Path) -> None:
    key = "world_model.steps" if phase == "world_model" else "agent.steps"
    command = [sys.executable, str(code / "train.py"), "--configs", *configs, "--logdir",
               str(logdir), "--phase", phase, f"--{key}", str(steps), *extra]
    out = subprocess.run(command, capture_output=True, text=True, cwd=code)
    if out.returncode:
        raise SystemExit(f"{phase} failed:\n{out.stderr[-3000:]}")
    print(out.stdout.strip().splitlines()[-1], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=pathlib.Path, help="a run folder with collected data/")
    parser.add_argument("--configs", nargs="+", default=["cartpole", "small"])
    parser.add_argument("--phases", nargs="+", default=list(PHASES))
    parser.add_argument("--wm_steps", type=int, default=600)
    parser.add_argument("--ditto_steps", type=int, default=600)
    parser.add_argument("--bare_steps", type=int, default=10)
    parser.add_argument("--set", default="", help="extra train.py flags in one string, e.g. "
                        "--set='--log_every 50'")
    parser.add_argument("--code", type=pathlib.Path, default=REPO,
                        help="the checkout whose train.py runs the phases (default: this one)")
    parser.add_argument("--out", type=pathlib.Path, help="keep the run folder here (a new folder)")
    parser.add_argument("--bare", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        print(json.dumps(bare(args.bare, args.configs, args.bare_steps, args.code.resolve())))
        return
    for phase in args.phases:
        if phase not in PHASES:
            raise SystemExit(f"error: --phases: {phase!r} is not one of {', '.join(PHASES)}")
    if args.data is None or not (args.data / "data" / "wm").is_dir():
        raise SystemExit(f"error: --data: {args.data} has no data/wm; run `--phase collect` into it first")
    if not (args.code / "train.py").is_file():
        raise SystemExit(f"error: --code: {args.code} has no train.py")
    if args.out is not None and args.out.exists():
        raise SystemExit(f"error: --out: {args.out} exists; name a new folder")
    print(f"load before: {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="loop_overhead.") as tmp:
        logdir = args.out or pathlib.Path(tmp)
        logdir.mkdir(parents=True, exist_ok=True)
        (logdir / "data").symlink_to(args.data.resolve() / "data")
        for phase in PHASES:  # DITTO needs the world model, so that phase always runs first
            steps = args.wm_steps if phase == "world_model" else args.ditto_steps
            if phase not in args.phases and phase != "world_model":
                continue
            run_phase(phase, args.configs, logdir, steps, shlex.split(args.set), args.code.resolve())
            if phase not in args.phases:
                continue
            loop, span, intervals = loop_seconds(logdir / phase)
            command = [sys.executable, __file__, "--bare", phase, "--configs", *args.configs,
                       "--bare_steps", str(args.bare_steps), "--code", str(args.code.resolve())]
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"bare {phase} failed:\n{out.stderr[-3000:]}")
            rows.append((phase, loop, span, intervals, json.loads(out.stdout.strip().splitlines()[-1])))
    print(f"load after: {os.getloadavg()[0]:.2f}")
    print("\n| phase | loop s/update | updates spanned | per log interval | bare s/update | overhead |")
    print("|---|---|---|---|---|---|")
    for phase, loop, span, intervals, bare_s in rows:
        each = " ".join(f"{x:.3f}" for x in intervals)
        print(f"| {phase} | {loop:.3f} | {span} | {each} | {bare_s:.3f} | {loop / bare_s - 1:+.1%} |")


if __name__ == "__main__":
    main()
