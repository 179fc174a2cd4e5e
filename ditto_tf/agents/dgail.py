"""D-GAIL: GAIL in the world model's latent space (paper eq. 3, section 4.1).

A discriminator D(s_t, s_t+1) on latent transitions learns to tell the expert's (label 1) from
the actor's imagined ones (label 0) with the cross-entropy of eq. 3, one step per actor-critic
update, inside the same compiled update. Its reward for action a_t (transition t -> t+1) is
`-log(1 - D)` (`dgail.reward: neg_log_one_minus_d`, GAIL's) or `D` itself (`sigmoid`, the
authors' code), optimised by the actor-critic DITTO uses. The discriminator's accuracy on expert
and on agent transitions is logged so that adversarial collapse shows.
"""

from __future__ import annotations

from typing import Any, Mapping

import tensorflow as tf

from ditto_tf.agents.actor_critic import Optimizer
from ditto_tf.agents.ditto import train_imitation
from ditto_tf.agents.eq8 import select_latent
from ditto_tf.config import Config
from ditto_tf.errors import UserError
from ditto_tf.nets import MLP
from ditto_tf.rundir import RunDir
from ditto_tf.world_model import precision_policy

REWARDS = ("neg_log_one_minus_d", "sigmoid")


def transitions(states: Mapping[str, tf.Tensor], latent: str, stop: bool = True) -> tf.Tensor:
    """States (B, H+1, ...) -> pairs concat([s_t, s_t+1]) (B, H, 2N); without gradients unless
    `stop` is False (the reward under `agent.actor_grad: dynamics` backpropagates into them)."""
    z = select_latent(states, latent)
    z = tf.stop_gradient(z) if stop else z
    return tf.concat([z[:, :-1], z[:, 1:]], -1)


def gail_reward(logits: tf.Tensor, form: str) -> tf.Tensor:
    """Reward from discriminator logits, D = sigmoid(logits) the probability of 'expert'."""
    if form == "neg_log_one_minus_d":
        return tf.nn.softplus(logits)  # -log(1 - sigmoid(x)) = softplus(x), stable
    if form == "sigmoid":
        return tf.nn.sigmoid(logits)
    raise UserError(f"dgail.reward: {form!r} is not one of {', '.join(REWARDS)}")


class GailReward:
    """The discriminator, its optimizer, its reward and its training step."""

    def __init__(self, config: Config):
        c = config.dgail
        if c.reward not in REWARDS:
            raise UserError(f"dgail.reward: {c.reward!r} is not one of {', '.join(REWARDS)}")
        self.form, self.latent = c.reward, c.latent
        rssm = config.world_model.rssm
        width = {"stoch": rssm.stoch * rssm.discrete, "deter": rssm.deter,
                 "feat": rssm.stoch * rssm.discrete + rssm.deter}
        if c.latent not in width:
            raise UserError(f"dgail.latent: {c.latent!r} is not one of stoch, deter, feat")
        self.disc = MLP(1, c.disc.layers, c.disc.units, c.disc.act, name="discriminator",
                        dtype=precision_policy(config))
        self.disc(tf.zeros([1, 2 * width[c.latent]]))
        self.opt = Optimizer(self.disc, c.lr, config.agent.eps, config.agent.clip, name="disc_opt")

    def logits(self, states: Mapping[str, tf.Tensor], stop: bool = True) -> tf.Tensor:
        return self.disc(transitions(states, self.latent, stop))[..., 0]

    def __call__(self, agent: Mapping[str, tf.Tensor], expert: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return gail_reward(self.logits(agent, stop=False), self.form)

    def train(self, agent: Mapping[str, tf.Tensor], expert: Mapping[str, tf.Tensor]
              ) -> dict[str, tf.Tensor]:
        """One step of eq. 3: -log D(expert) - log(1 - D(agent)), means over transitions."""
        with tf.GradientTape() as tape:
            expert_logits = self.logits(expert)
            agent_logits = self.logits(agent)
            bce = tf.nn.sigmoid_cross_entropy_with_logits
            expert_loss = tf.reduce_mean(bce(tf.ones_like(expert_logits), expert_logits))
            agent_loss = tf.reduce_mean(bce(tf.zeros_like(agent_logits), agent_logits))
            loss = expert_loss + agent_loss
        metrics = self.opt(tape, loss, "disc")
        metrics.update({
            "disc_expert_accuracy": tf.reduce_mean(tf.cast(expert_logits > 0, tf.float32)),
            "disc_agent_accuracy": tf.reduce_mean(tf.cast(agent_logits < 0, tf.float32)),
            "disc_expert_prob": tf.reduce_mean(tf.nn.sigmoid(expert_logits)),
            "disc_agent_prob": tf.reduce_mean(tf.nn.sigmoid(agent_logits)),
        })
        return metrics

    def trackables(self) -> dict[str, Any]:
        return {"discriminator": self.disc, "disc_opt": self.opt.optimizer}


def run(config: Config, run: RunDir) -> None:
    """`--phase dgail`: D-GAIL in the world model from the run's expert episodes."""
    train_imitation(config, run, "dgail", lambda setup: GailReward(config))
