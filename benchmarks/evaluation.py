"""Evaluation rollout throughput: agent steps/s of the random policy, the expert and (with
--logdir) a trained agent's policy, in the true env, for several numbers of lock-stepped envs.

    python benchmarks/evaluation.py --configs atari pong --episodes 4 --envs 1 4 \
        --expert.folder ../shared/experts
    python benchmarks/evaluation.py --logdir runs/cartpole --agent ditto --episodes 8 --envs 1 4

Prints one line per (actor, envs): episodes, agent steps, seconds, steps/s, mean return. Run
alone on the machine (flock /tmp/ditto_heavy.lock ...): throughput is what it measures.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from ditto_tf.config import load_config, parse_overrides  # noqa: E402
from ditto_tf.evaluation import EVAL_SEED, Protocol, _play, eval_config  # noqa: E402
from ditto_tf.driver import ExpertActor, RandomActor  # noqa: E402
from ditto_tf.runs import load_run_config  # noqa: E402
from ditto_tf.rundir import RunDir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="*", default=[])
    parser.add_argument("--logdir", help="a trained run: also time its --agent policy")
    parser.add_argument("--agent", default="ditto")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--deterministic", action="store_true")
    args, overrides = parser.parse_known_args()
    if args.logdir:
        config = load_run_config(pathlib.Path(args.logdir))
        config = config.update(parse_overrides(overrides, config))
    else:
        config = load_config(args.configs, overrides)
    config = eval_config(config)
    actors = {"random": lambda envs: RandomActor(envs[0].act_space, EVAL_SEED)}
    if config.expert.source != "random":
        from ditto_tf.experts import load_expert

        expert = load_expert(config)
        actors["expert"] = lambda envs: ExpertActor(envs, expert, EVAL_SEED)
    if args.logdir:
        from ditto_tf.agents.policy import load_policy

        policy = load_policy(config, RunDir(args.logdir), args.agent, deterministic=args.deterministic)
        actors[args.agent] = lambda envs: (policy.reset(), policy)[1]
    print(f"task {config.task}, {args.episodes} episodes per line")
    for name, make_actor in actors.items():
        for count in args.envs:
            start = time.perf_counter()
            data = _play(config, Protocol(envs=count), EVAL_SEED, args.episodes, make_actor, None)
            seconds = time.perf_counter() - start
            steps = int(np.sum(data["lengths"]))
            print(f"{name:8s} envs {count}: {len(data['returns'])} episodes, {steps} agent steps, "
                  f"{seconds:.1f} s, {steps / seconds:.0f} steps/s, mean return "
                  f"{np.mean(data['returns']):.1f}", flush=True)


if __name__ == "__main__":
    main()
