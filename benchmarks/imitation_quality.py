"""Imitation quality: DITTO, D-GAIL, D-BC and BC at several N_E on pixel CartPole / LunarLander.

    flock /tmp/ditto_heavy.lock python benchmarks/imitation_quality.py --out /tmp/ditto_quality \\
        [--envs cartpole lunarlander] [--experts 1 4 16] [--zoo ../shared/zoo]

One world model per env (collected from the RL Zoo PPO expert with epsilon-random actions for
coverage), shared by every (agent, N_E) run through `ditto_tf.sweep`; each agent learns from the
first N_E expert episodes. Then the true-env evaluation of `ditto_tf.evaluation` (last K
checkpoints x E rollouts; random and expert measured the same way). Prints, per env, the table of
return mean +- SE and expert-normalised score per agent and N_E with each stage's wall time, and
checks the targets (DITTO >= 90% of the expert at N_E = 4 on CartPole; DITTO >= every baseline at
every N_E). Everything is resumable: re-run the same command after a kill (finished stages and
evaluated checkpoints are skipped). The experts come from `--zoo` (`<zoo>/ppo/<EnvId>_1`); when
an env's expert is absent there it is trained locally with rl-zoo3 (`expert.source train`).

The per-env settings (counts, steps) are the `SETTINGS` flags below, on top of `--configs small`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Sequence

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ditto_tf.errors import UserError  # noqa: E402
from ditto_tf.runs import AGENTS  # noqa: E402
from ditto_tf.sweep import STEPS_KEY, Sweep, latest_step, plan  # noqa: E402

# Per env: flags for every train.py call of the sweep (on top of `--configs <env> small`).
# The world model learns from the wm episodes only (not the expert train episodes), so that
# N_E is the only expert data each agent gets, whatever max(N_E) the shared collection holds.
COMMON = ["--world_model.train_on_expert", "false", "--data.wm_policy", "epsilon",
          "--data.expert_val", "8", "--world_model.length", "32", "--agent.batch", "256", "--log_every", "25",
          "--checkpoint_every", "30", "--eval.checkpoints", "10", "--eval.episodes", "10",
          "--eval.envs", "10"]
SETTINGS: dict[str, list[str]] = {
    # CartPole: action repeat 2 (the expert still scores 500) so that one action moves the image;
    # epsilon 0.25, as 0.5 at repeat 2 ends most episodes before one 32-step training window.
    "cartpole": COMMON + ["--env.action_repeat", "2", "--data.wm_epsilon", "0.25",
                          "--data.wm_episodes", "60", "--world_model.steps", "3000",
                          "--agent.steps", "1000", "--dbc.steps", "1000", "--bc.steps", "1000"],
    "lunarlander": COMMON + ["--data.wm_epsilon", "0.5", "--data.wm_episodes", "100",
                             "--world_model.steps", "2000",
                             "--agent.steps", "300", "--dbc.steps", "300", "--bc.steps", "300"],
}


def expert_flags(env: str, zoo: pathlib.Path) -> list[str]:
    """The zoo folder when it holds this env's PPO agent, else local training with rl-zoo3."""
    from ditto_tf.config import load_config

    env_id = str(load_config([env]).expert.env_id)
    if (zoo / "ppo" / f"{env_id}_1" / f"{env_id}.zip").is_file():
        return ["--expert.source", "folder", "--expert.folder", str(zoo.resolve())]
    print(f"# {zoo}/ppo/{env_id}_1 absent: the expert is trained here with rl-zoo3")
    return ["--expert.source", "train"]


