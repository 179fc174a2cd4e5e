"""How collect acts: the policies of the episode sets (random, expert, epsilon-expert, another zoo
algorithm) and the rollout that records one full episode in DreamerV2 layout."""

from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np

from ditto_tf import envs, obs_keys
from ditto_tf.config import Config
from ditto_tf.errors import UserError

Policy = Callable[[envs.Env, np.random.Generator], Any]


def random_policy(env: envs.Env, rng: np.random.Generator) -> Any:
    """A uniform random action from the episode's generator (reproducible per episode)."""
    space = env.act_space
    if env.discrete:
        return int(rng.integers(space.n))
    low = np.where(np.isfinite(space.low), space.low, -1.0)
    high = np.where(np.isfinite(space.high), space.high, 1.0)
    return rng.uniform(low, high).astype(np.float32)


def expert_policy(expert: Any, epsilon: float = 0.0) -> Policy:
    """The expert's action, replaced by a random one with probability `epsilon`.

    The expert is asked every step even when its action is replaced: it builds its own
    observation (frame stack, normalisation) from `env.native_obs` and must see every frame.
    """

    def policy(env: envs.Env, rng: np.random.Generator) -> Any:
        action = expert.act(env)
        if epsilon > 0 and rng.random() < epsilon:
            return random_policy(env, rng)
        return action

    return policy


def reset_expert(expert: Any, seed: int) -> None:
    """Reset the expert's episode state and seed its sampling for this episode."""
    expert.reset()
    torch = sys.modules.get("torch")  # zoo agents sample from torch's global generator
    if torch is not None:
        torch.manual_seed(seed)


def build_policies(config: Config, env: envs.Env) -> dict[str, tuple[str, Policy, Any]]:
    """{set name: (agent label, policy, expert or None)}.

    Loads every expert the sets need and checks it against `env` (action space, observations)
    before anything is written: bad folders, zips and mismatches fail here in one line.
    """

    def load(algo: str | None = None) -> tuple[str, Policy, Any]:
        if config.expert.source == "random":  # seeded per episode, unlike a shared generator
            return "random", random_policy, None
        from ditto_tf.experts import load_expert  # torch and the zoo: only when needed

        expert = load_expert(config, algo=algo, env=env)
        return expert.label, expert_policy(expert), expert

    needed = config.data.expert_train + config.data.expert_val > 0
    wm = str(config.data.wm_policy)
    eps = float(config.data.wm_epsilon)
    if wm == "epsilon" and not 0.0 <= eps <= 1.0:
        raise UserError(f"data.wm_epsilon: {eps} is not a probability in [0, 1]")
    if needed or wm in ("expert", "epsilon", config.expert.algo):
        expert = load()
    else:  # no expert episodes to record: nothing to load
        expert = (f"{config.expert.algo}:{config.expert.env_id} (not loaded)", random_policy, None)
    if wm == "random":
        wm_entry: tuple[str, Policy, Any] = ("random", random_policy, None)
    elif wm in ("expert", config.expert.algo):
        wm_entry = expert
    elif wm == "epsilon":
        label, _, model = expert
        policy = expert_policy(model, eps) if model is not None else random_policy
        wm_entry = (f"{label} + epsilon {eps:g} random", policy, model)
    else:  # another algorithm from the same source, e.g. a2c
        try:
            wm_entry = load(wm)
        except UserError as e:
            raise UserError(f"data.wm_policy {wm!r} (expert | random | epsilon | a zoo algo): {e}") from None
    torch = sys.modules.get("torch")
    if torch is not None:
        # One env, batch-1 inference: extra threads only add sync cost, and on a busy 2-core
        # machine they made the Atari CNN 15x slower (24 ms vs 1.4 ms per step).
        torch.set_num_threads(1)
    return {"wm": wm_entry, "expert_train": expert, "expert_val": expert}  # type: ignore[dict-item]


# ----------------------------------------------------------------------------------------------
# Rollouts


def rollout(env: envs.Env, policy: Policy, seed: int, expert: Any = None,
            on_step: Callable[[], None] | None = None,
            keys: Any = None) -> dict[str, np.ndarray]:
    """One full episode in DreamerV2 layout (action[t] led to image[t], zeros at t=0).

    `keys`: the observation keys to keep (None: all the env offers).
    """
    rng = np.random.default_rng(seed)
    obs = env.reset(seed=seed)
    if expert is not None:
        reset_expert(expert, seed)
    steps = [obs]
    actions = [np.zeros(env.action_size, np.float32)]
    while not obs["is_last"]:
        action = policy(env, rng)
        obs = env.step(action)
        steps.append(obs)
        actions.append(env.action_vector(action))
        if on_step is not None:
            on_step()
    drop = set() if keys is None else set(obs_keys.OBS_KEYS) - set(keys)
    episode = {key: np.stack([s[key] for s in steps]) for key in steps[0] if key not in drop}
    episode["action"] = np.stack(actions)
    return episode
