"""Rollouts in the true environment: vectorised lock-step play of full episodes, and the
reference actors (uniformly random, the expert) that evaluation measures agents against."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

Actor = Callable[[dict[str, np.ndarray]], Sequence[Any]]
"""Maps a batch of observation dicts (one row per env, `is_first` marking new episodes) to one
env action per env."""


def quotas(episodes: int, envs: int) -> list[int]:
    """Episodes per env: fixed up front, so that short episodes are not over-represented (stopping
    a vectorised run at the first `episodes` finished episodes would favour short ones)."""
    return [episodes // envs + (i < episodes % envs) for i in range(min(envs, episodes))]


def rollout(envs: Sequence[Any], actor: Actor, episodes: int,
            progress: Any = None) -> tuple[list[float], list[int]]:
    """Play `episodes` full episodes on `envs` in lock step; returns (returns, lengths).

    Results are ordered by env, then by episode, so they are a function of the env seeds and the
    actor alone. Rewards are summed as the env gives them (Atari: unclipped game score).
    """
    from ditto_tf.envs import VecEnv

    plan = quotas(episodes, len(envs))
    envs = list(envs)[:len(plan)]
    obs = [env.reset() for env in envs]
    done = [0] * len(envs)
    totals, steps = np.zeros(len(envs)), np.zeros(len(envs), np.int64)
    results: list[list[tuple[float, int]]] = [[] for _ in envs]
    while any(d < q for d, q in zip(done, plan)):
        actions = actor(VecEnv.stack(obs))
        for i, env in enumerate(envs):
            if done[i] >= plan[i]:
                continue  # finished envs keep their last obs; their action is ignored
            obs[i] = env.step(actions[i])
            totals[i] += float(obs[i]["reward"])
            steps[i] += 1
            if obs[i]["is_last"]:
                results[i].append((float(totals[i]), int(steps[i])))
                done[i] += 1
                totals[i], steps[i] = 0.0, 0
                if progress is not None:
                    progress.update(1)
                if done[i] < plan[i]:
                    obs[i] = env.reset()
    flat = [pair for per_env in results for pair in per_env]
    return [r for r, _ in flat], [n for _, n in flat]


class RandomActor:
    """Uniformly random actions (an index for discrete spaces, a uniform Box sample otherwise)."""

    def __init__(self, act_space: Any, seed: int):
        self.space, self.rng = act_space, np.random.default_rng(seed)

    def __call__(self, obs: dict[str, np.ndarray]) -> list[Any]:
        count = len(obs["is_first"])
        if hasattr(self.space, "n"):
            return list(self.rng.integers(0, int(self.space.n), count))
        low, high = self.space.low, self.space.high
        return [self.rng.uniform(low, high).astype(np.float32) for _ in range(count)]


class ExpertActor:
    """The expert acting on every env's native observation (`expert.act_batch(envs)`), its
    per-env state (frame stacks, Atari reset actions) reset at each env's `is_first`."""

    def __init__(self, envs: Sequence[Any], expert: Any, seed: int):
        self.envs, self.expert = list(envs), expert
        try:  # zoo agents sample from torch's global generator: seed it for repeatable scores
            import torch

            torch.manual_seed(seed)
        except ImportError:
            pass

    def __call__(self, obs: dict[str, np.ndarray]) -> list[Any]:
        for i, first in enumerate(obs["is_first"]):
            if first:
                self.expert.reset(i)
        return list(self.expert.act_batch(self.envs))
