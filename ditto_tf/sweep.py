"""Sweeps: several agents x N_E values (x horizons H x seeds) one after another, resumably.

    python -m ditto_tf.sweep --envs cartpole --configs small --out runs/sweep \\
        --agents ditto dgail dbc bc --experts 1 4 16 [--horizons 5 15 30] [--seeds 0 1] \\
        [--shard 0/2] [--stage all|shared|runs] [--eval] [--dry-run] [-- --key.sub value ...]

Layout: one world model per env, shared by all its runs.

    OUT/<env>/shared/                 collect + world model (data.expert_train = max N_E)
    OUT/<env>/<agent>-ne<N>[-h<H>]-s<seed>/
        data -> ../shared/data        symlinks: the agents find LOGDIR/data and LOGDIR/world_model
        world_model -> ../shared/world_model
        config.yaml, <agent>/, latents/, eval/   (the run's own files)

A run uses the first N expert train episodes (`--agent.expert_episodes N`), so one collection of
max(N_E) episodes serves every N_E. Finished stages are skipped (a world model or agent whose
newest checkpoint reached its configured steps); an interrupted one resumes from its checkpoint.
Every command is printed before it runs. Afterwards: `python evaluate.py OUT/<env>/*-s*`.

Several machines: train the shared stage once (`--stage shared`), copy `OUT/<env>/shared` to
every machine, run `--stage runs --shard i/n` on machine i (runs are dealt round-robin in a fixed
order), then gather the run folders in one OUT and evaluate there.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import shlex
import subprocess
import sys
from typing import Sequence

from ditto_tf.config import load_config
from ditto_tf.errors import UserError, command
from ditto_tf.rundir import WORLD_MODEL, RunDir, resolve_path
from ditto_tf.runs import AGENTS, HORIZON_AGENTS

REPO = pathlib.Path(__file__).resolve().parent.parent
STEPS_KEY = {"ditto": "agent.steps", "dgail": "agent.steps", "dbc": "dbc.steps", "bc": "bc.steps"}


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One (env, agent, N_E, H, seed) run of the sweep."""

    env: str
    agent: str
    n_expert: int
    horizon: int | None
    seed: int

    @property
    def name(self) -> str:
        h = f"-h{self.horizon}" if self.horizon is not None else ""
        return f"{self.agent}-ne{self.n_expert}{h}-s{self.seed}"

    @classmethod
    def from_name(cls, env: str, name: str) -> SweepRun | None:
        """The run a folder `name` of `env` holds (the inverse of `name`); None for any other name."""
        match = re.fullmatch(r"([a-z]+)-ne(\d+)(?:-h(\d+))?-s(\d+)", name)
        if not match or match[1] not in AGENTS:
            return None
        run = cls(env, match[1], int(match[2]), int(match[3]) if match[3] else None, int(match[4]))
        return run if run.name == name else None

    def overrides(self) -> list[str]:
        flags = ["--agent.expert_episodes", str(self.n_expert), "--seed", str(self.seed)]
        if self.horizon is not None:
            flags += ["--agent.horizon", str(self.horizon)]
        return flags


def plan(envs: Sequence[str], agents: Sequence[str], experts: Sequence[int],
         horizons: Sequence[int], seeds: Sequence[int]) -> list[SweepRun]:
    """Every run, in a fixed order (env, N_E, seed, agent, H): the order shards are dealt from.
    Agents that do not imagine (D-BC, BC) run once per (N_E, seed), whatever the horizons."""
    runs = []
    for env in envs:
        for n in experts:
            for seed in seeds:
                for agent in agents:
                    for h in (horizons if agent in HORIZON_AGENTS else [None]):
                        runs.append(SweepRun(env, agent, int(n), h, int(seed)))
    return runs


def shard(runs: Sequence[SweepRun], spec: str | None) -> list[SweepRun]:
    """`i/n`: every n-th run starting at i (0-based)."""
    if not spec:
        return list(runs)
    try:
        index, count = (int(x) for x in spec.split("/"))
    except ValueError:
        raise UserError(f"--shard {spec!r}: expected i/n, e.g. 0/2") from None
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard {spec!r}: need 0 <= i < n")
    return [r for k, r in enumerate(runs) if k % count == index]