class Timings:
    """Wall seconds per stage in OUT/<env>/timings.json; a resumed stage adds its time."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        try:
            self.data: dict[str, float] = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self.data = {}

    def add(self, key: str, seconds: float, skipped: bool) -> None:
        if skipped:  # an already finished stage keeps its recorded time
            return
        self.data[key] = self.data.get(key, 0.0) + seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")

    def get(self, key: str) -> float:
        return self.data.get(key, math.nan)


def run_env(env: str, args: argparse.Namespace, extra: Sequence[str]) -> list[dict[str, Any]]:
    """Shared stage, every (agent, N_E) run, then the evaluation of them all."""
    from ditto_tf.evaluation import Protocol, report

    out = pathlib.Path(args.out).expanduser()
    flags = [*SETTINGS[env], *expert_flags(env, pathlib.Path(args.zoo)), *extra]
    sweep = Sweep(out, ["small"], flags, dry_run=args.dry_run)
    timings = Timings(out / env / "timings.json")
    horizon = int(sweep.config(env).agent.horizon)

    begin = time.time()
    sweep.shared(env, max(args.experts))
    timings.add("shared", time.time() - begin, skipped=time.time() - begin < 30)
    for item in plan([env], args.agents, args.experts, [horizon], [0]):
        steps = int(sweep.config(env, item.overrides())[STEPS_KEY[item.agent]])
        done = latest_step(out / env / item.name / item.agent / "checkpoints") >= steps
        begin = time.time()
        sweep.run(item)
        timings.add(item.name, time.time() - begin, skipped=done)
    if args.dry_run:
        return []
    begin = time.time()
    logdirs = [out / env / item.name for item in plan([env], args.agents, args.experts,
                                                      [horizon], [0])]
    result = report(logdirs, out / env / "results", Protocol(), args.agents)
    timings.add("evaluate", time.time() - begin, skipped=False)
    rows = result["rows"]
    for row in rows:
        name = f"{row['agent']}-ne{row['n_expert']}" + (
            f"-h{row['horizon']}" if row["horizon"] != "" else "") + "-s0"
        row["train_seconds"] = timings.get(name)
    print_summary(env, rows, timings)
    return rows


def print_summary(env: str, rows: Sequence[dict[str, Any]], timings: Timings) -> None:
    """The BENCHMARKS.md table for one env, and the target checks."""
    print(f"\n## {env}: world model + data {timings.get('shared') / 60:.1f} min, "
          f"evaluation {timings.get('evaluate') / 60:.1f} min (this invocation)")
    print("| agent | N_E | return (mean ± SE) | expert-normalised | train wall time |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['agent']} | {r['n_expert']} | {r['return_mean']:.1f} ± {r['return_se']:.1f} | "
              f"{r['normalized']:.2f} ± {r['normalized_se']:.2f} | {r['train_seconds'] / 60:.1f} min |")
    if rows:
        print(f"expert {rows[0]['expert']:.1f}, random {rows[0]['random']:.1f} "
              f"({rows[0]['checkpoints']} checkpoints x {rows[0]['episodes'] // rows[0]['checkpoints']} rollouts)")
    by = {(r["agent"], r["n_expert"]): r for r in rows}
    for n in sorted({r["n_expert"] for r in rows}):
        ditto = by.get(("ditto", n))
        if ditto is None:
            continue
        if n == 4 and env == "cartpole":
            ratio = ditto["return_mean"] / ditto["expert"]
            print(f"target DITTO >= 90% of expert at N_E=4: {ratio:.0%} "
                  f"({'met' if ratio >= 0.9 else 'NOT met'})")
        worse = [a for a in AGENTS if a != "ditto" and (a, n) in by
                 and by[(a, n)]["return_mean"] > ditto["return_mean"]]
        print(f"target DITTO >= every baseline at N_E={n}: "
              + ("met" if not worse else f"NOT met (better: {', '.join(worse)})"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="sweep directory (resumed if it exists)")
    parser.add_argument("--envs", nargs="+", default=["cartpole", "lunarlander"], choices=list(SETTINGS))
    parser.add_argument("--experts", nargs="+", type=int, default=[1, 4, 16], help="N_E values")
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=AGENTS)
    parser.add_argument("--zoo", default=str(REPO.parent / "shared" / "zoo"),
                        help="RL Zoo folder with ppo/<EnvId>_1 agents")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        for env in args.envs:
            begin = time.time()
            run_env(env, args, extra)
            print(f"{env}: {(time.time() - begin) / 60:.1f} min in this invocation", flush=True)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
