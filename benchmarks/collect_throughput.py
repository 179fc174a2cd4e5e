"""Collection throughput: env steps/s with expert + recording vs bare stepping with the expert.

    flock /tmp/ditto_heavy.lock python benchmarks/collect_throughput.py

For each case (CartPole with the zoo PPO agent; Atari Pong with the PPO CnnPolicy expert in
`../shared/experts`), the same episodes (same per-episode seeds) are played three ways:
  env      the pixel env with random actions (the env's own cost),
  bare     the pixel env stepped with the expert's actions, nothing recorded,
  collect  what `--phase collect` does: expert + recording + compressed atomic episode files +
           manifest, through `ditto_tf.data.collect`.
and the collect rate is reported as a fraction of the bare rate (target >= 70%).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ditto_tf import envs, obs_keys  # noqa: E402
from ditto_tf.config import load_config  # noqa: E402
from ditto_tf.data import collect, policies  # noqa: E402
from ditto_tf.driver import Actor, RandomActor, drive  # noqa: E402
from ditto_tf.rundir import RunDir  # noqa: E402

SHARED = ROOT.parent / "shared"
CASES = {
    "cartpole": (["cartpole"], SHARED / "zoo"),
    "pong": (["atari", "pong"], SHARED / "experts"),
}


def play(env: envs.Env, actor: Actor, seeds: list[int]) -> int:
    """Play one episode per seed without recording; return the number of env steps."""
    played = drive([env], actor, [len(seeds)], seeds=lambda _, number: seeds[number])
    return sum(episode.length for episode in played)


def measure(name: str, episodes: int, time_limit: int) -> dict[str, float]:
    configs, folder = CASES[name]
    config = load_config(configs, [
        "--expert.folder", str(folder), "--data.wm_policy", "random", "--data.wm_episodes", "0",
        "--data.expert_train", str(episodes), "--data.expert_val", "0",
        "--env.time_limit", str(time_limit)])
    env = envs.make_env(config, seed=0)
    keys = obs_keys.select(config, obs_keys.env_shapes(env)).stored  # as collect.run records
    sets = policies.build_policies(config, env)
    agent, actor = sets["expert_train"]
    seeds = [collect.episode_seed(config.seed, "expert_train", i) for i in range(episodes)]
    play(env, actor, seeds[:1])  # warm-up: torch, rendering, first ROM load

    rates = {}
    start = time.perf_counter()
    steps = play(env, RandomActor(env.act_space), seeds)
    rates["env"] = steps / (time.perf_counter() - start)
    start = time.perf_counter()
    steps = play(env, actor, seeds)
    rates["bare"] = steps / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as logdir:
        run = RunDir(logdir)
        manifest = collect.Manifest(run, config)
        start = time.perf_counter()
        collect._collect_set(config, run, env, "expert_train", episodes,
                             (agent, actor), manifest, keys)
        seconds = time.perf_counter() - start
        recorded = sum(e["length"] - 1 for e in manifest.entries.values())
    rates["collect"] = recorded / seconds
    rates["steps"] = recorded
    if recorded != steps:
        print(f"note: {name}: bare played {steps} steps, collect {recorded}", file=sys.stderr)
    env.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--time_limit", type=int, default=0,
                        help="agent steps per episode (0: the config's own limit)")
    args = parser.parse_args()
    rows = []
    for name in args.cases:
        r = measure(name, args.episodes, args.time_limit)
        rows.append(f"| {name} | {r['steps']:.0f} | {r['env']:.0f} | {r['bare']:.0f} | "
                    f"{r['collect']:.0f} | {100 * r['collect'] / r['bare']:.0f}% |")
        print(rows[-1], flush=True)
    print("\n| case | steps | env only (random) steps/s | env + expert (bare) steps/s | "
          "collect steps/s | collect / bare |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
