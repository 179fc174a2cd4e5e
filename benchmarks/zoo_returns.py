"""Return of each RL Zoo agent in a local zoo folder, measured as `--phase collect` records it.

    flock /tmp/ditto_heavy.lock python benchmarks/zoo_returns.py --zoo ../shared/zoo --episodes 10

For every `<zoo>/<algo>/<EnvId>_1/<EnvId>.zip` whose env has a config block (CartPole-v1,
LunarLander-v2 run in v3, BipedalWalker-v3), collects `--episodes` expert episodes through
`ditto_tf.data.collect.run` (pixel env, full episodes to the env's own limit, stochastic policy
unless --deterministic) into a temporary logdir and prints return mean +- std, min/max, length
and wall time as a markdown table.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from ditto_tf.config import load_config  # noqa: E402
from ditto_tf.data import collect  # noqa: E402
from ditto_tf.rundir import RunDir  # noqa: E402

BLOCKS = {"CartPole-v1": "cartpole", "LunarLander-v2": "lunarlander", "BipedalWalker-v3": "bipedalwalker"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoo", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "zoo"))
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--algos", nargs="+", default=["ppo", "a2c"])
    parser.add_argument("--envs", nargs="+", default=list(BLOCKS))
    parser.add_argument("--deterministic", action="store_true")
    args = parser.parse_args()
    zoo = pathlib.Path(args.zoo).resolve()
    rows = []
    for env_id in args.envs:
        for algo in args.algos:
            if not (zoo / algo / f"{env_id}_1" / f"{env_id}.zip").exists():
                print(f"skip {algo} {env_id}: no zip in {zoo}", file=sys.stderr)
                continue
            config = load_config([BLOCKS[env_id]], [
                "--expert.folder", str(zoo), "--expert.algo", algo, "--expert.env_id", env_id,
                "--expert.deterministic", str(args.deterministic), "--data.wm_policy", "random",
                "--data.wm_episodes", "0", "--data.expert_train", str(args.episodes),
                "--data.expert_val", "0"])
            with tempfile.TemporaryDirectory() as logdir:
                run = RunDir(logdir)
                start = time.perf_counter()
                summary = collect.run(config, run)
                seconds = time.perf_counter() - start
                lengths = [e["length"] - 1 for e in collect.Manifest(run, config).entries.values()]
            stats = summary["expert"]
            rows.append(f"| {algo} | {env_id} | {config.task[4:]} | {stats['episodes']} | "
                        f"{stats['mean']:.1f} +- {stats['std']:.1f} | {stats['min']:.1f} / "
                        f"{stats['max']:.1f} | {sum(lengths) / len(lengths):.0f} | {seconds:.0f} s |")
            print(rows[-1], flush=True)
    print("\n| algo | zoo env | run in | episodes | return mean +- std | min / max | "
          "mean length | wall |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
