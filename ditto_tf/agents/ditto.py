"""DITTO: match the expert's latent trajectory in the world model (paper eq. 8, Algorithm 1).

    r_t = (zE_t . zpi_t) / max(|zE_t|, |zpi_t|)^2

between the expert's latent at step t and the agent's imagined latent at step t, both rolled
from the same expert start state. `ditto.reward_latent` picks the latent: `stoch` (z, the
paper), `deter` (h, the authors' code) or `feat` (both). For one-hot z with S categoricals,
|z|^2 = S, so the reward is the fraction of categoricals that agree.
"""

from __future__ import annotations

import pathlib
from typing import Any, Mapping

import tensorflow as tf

from ditto_tf.agents.actor_critic import ActorCritic, validation_metrics
from ditto_tf.agents.runner import already_trained, prepare_latent, train_loop, validation_windows
from ditto_tf.errors import UserError

LATENTS = ("stoch", "deter", "feat")


def select_latent(state: Mapping[str, tf.Tensor], latent: str) -> tf.Tensor:
    """The vector eq. 8 compares: flat z, h, or concat([z, h]), in float32 (..., N)."""
    stoch = tf.cast(state["stoch"], tf.float32)
    stoch = tf.reshape(stoch, tf.concat([tf.shape(stoch)[:-2], [-1]], 0))
    deter = tf.cast(state["deter"], tf.float32)
    if latent == "stoch":
        return stoch
    if latent == "deter":
        return deter
    if latent == "feat":
        return tf.concat([stoch, deter], -1)
    raise UserError(f"ditto.reward_latent: {latent!r} is not one of {', '.join(LATENTS)}")


def ditto_reward(expert: tf.Tensor, agent: tf.Tensor) -> tf.Tensor:
    """Eq. 8 over the last axis: (e . a) / max(|e|, |a|)^2; 0 where both are zero."""
    dot = tf.reduce_sum(expert * agent, -1)
    scale = tf.square(tf.maximum(tf.norm(expert, axis=-1), tf.norm(agent, axis=-1)))
    return tf.math.divide_no_nan(dot, scale)


def latent_reward(agent: Mapping[str, tf.Tensor], expert: Mapping[str, tf.Tensor],
                  latent: str) -> tf.Tensor:
    """Rewards (B, H) for states (B, H+1, ...): step t compares agent and expert at t + 1.

    Reward t belongs to action a_t, which led from state t to t + 1; the start states are the
    same for both, so they carry no reward.
    """
    agent_z = select_latent({k: v[:, 1:] for k, v in agent.items()}, latent)
    expert_z = select_latent({k: v[:, 1:] for k, v in expert.items()}, latent)
    return ditto_reward(expert_z, agent_z)


class DittoReward:
    """The fixed reward of eq. 8 (nothing to train)."""

    def __init__(self, latent: str):
        if latent not in LATENTS:
            raise UserError(f"ditto.reward_latent: {latent!r} is not one of {', '.join(LATENTS)}")
        self.latent = latent

    def __call__(self, agent: Mapping[str, tf.Tensor], expert: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return latent_reward(agent, expert, self.latent)

    def train(self, agent: Mapping[str, tf.Tensor], expert: Mapping[str, tf.Tensor]) -> dict:
        return {}

    def trackables(self) -> dict[str, Any]:
        return {}


def train_imitation(config: Any, logdir: pathlib.Path, name: str, reward_factory: Any) -> None:
    """Train an actor-critic on imagined rollouts with the reward `reward_factory(setup)` makes.

    Shared by DITTO and D-GAIL: batches of `agent.batch` expert windows of H + 1 states (a pure
    function of (seed, update)), validation on fixed held-out windows every `log_every` updates.
    """
    if already_trained(logdir, name, config.agent.steps):
        return
    setup = prepare_latent(config, logdir)
    reward = reward_factory(setup)
    agent = ActorCritic(config, setup.wm, setup.act_dim, setup.discrete, reward)
    c = config.agent
    length = c.horizon + 1
    valid = setup.train.window_starts(length)
    val_states, val_actions = validation_windows(setup, length, c.batch, config.seed)
    latent = config.ditto.reward_latent
    # Tensors enter as arguments (not captured constants), so the graph stays small.
    validate = tf.function(lambda states, actions: validation_metrics(
        setup.wm.rssm, agent.actor, states, actions, setup.discrete, latent))

    def update(step: int) -> dict[str, tf.Tensor]:
        windows = setup.train.sample_windows(valid, c.batch, length, config.seed, step)
        return agent.update(setup.states(windows), step)

    trackables = {**agent.trackables(), **reward.trackables()}
    train_loop(config, logdir, name, c.steps, trackables, update,
               lambda: validate(val_states, val_actions))


def run(config: Any, logdir: pathlib.Path) -> None:
    """`--phase ditto`: DITTO in the world model from the expert episodes in the logdir."""
    latent = config.ditto.reward_latent
    train_imitation(config, logdir, "ditto", lambda setup: DittoReward(latent))
