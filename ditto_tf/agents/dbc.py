"""D-BC: behaviour cloning on the world model's latent states (paper eq. 9).

    L_BC = E_(s, a) ~ D_E [ -log pi(a | s) - eta_BC H(pi(s)) ]

s is the expert's posterior state at step t (the encoder + RSSM filter over the expert's
frames, as the policy sees the true env at test time) and a the action the expert took there:
`action[t + 1]` of the episode file (`action[t]` led to `image[t]`). Same policy network as
DITTO and D-GAIL; validation measures the same L_d (rolling this actor out in the model) and
action accuracy on held-out expert episodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from ditto_tf.agents.actor_critic import Optimizer, action_dist, dist_mode, make_actor, validation_metrics
from ditto_tf.agents.latents import to_state
from ditto_tf.agents.runner import (LatentSetup, already_trained, prepare_latent, train_agent,
                                    validation_windows)
from ditto_tf.config import Config
from ditto_tf.rundir import RunDir


class DBC:
    """The actor and its maximum-likelihood update with entropy bonus eta_BC."""

    def __init__(self, config: Config, setup: LatentSetup):
        self.config, self.setup = config, setup
        self.actor = make_actor(config, setup.act_dim, setup.discrete)
        self.actor(tf.zeros([1, setup.wm.rssm.feat_size]))
        c = config.agent
        self.opt = Optimizer(self.actor, c.actor_lr, c.eps, c.clip, name="actor_opt")

    def trackables(self) -> dict[str, Any]:
        return {"actor": self.actor, "actor_opt": self.opt.optimizer}

    @tf.function
    def update(self, deter: tf.Tensor, stoch: tf.Tensor, action: tf.Tensor) -> dict[str, tf.Tensor]:
        """One step on a batch of expert (state, action) pairs: deter (B, D), stoch (B, S)."""
        rssm = self.setup.wm.rssm
        feat = tf.stop_gradient(rssm.get_feat(to_state(rssm, deter, stoch, self.setup.train.classes)))
        if not self.setup.discrete:  # the truncated normal lives on [-1, 1]
            action = tf.clip_by_value(action, -1.0 + 1e-4, 1.0 - 1e-4)
        with tf.GradientTape() as tape:
            dist = action_dist(self.actor(feat), self.setup.discrete)
            log_prob = tf.reduce_mean(dist.log_prob(action))
            entropy = tf.reduce_mean(dist.entropy())
            loss = -log_prob - self.config.dbc.entropy * entropy
        metrics = self.opt(tape, loss, "dbc")
        metrics.update({"log_prob": log_prob, "actor_entropy": entropy})
        mode = dist_mode(dist, self.setup.discrete)
        if self.setup.discrete:
            match = tf.argmax(mode, -1) == tf.argmax(action, -1)
            metrics["action_accuracy"] = tf.reduce_mean(tf.cast(match, tf.float32))
        else:
            metrics["action_error"] = tf.reduce_mean(tf.abs(mode - action))
        return metrics


def run(config: Config, run: RunDir) -> None:
    """`--phase dbc`: D-BC on the run's expert latents."""
    if already_trained(run, "dbc", config.dbc.steps):
        return
    setup = prepare_latent(config, run)
    agent = DBC(config, setup)
    pairs = np.flatnonzero(setup.train.has_action)
    c = config.dbc

    def update(step: int) -> dict[str, tf.Tensor]:
        rng = np.random.default_rng([config.seed, step])
        index = pairs[rng.integers(len(pairs), size=c.batch)]
        return agent.update(tf.constant(setup.train.deter[index]),
                            tf.constant(setup.train.stoch[index]),
                            tf.constant(setup.train.action[index]))

    length = config.agent.horizon + 1
    val_states, val_actions = validation_windows(setup, length, config.agent.batch, config.seed)
    latent = config.ditto.reward_latent
    validate = tf.function(lambda states, actions: validation_metrics(
        setup.wm.rssm, agent.actor, states, actions, setup.discrete, latent))
    train_agent(config, run, "dbc", c.steps, agent.trackables(), update,
               lambda: validate(val_states, val_actions))
