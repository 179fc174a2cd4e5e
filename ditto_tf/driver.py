"""One driver for every rollout in the true environment, and the actors it drives.

    actor = ExpertActor(envs, expert)      # or RandomActor, EpsilonActor, LatentPolicy, BCPolicy
    episodes = drive(envs, actor, quotas(20, len(envs)), on_episode=...)
    returns = [episode.score for episode in episodes]

Collection (`data/collect.py`: one env, seeded episodes, recorded), evaluation (`evaluation.py`:
lock-step envs, returns only) and the benchmarks' on-policy measurements all play through
`drive`, as DreamerV2's `common/driver.py` does. An actor maps a batch of observation dicts (one
row per env, `is_first` marking new episodes) to one env action per env (`act`), and hears when
env `index` starts an episode (`reset(index, seed)`; `seed` is None for unseeded episodes).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping, Protocol, Sequence

import numpy as np

from ditto_tf.env_base import Env, Obs
from ditto_tf.envs import VecEnv
from ditto_tf.obs_keys import OBS_KEYS

if TYPE_CHECKING:
    from ditto_tf.experts import Expert


class Actor(Protocol):
    """Acts in a batch of envs; see the module docstring."""

    def reset(self, index: int, seed: int | None = None) -> None:
        """Env `index` starts an episode (after its `env.reset(seed)`)."""

    def act(self, obs: Mapping[str, np.ndarray]) -> Sequence[Any]:
        """One env action per row of the batched observations."""


@dataclasses.dataclass
class Episode:
    """One finished episode of `drive`."""

    env: int                                # index of the env that played it
    number: int                             # its episode number on that env (0, 1, ...)
    score: float                            # rewards summed as the env gives them (Atari: game score)
    length: int                             # agent steps
    data: dict[str, np.ndarray] | None = None  # DreamerV2 layout, when recorded


def quotas(episodes: int, envs: int) -> list[int]:
    """Episodes per env: fixed up front, so that short episodes are not over-represented (stopping
    a vectorised run at the first `episodes` finished episodes would favour short ones)."""
    return [episodes // envs + (i < episodes % envs) for i in range(min(envs, episodes))]


def drive(envs: Sequence[Env], actor: Actor, plan: Sequence[int], *,
          seeds: Callable[[int, int], int] | None = None, record: bool = False,
          keys: Collection[str] | None = None, on_step: Callable[[], None] | None = None,
          on_episode: Callable[[Episode], None] | None = None) -> list[Episode]:
    """Play `plan[i]` full episodes on `envs[i]`, all envs in lock step with one `actor`.

    `seeds(i, n)` seeds episode n of env i (None: the envs' own seeding). With `record`, each
    episode is handed to `on_episode` with its steps in DreamerV2 layout (action[t] led to obs[t],
    zeros at t=0; `keys`: the observation keys to keep, None: all). Returns the episodes (without
    their data) ordered by env, then episode, so results are a function of the env seeds and the
    actor alone. Finished envs keep their last observation and their actions are ignored.
    """
    envs = list(envs)[:len(plan)]
    obs: list[Obs] = [{} for _ in envs]
    steps: list[list[Obs]] = [[] for _ in envs]
    actions: list[list[np.ndarray]] = [[] for _ in envs]
    score, length, done = np.zeros(len(envs)), np.zeros(len(envs), np.int64), [0] * len(envs)

    def begin(i: int) -> None:
        seed = None if seeds is None else seeds(i, done[i])
        obs[i] = envs[i].reset(seed=seed)
        actor.reset(i, seed)
        score[i], length[i] = 0.0, 0
        if record:
            steps[i], actions[i] = [obs[i]], [np.zeros(envs[i].action_size, np.float32)]

    for i in range(len(envs)):
        begin(i)
    episodes = []
    while any(d < q for d, q in zip(done, plan)):
        chosen = actor.act(VecEnv.stack(obs))
        for i, env in enumerate(envs):
            if done[i] >= plan[i]:
                continue
            obs[i] = env.step(chosen[i])
            score[i] += float(obs[i]["reward"])
            length[i] += 1
            if record:
                steps[i].append(obs[i])
                actions[i].append(env.action_vector(chosen[i]))
            if on_step is not None:
                on_step()
            if obs[i]["is_last"]:
                data = _layout(steps[i], actions[i], keys) if record else None
                episode = Episode(i, done[i], float(score[i]), int(length[i]), data)
                done[i] += 1
                if on_episode is not None:
                    on_episode(episode)
                episodes.append(dataclasses.replace(episode, data=None))  # data: not held
                if done[i] < plan[i]:
                    begin(i)
    return sorted(episodes, key=lambda e: (e.env, e.number))


def _layout(steps: list[Obs], actions: list[np.ndarray], keys: Collection[str] | None
            ) -> dict[str, np.ndarray]:
    drop = set() if keys is None else set(OBS_KEYS) - set(keys)
    episode = {key: np.stack([s[key] for s in steps]) for key in steps[0] if key not in drop}
    episode["action"] = np.stack(actions)
    return episode


def _seed_torch(seed: int) -> None:
    torch = sys.modules.get("torch")  # zoo agents sample from torch's global generator
    if torch is not None:
        torch.manual_seed(seed)


class RandomActor:
    """Uniformly random actions: an index for discrete spaces, else a uniform sample of the Box
    (infinite bounds taken as -1 / +1). `seed` seeds the generator once; a seeded episode
    (`reset(index, seed)`, as collect plays them) restarts it from the episode's seed."""

    def __init__(self, act_space: Any, seed: int | None = None):
        self.space, self.rng = act_space, np.random.default_rng(seed)
        if not hasattr(act_space, "n"):
            self.low = np.where(np.isfinite(act_space.low), act_space.low, -1.0)
            self.high = np.where(np.isfinite(act_space.high), act_space.high, 1.0)

    def reset(self, index: int, seed: int | None = None) -> None:
        """A seeded episode restarts the generator from its seed."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def sample(self) -> Any:
        """One random action."""
        if hasattr(self.space, "n"):
            return int(self.rng.integers(self.space.n))
        return self.rng.uniform(self.low, self.high).astype(np.float32)

    def act(self, obs: Mapping[str, np.ndarray]) -> list[Any]:
        """One random action per env (discrete: drawn as one batch)."""
        count = len(obs["is_first"])
        if hasattr(self.space, "n"):
            return list(self.rng.integers(0, int(self.space.n), count))
        return [self.sample() for _ in range(count)]


class ExpertActor:
    """An expert (`ditto_tf.experts.Expert`) acting on each env's native observation, its per-env
    state (frame stacks, Atari reset actions) reset at each episode. Zoo agents sample from
    torch's global generator: `seed` seeds it once, a seeded episode seeds it again."""

    def __init__(self, envs: Sequence[Env], expert: Expert, seed: int | None = None):
        self.envs, self.expert = list(envs), expert
        if seed is not None:
            _seed_torch(seed)

    def reset(self, index: int, seed: int | None = None) -> None:
        """Forget env `index`'s frames (and seed torch for a seeded episode)."""
        self.expert.reset(index)
        if seed is not None:
            _seed_torch(seed)

    def act(self, obs: Mapping[str, np.ndarray]) -> list[Any]:
        """The expert's action for every env (it reads the envs, not `obs`)."""
        return list(self.expert.act_batch(self.envs))


class EpsilonActor:
    """`actor`'s actions, each replaced by `random`'s with probability `epsilon`. The actor is
    asked every step even when replaced: an expert builds its own observation (frame stack,
    normalisation) from every frame."""

    def __init__(self, actor: Actor, random: RandomActor, epsilon: float):
        self.actor, self.random, self.epsilon = actor, random, float(epsilon)

    def reset(self, index: int, seed: int | None = None) -> None:
        """Reset both actors."""
        self.actor.reset(index, seed)
        self.random.reset(index, seed)

    def act(self, obs: Mapping[str, np.ndarray]) -> list[Any]:
        """The actor's actions with epsilon-random replacements."""
        actions = list(self.actor.act(obs))
        for i in range(len(actions)):
            if self.epsilon > 0 and self.random.rng.random() < self.epsilon:
                actions[i] = self.random.sample()
        return actions
