"""Paper eq. 8, the reward DITTO gives for matching the expert's latent, and its forms on z.

    r_t = (e . a) / max(|e|, |a|)^2

between the expert's latent e at step t and the agent's imagined latent a at step t, both rolled
from the same expert start state. The latent (`ditto.reward_latent`) is `stoch` (z, the paper),
`deter` (h, the authors' code) or `feat` (both, concatenated). For one-hot z with S
categoricals |z|^2 = S, so on z the reward is the fraction of categoricals that agree.

`ditto.reward_form` changes how z enters (h always enters as is):

- `sample`: the agent's prior sample against the expert's posterior sample, drawn once when the
  expert episode was encoded (the paper; both are random, so the reward is noisy);
- `probs`: the expectation of `sample` over both samples: mean over categoricals s of
  sum_k p_agent,s(k) q_expert,s(k), with the agent's prior and the expert's posterior
  probabilities (smooth, far less variance);
- `mode`: the agent's sample against the expert's posterior mode (removes the expert's half of
  the noise).

This module has no agent imports, so the actor-critic, DITTO, D-GAIL and the margin measurement
(`ditto_tf.margin`) share it without an import cycle.
"""

from __future__ import annotations

from typing import Mapping

import tensorflow as tf

from ditto_tf.errors import UserError

LATENTS = ("stoch", "deter", "feat")
FORMS = ("sample", "probs", "mode")
State = Mapping[str, tf.Tensor]


def check_latent(latent: str, key: str = "ditto.reward_latent") -> str:
    if latent not in LATENTS:
        raise UserError(f"{key}: {latent!r} is not one of {', '.join(LATENTS)}")
    return latent


def check_form(form: str) -> str:
    if form not in FORMS:
        raise UserError(f"ditto.reward_form: {form!r} is not one of {', '.join(FORMS)}")
    return form


def select_latent(state: State, latent: str) -> tf.Tensor:
    """The vector eq. 8 compares: flat z, h, or concat([z, h]), in float32 (..., N)."""
    check_latent(latent)
    stoch = tf.cast(state["stoch"], tf.float32)
    stoch = tf.reshape(stoch, tf.concat([tf.shape(stoch)[:-2], [-1]], 0))
    deter = tf.cast(state["deter"], tf.float32)
    if latent == "stoch":
        return stoch
    if latent == "deter":
        return deter
    return tf.concat([stoch, deter], -1)


def ditto_reward(expert: tf.Tensor, agent: tf.Tensor) -> tf.Tensor:
    """Eq. 8 over the last axis of two vectors: (e . a) / max(|e|, |a|)^2; 0 where both are 0."""
    dot = tf.reduce_sum(expert * agent, -1)
    scale = tf.square(tf.maximum(tf.norm(expert, axis=-1), tf.norm(agent, axis=-1)))
    return tf.math.divide_no_nan(dot, scale)


def eq8(agent: State, expert: State, latent: str, form: str = "sample") -> tf.Tensor:
    """Eq. 8 between agent and expert states of the same shape (..., S, K) / (..., D) -> (...).

    Written as (z_a . z_e + h_a . h_e) / max(|z_a|^2 + |h_a|^2, |z_e|^2 + |h_e|^2), keeping the
    parts `latent` selects, so that `form` only swaps the z terms. With `probs` the z dot product
    is its expectation and |z|^2 = S (true of every one-hot sample), so `probs` is exactly the
    expectation of `sample` over both z samples, for `feat` too. Differentiable w.r.t. the
    agent's latents (straight-through z, smooth probs, h), as `agent.actor_grad: dynamics` needs.
    """
    check_latent(latent)
    check_form(form)
    dot = agent_sq = expert_sq = tf.constant(0.0)
    if latent in ("stoch", "feat"):
        if form == "probs":
            p = tf.nn.softmax(tf.cast(agent["logit"], tf.float32), -1)
            q = tf.nn.softmax(tf.cast(expert["logit"], tf.float32), -1)
            dot += tf.reduce_sum(p * q, [-2, -1])
            count = tf.cast(tf.shape(p)[-2], tf.float32)
            agent_sq += count
            expert_sq += count
        else:
            z_a = tf.cast(agent["stoch"], tf.float32)
            if form == "mode":
                logit = expert["logit"]
                z_e = tf.one_hot(tf.argmax(logit, -1), tf.shape(logit)[-1], dtype=tf.float32)
            else:
                z_e = tf.cast(expert["stoch"], tf.float32)
            dot += tf.reduce_sum(z_a * z_e, [-2, -1])
            # |z_a|^2 is S for a one-hot sample: its straight-through gradient would be spurious.
            agent_sq += tf.reduce_sum(tf.square(tf.stop_gradient(z_a)), [-2, -1])
            expert_sq += tf.reduce_sum(tf.square(z_e), [-2, -1])
    if latent in ("deter", "feat"):
        h_a = tf.cast(agent["deter"], tf.float32)
        h_e = tf.cast(expert["deter"], tf.float32)
        dot += tf.reduce_sum(h_a * h_e, -1)
        agent_sq += tf.reduce_sum(tf.square(h_a), -1)
        expert_sq += tf.reduce_sum(tf.square(h_e), -1)
    return tf.math.divide_no_nan(dot, tf.maximum(agent_sq, expert_sq))


def latent_reward(agent: State, expert: State, latent: str, form: str = "sample") -> tf.Tensor:
    """Rewards (B, H) for states (B, H+1, ...): step t compares agent and expert at t + 1.

    Reward t belongs to action a_t, which led from state t to t + 1; the start states are the
    same for both, so they carry no reward.
    """
    keys = ("deter", "stoch", "logit")
    return eq8({k: agent[k][:, 1:] for k in keys}, {k: expert[k][:, 1:] for k in keys}, latent, form)