class Sweep:
    """Runs the plan with `train.py`, printing each command."""

    def __init__(self, out: pathlib.Path, configs: Sequence[str], extra: Sequence[str],
                 dry_run: bool = False, evaluate: bool = False):
        self.out, self.configs, self.extra = out, list(configs), list(extra)
        self.dry_run, self.evaluate = dry_run, evaluate

    def config(self, env: str, flags: Sequence[str] = ()):
        return load_config([env, *self.configs], [*self.extra, *flags])

    def command(self, env: str, logdir: pathlib.Path, phase: str, flags: Sequence[str]) -> list[str]:
        return [sys.executable, str(REPO / "train.py"), "--configs", env, *self.configs,
                "--logdir", str(logdir), "--phase", phase, *flags, *self.extra]

    def execute(self, command: Sequence[str]) -> None:
        print("$ " + shlex.join(command), flush=True)
        if self.dry_run:
            return
        code = subprocess.call(list(command), cwd=REPO)
        if code != 0:
            raise UserError(f"command failed with exit code {code}: {shlex.join(command)}")

    def shared(self, env: str, max_experts: int) -> pathlib.Path:
        """Collect max(N_E) expert episodes and train the env's world model, unless done.

        Collection always runs (quick when complete): a sweep resumed with a larger max(N_E)
        tops up the expert's train episodes over the finished world model."""
        logdir = self.out / env / "shared"
        flags = ["--data.expert_train", str(max_experts)]
        steps = int(self.config(env, flags).world_model.steps)
        self.execute(self.command(env, logdir, "collect", flags))
        if RunDir(logdir).latest_step(WORLD_MODEL) >= steps:
            print(f"# {logdir}: world model done ({steps} steps), skipped")
        else:
            self.execute(self.command(env, logdir, WORLD_MODEL, flags))
        return logdir

    def trained(self, item: SweepRun) -> bool:
        """Whether the run's agent already reached its configured number of updates."""
        steps = int(self.config(item.env, item.overrides())[STEPS_KEY[item.agent]])
        return RunDir(self.out / item.env / item.name).latest_step(item.agent) >= steps

    def run(self, item: SweepRun) -> pathlib.Path:
        """Train one agent in its own logdir over the shared data and world model."""
        shared = self.out / item.env / "shared"
        logdir = self.out / item.env / item.name
        if not (RunDir(shared).wm_checkpoints / "checkpoint").is_file() and not self.dry_run:
            raise UserError(f"{shared}: no world model; run the shared stage first "
                            "(--stage shared, or copy it from the machine that trained it)")
        if not self.dry_run:
            logdir.mkdir(parents=True, exist_ok=True)
            run, source = RunDir(logdir), RunDir(shared)
            for link, target in ((run.data, source.data), (run.world_model, source.world_model)):
                if not link.exists() and not link.is_symlink():
                    link.symlink_to(os.path.join("..", shared.name, target.name))
        if self.trained(item):
            print(f"# {logdir}: {item.agent} done ({RunDir(logdir).latest_step(item.agent)} steps), skipped")
        else:
            self.execute(self.command(item.env, logdir, item.agent, item.overrides()))
        if self.evaluate:
            self.execute([sys.executable, str(REPO / "evaluate.py"), str(logdir), "--quiet"])
        return logdir


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m ditto_tf.sweep", description="Run agents x N_E (x H x seeds) sequentially, "
        "resumably, sharing one world model per env. Flags after `--` go to every train.py call.")
    parser.add_argument("--envs", nargs="+", required=True, help="env config blocks, e.g. cartpole pong")
    parser.add_argument("--configs", nargs="*", default=[], help="blocks merged after the env, e.g. small")
    parser.add_argument("--out", required=True, help="sweep directory")
    parser.add_argument("--agents", nargs="+", choices=AGENTS, default=list(AGENTS))
    parser.add_argument("--experts", nargs="+", type=int, required=True, help="N_E values")
    parser.add_argument("--horizons", nargs="+", type=int, help="H values (default: config's)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--shard", help="i/n: this machine's share of the runs")
    parser.add_argument("--stage", choices=["all", "shared", "runs"], default="all")
    parser.add_argument("--eval", action="store_true", help="evaluate each run after training")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    argv = list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    return args, extra


@command()
def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    if any(n < 1 for n in args.experts):
        raise UserError(f"--experts {args.experts}: N_E values must be at least 1")
    # absolute: the train.py calls run in the repository, not in the user's working directory
    sweep = Sweep(resolve_path(args.out), args.configs, extra, args.dry_run, args.eval)
    horizons = args.horizons or [int(sweep.config(args.envs[0]).agent.horizon)]
    runs = shard(plan(args.envs, args.agents, args.experts, horizons, args.seeds), args.shard)
    print(f"# sweep: {len(runs)} runs" + (f" (shard {args.shard})" if args.shard else ""))
    if args.stage in ("all", "shared"):
        for env in dict.fromkeys(r.env for r in runs):
            sweep.shared(env, max(args.experts))
    if args.stage in ("all", "runs"):
        for item in runs:
            sweep.run(item)
    envs = " ".join(str(sweep.out / e) + "/*-s*" for e in dict.fromkeys(r.env for r in runs))
    print(f"# evaluate: python evaluate.py {envs} --out {sweep.out / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
