"""The actor-critic that DITTO and D-GAIL share (paper appendix C, eq. 13-16).

One update, compiled as a single `tf.function`:

1. imagine: from B expert start states s_0, roll the actor through the world model's prior for
   H steps (a `tf.scan`, so the loop is traced once), giving states s_0..s_H and actions
   a_0..a_{H-1};
2. reward: r_t for action a_t, from a reward object (DITTO eq. 8 or a D-GAIL discriminator);
3. lambda-returns (eq. 14) bootstrapped with the target critic, V_H = v_target(s_H);
4. critic regression on V_0..V_{H-1} (eq. 15) and the actor loss (`agent.actor_grad`, with
   DreamerV2's meaning): `reinforce` (eq. 16, the paper) with the critic as baseline, `dynamics`
   (maximise the lambda-return itself, backpropagated through the imagined trajectory and the
   frozen world model into the actor via straight-through one-hot or reparameterised actions),
   or `both`, mixed by `agent.actor_grad_mix`; plus an entropy bonus eta.

Indexing: rewards[:, t] belongs to the transition s_t --a_t--> s_{t+1} (the reward compares
s_{t+1} with the expert's), so V_t = r_t + gamma ((1 - lambda) v(s_{t+1}) + lambda V_{t+1}).
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from ditto_tf.agents.eq8 import latent_reward
from ditto_tf.config import Config
from ditto_tf.dists import OneHotDist
from ditto_tf.errors import UserError
from ditto_tf.nets import MLP
from ditto_tf.rssm import RSSM, State
from ditto_tf.world_model import WorldModel, precision_policy

tfd = tfp.distributions
ACTOR_GRADS = ("reinforce", "dynamics", "both")


class RewardFunction(Protocol):
    """What the actor-critic needs from DITTO's or D-GAIL's reward."""

    def __call__(self, agent: State, expert: State) -> tf.Tensor:
        """agent, expert: states (B, H+1, ...) -> rewards (B, H) for actions a_0..a_{H-1}."""

    def train(self, agent: State, expert: State) -> dict[str, tf.Tensor]:
        """One training step of learned rewards inside the update (empty for fixed rewards)."""


def lambda_return(rewards: tf.Tensor, values: tf.Tensor, gamma: float, lambda_: float) -> tf.Tensor:
    """Lambda-returns (paper eq. 14), batch-major.

    rewards (B, H): r_t for t < H; values (B, H+1): v(s_0) .. v(s_H). Returns V_0 .. V_{H-1}
    with V_t = r_t + gamma ((1 - lambda) v_{t+1} + lambda V_{t+1}) and V_H = v_H.
    """
    rewards = tf.transpose(rewards)  # time-major for the backward scan
    values = tf.transpose(values)
    inputs = rewards + gamma * (1.0 - lambda_) * values[1:]
    returns = tf.scan(
        lambda following, inp: inp + gamma * lambda_ * following,
        inputs, initializer=values[-1], reverse=True,
    )
    return tf.transpose(returns)


def action_dist(params: tf.Tensor, discrete: bool) -> OneHotDist | tfd.Distribution:
    """The policy's action distribution from the actor's raw outputs (computed in float32).

    Discrete: one-hot categorical (float one-hot samples, as the world model takes them).
    Continuous: DreamerV2's truncated normal on [-1, 1] with mean tanh(mu) and std in [0.1, 2.1].
    """
    params = tf.cast(params, tf.float32)
    if discrete:
        return OneHotDist(params)
    mean, std = tf.split(params, 2, -1)
    std = 2.0 * tf.nn.sigmoid(std / 2.0) + 0.1
    return tfd.Independent(tfd.TruncatedNormal(tf.tanh(mean), std, -1.0, 1.0), 1)


def dist_mode(dist: OneHotDist | tfd.Distribution, discrete: bool) -> tf.Tensor:
    """The most likely action (one-hot argmax, or the truncated normal's centre)."""
    if discrete:
        return dist.mode()
    return tf.clip_by_value(dist.distribution.loc, -1.0, 1.0)


def make_actor(config: Config, act_dim: int, discrete: bool, name: str = "actor") -> MLP:
    """The policy network all latent agents share: model features -> action parameters."""
    c = config.agent.actor
    return MLP(act_dim if discrete else 2 * act_dim, c.layers, c.units, c.act, name=name,
               dtype=precision_policy(config))


def feature_size(config: Config) -> int:
    """Width of the model state features concat([stoch flat, deter])."""
    rssm = config.world_model.rssm
    return rssm.stoch * rssm.discrete + rssm.deter


def imagine(rssm: RSSM, actor: keras.Layer, start: State, horizon: int, discrete: bool,
            mode: bool = False, differentiable: bool = False) -> tuple[State, tf.Tensor]:
    """Roll `actor` through the prior for `horizon` steps from `start` (B, ...).

    Returns batch-major states (B, H+1, ...) including the start, and the actions (B, H, A),
    where action t was taken in state t. `rssm.imagine` runs the loop as a `tf.scan`, so inside a
    `tf.function` it is traced once whatever the horizon. With `differentiable`, the sampled
    actions keep their gradient (straight-through one-hot, or the truncated normal's
    reparameterised sample), so later states and rewards backpropagate into the actor.
    """
    def policy(feat: tf.Tensor) -> tf.Tensor:
        dist = action_dist(actor(feat), discrete)
        action = dist_mode(dist, discrete) if mode else dist.sample()
        return action if differentiable and not mode else tf.stop_gradient(action)

    seq = rssm.imagine(policy, start, horizon)
    swap = lambda x: tf.transpose(x, [1, 0, *range(2, len(x.shape))])  # noqa: E731
    states = {k: swap(seq[k]) for k in ("deter", "stoch", "logit")}
    return states, swap(seq["action"][1:])


class Optimizer:
    """Adam with global-norm clipping for one network; `opt(tape, loss, prefix)` is one step.

    Under mixed_float16 the Adam is wrapped in Keras 3's dynamic `LossScaleOptimizer`. The loss is
    scaled through `tape.gradient(..., output_gradients=scale)` (the same as differentiating
    `loss * scale`, so the tape may be closed already) and `apply()` unscales, skips non-finite
    steps and clips.
    """

    def __init__(self, module: keras.Layer, lr: float, eps: float, clip: float, name: str):
        self.module = module
        self.mixed = module.dtype_policy.name == "mixed_float16"
        adam = keras.optimizers.Adam(lr, epsilon=eps, global_clipnorm=clip or None, name=name)
        self.optimizer = keras.optimizers.LossScaleOptimizer(adam) if self.mixed else adam
        self.optimizer.build(module.trainable_variables)  # variables exist before a restore

    def __call__(self, tape: tf.GradientTape, loss: tf.Tensor, prefix: str) -> dict[str, tf.Tensor]:
        variables = self.module.trainable_variables
        if self.mixed:
            scale = tf.cast(self.optimizer.dynamic_scale, tf.float32)
            grads = tape.gradient(loss, variables, output_gradients=scale)
            norm = tf.linalg.global_norm(grads) / scale
        else:
            grads = tape.gradient(loss, variables)
            norm = tf.linalg.global_norm(grads)
        self.optimizer.apply(grads, variables)
        return {f"{prefix}_loss": loss, f"{prefix}_grad_norm": norm}


class ActorCritic:
    """Actor, critic and target critic with their optimizers; `update()` is one compiled step."""

    def __init__(self, config: Config, world_model: WorldModel, act_dim: int, discrete: bool,
                 reward: RewardFunction):
        self.config = config
        self.wm = world_model
        self.act_dim, self.discrete = act_dim, discrete
        self.reward = reward
        c = config.agent
        if c.actor_grad not in ACTOR_GRADS:
            raise UserError(f"agent.actor_grad: {c.actor_grad!r} is not one of {', '.join(ACTOR_GRADS)}")
        if not 0.0 <= float(c.actor_grad_mix) <= 1.0:
            raise UserError(f"agent.actor_grad_mix: {c.actor_grad_mix!r} is not in [0, 1]")
        feat = feature_size(config)
        self.actor = make_actor(config, act_dim, discrete)
        dtype = precision_policy(config)
        self.critic = MLP(1, c.critic.layers, c.critic.units, c.critic.act, name="critic", dtype=dtype)
        self.target = MLP(1, c.critic.layers, c.critic.units, c.critic.act, name="target_critic",
                          dtype=dtype)
        for net in (self.actor, self.critic, self.target):
            net(tf.zeros([1, feat]))  # build the variables before any checkpoint restore
        self.actor_opt = Optimizer(self.actor, c.actor_lr, c.eps, c.clip, name="actor_opt")
        self.critic_opt = Optimizer(self.critic, c.critic_lr, c.eps, c.clip, name="critic_opt")
        self.copy_target()

    def trackables(self) -> dict[str, Any]:
        """Everything a checkpoint must hold to resume."""
        return {"actor": self.actor, "critic": self.critic, "target_critic": self.target,
                "actor_opt": self.actor_opt.optimizer, "critic_opt": self.critic_opt.optimizer}

    def copy_target(self) -> None:
        """Hard copy critic -> target critic (every `agent.target_every` updates)."""
        for target, source in zip(self.target.weights, self.critic.weights):
            target.assign(source)

    def update(self, expert: State, step: int) -> dict[str, tf.Tensor]:
        """One update from expert windows (B, H+1, ...); `step` counts updates done before it."""
        if step % self.config.agent.target_every == 0:
            self.copy_target()
        return self._update(expert)

    @tf.function
    def _update(self, expert: State) -> dict[str, tf.Tensor]:
        c = self.config.agent
        grad = c.actor_grad
        start = {k: v[:, 0] for k, v in expert.items()}
        # Only the actor's variables are watched: the world model, the critics and a D-GAIL
        # discriminator get no gradient from the actor's loss (the world model stays frozen).
        with tf.GradientTape(watch_accessed_variables=False) as actor_tape:
            actor_tape.watch([v.value for v in self.actor.trainable_variables])  # Keras 3 -> tf
            states, actions = imagine(self.wm.rssm, self.actor, start, c.horizon, self.discrete,
                                      differentiable=grad != "reinforce")
            rewards = tf.cast(self.reward(states, expert), tf.float32)
            feat = tf.cast(self.wm.rssm.get_feat(states), tf.float32)
            target_values = tf.cast(self.target(feat)[..., 0], tf.float32)
            returns = lambda_return(rewards, target_values, c.gamma, c.return_lambda)
            dist = action_dist(self.actor(tf.stop_gradient(feat[:, :-1])), self.discrete)
            log_prob = dist.log_prob(tf.stop_gradient(actions))
            entropy = dist.entropy()
            # The critic's one forward pass serves the baseline here and its own loss below.
            with tf.GradientTape() as critic_tape:
                values = tf.cast(self.critic(tf.stop_gradient(feat[:, :-1]))[..., 0], tf.float32)
                critic_loss = tf.reduce_mean(0.5 * tf.square(values - tf.stop_gradient(returns)))
            advantage = tf.stop_gradient(returns - values)
            if c.normalize_advantages:  # the authors' code does this; the paper does not
                mean, var = tf.nn.moments(advantage, [0, 1])
                advantage = (advantage - mean) / (tf.sqrt(var) + 1e-8)
            if grad == "reinforce":  # eq. 16
                objective = log_prob * advantage
            elif grad == "dynamics":  # the return's own gradient through the imagined states
                objective = returns
            else:  # DreamerV2's mix of the two
                mix = float(c.actor_grad_mix)
                objective = mix * returns + (1.0 - mix) * log_prob * advantage
            actor_loss = -tf.reduce_mean(objective + c.entropy * entropy)
        returns = tf.stop_gradient(returns)
        states = {k: tf.stop_gradient(v) for k, v in states.items()}
        metrics = dict(self.reward.train(states, expert))
        metrics.update(self.actor_opt(actor_tape, actor_loss, "actor"))
        metrics.update(self.critic_opt(critic_tape, critic_loss, "critic"))
        metrics.update({
            "reward_mean": tf.reduce_mean(rewards), "reward_std": tf.math.reduce_std(rewards),
            "return_mean": tf.reduce_mean(returns), "value_mean": tf.reduce_mean(values),
            "target_value_mean": tf.reduce_mean(target_values),
            "advantage_mean": tf.reduce_mean(returns - values),
            "actor_entropy": tf.reduce_mean(entropy), "log_prob": tf.reduce_mean(log_prob),
        })
        return metrics


def validation_metrics(rssm: RSSM, actor: keras.Layer, expert: State, expert_action: tf.Tensor,
                       discrete: bool, latent: str) -> dict[str, tf.Tensor]:
    """Paper Fig. 2 metrics on held-out expert windows (B, H+1, ...).

    latent_distance L_d = 1 - r_int: the actor is rolled out in the model from the expert's start
    state and its latents compared with the expert's (eq. 8) at steps 1..H. Action accuracy: the
    actor's most likely action in the expert's states vs the expert's actions (continuous
    actions: mean absolute error instead). `expert_action` (B, H+1, A): action taken in state t.
    """
    start = {k: v[:, 0] for k, v in expert.items()}
    horizon = expert["deter"].shape[1] - 1
    states, _ = imagine(rssm, actor, start, horizon, discrete)
    reward = latent_reward(states, expert, latent)
    dist = action_dist(actor(tf.cast(rssm.get_feat(expert), tf.float32)), discrete)
    mode = dist_mode(dist, discrete)
    out = {"latent_distance": 1.0 - tf.reduce_mean(reward),
           "latent_distance_last": 1.0 - tf.reduce_mean(reward[:, -1])}
    if discrete:
        match = tf.cast(tf.argmax(mode, -1) == tf.argmax(expert_action, -1), tf.float32)
        out["action_accuracy"] = tf.reduce_mean(match)
    else:
        out["action_error"] = tf.reduce_mean(tf.abs(mode - expert_action))
    out["expert_log_prob"] = tf.reduce_mean(dist.log_prob(expert_action))
    return out


def as_metrics(values: Mapping[str, tf.Tensor]) -> dict[str, float]:
    """Tensors -> floats for the logger."""
    return {k: float(v) for k, v in values.items()}
