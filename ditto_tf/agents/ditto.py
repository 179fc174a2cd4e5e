"""DITTO: match the expert's latent trajectory in the world model (paper eq. 8, Algorithm 1).

The reward (eq. 8, `ditto.reward_latent`, `ditto.reward_form`) lives in `eq8.py`; this module
holds DITTO's reward object and the imitation loop DITTO and D-GAIL share.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import tensorflow as tf

from ditto_tf.agents.actor_critic import ActorCritic, validation_metrics
from ditto_tf.agents.eq8 import (  # noqa: F401  (re-exported: the names DITTO's users know)
    FORMS, LATENTS, check_form, check_latent, ditto_reward, latent_reward, select_latent)
from ditto_tf.agents.runner import (LatentSetup, already_trained, prepare_latent, train_agent,
                                    validation_windows)
from ditto_tf.config import Config
from ditto_tf.rundir import RunDir


class DittoReward:
    """The fixed reward of eq. 8 (nothing to train) on `latent`, with z in `form`."""

    def __init__(self, latent: str, form: str = "sample"):
        self.latent, self.form = check_latent(latent), check_form(form)

    def __call__(self, agent: Mapping[str, tf.Tensor], expert: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return latent_reward(agent, expert, self.latent, self.form)

    def train(self, agent: Mapping[str, tf.Tensor], expert: Mapping[str, tf.Tensor]) -> dict:
        return {}

    def trackables(self) -> dict[str, Any]:
        return {}


def train_imitation(config: Config, run: RunDir, name: str,
                    reward_factory: Callable[[LatentSetup], Any]) -> None:
    """Train an actor-critic on imagined rollouts with the reward `reward_factory(setup)` makes.

    Shared by DITTO and D-GAIL: batches of `agent.batch` expert windows of H + 1 states (a pure
    function of (seed, update)), validation on fixed held-out windows every `log_every` updates.
    """
    if already_trained(run, name, config.agent.steps):
        return
    setup = prepare_latent(config, run)
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
    train_agent(config, run, name, c.steps, trackables, update,
               lambda: validate(val_states, val_actions))


def run(config: Config, run: RunDir) -> None:
    """`--phase ditto`: DITTO in the world model from the run's expert episodes."""
    reward = DittoReward(config.ditto.reward_latent, config.ditto.reward_form)  # checked up front
    train_imitation(config, run, "ditto", lambda setup: reward)
