"""Seconds per actor-critic update (B expert starts x H imagined steps) on this machine.

    flock /tmp/ditto_heavy.lock python benchmarks/actor_critic_speed.py            # all four
    flock /tmp/ditto_heavy.lock python benchmarks/actor_critic_speed.py --sizes small --precisions float32

One DITTO update: H prior steps under the actor (a compiled tf.scan), eq. 8 rewards,
lambda-returns, critic and actor steps. The world model has its configured size and fresh
weights (the speed does not depend on training); the expert windows are states of that RSSM
(random one-hot z, random h). Sizes: `small` (configs cartpole small) and `atari` (the defaults:
DreamerV2 Atari sizes, 4 x 400 actor and critic). The first call (tracing) is reported apart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ditto_tf.agents.actor_critic import ActorCritic  # noqa: E402
from ditto_tf.agents.ditto import DittoReward  # noqa: E402
from ditto_tf.agents.latents import to_state  # noqa: E402
from ditto_tf.config import load_config  # noqa: E402
from ditto_tf.world_model import WorldModel  # noqa: E402

SIZES = {"small": ["cartpole", "small"], "atari": ["cartpole"]}


def measure(size: str, precision: str, steps: int, batch: int, horizon: int, actions: int) -> dict:
    config = load_config(SIZES[size], ["--precision", precision, "--agent.batch", str(batch),
                                       "--agent.horizon", str(horizon)])
    rssm = config.world_model.rssm
    wm = WorldModel(config, actions)
    agent = ActorCritic(config, wm, actions, True, DittoReward(config.ditto.reward_latent))
    rng = np.random.default_rng(0)
    deter = rng.normal(size=(batch, horizon + 1, rssm.deter)).astype(np.float32)
    stoch = rng.integers(rssm.discrete, size=(batch, horizon + 1, rssm.stoch))
    expert = to_state(wm.rssm, tf.constant(deter), tf.constant(stoch), rssm.discrete)
    start = time.perf_counter()
    float(agent.update(expert, 1)["actor_loss"])
    first = time.perf_counter() - start
    times = []
    for step in range(steps):
        start = time.perf_counter()
        float(agent.update(expert, step + 2)["actor_loss"])
        times.append(time.perf_counter() - start)
    params = sum(int(np.prod(v.shape)) for net in (agent.actor, agent.critic) for v in net.weights)
    return dict(size=size, precision=precision, first=first, median=statistics.median(times),
                mean=statistics.mean(times), steps=steps, params=params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "atari"], choices=list(SIZES))
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed"])
    parser.add_argument("--steps", type=int, default=10, help="timed updates (float32)")
    parser.add_argument("--mixed_steps", type=int, default=2, help="timed updates (mixed: slow on CPU)")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--actions", type=int, default=6)
    args = parser.parse_args()
    print(f"TF {tf.__version__}, {os.cpu_count()} CPUs, batch {args.batch} x horizon {args.horizon}")
    print("| size | precision | actor+critic params | first call (trace) s | s / update (median) | updates timed |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        for precision in args.precisions:
            steps = args.mixed_steps if precision == "mixed" else args.steps
            r = measure(size, precision, steps, args.batch, args.horizon, args.actions)
            print(f"| {size} | {precision} | {r['params'] / 1e6:.2f} M | {r['first']:.1f} | "
                  f"{r['median']:.3f} | {r['steps']} |", flush=True)


if __name__ == "__main__":
    main()
