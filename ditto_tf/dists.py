"""Distributions of the world model: straight-through one-hot categoricals and the image Normal.

All math runs in float32 whatever the compute dtype (logits are cast first), as DreamerV2 does.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


class OneHotDist:
    """Independent categoricals over the last axis of `logits` with one-hot samples.

    `sample()` draws a one-hot vector and adds `probs - stop_gradient(probs)`: the forward value
    is exactly one-hot, the backward pass is the gradient of `probs` (straight-through, Bengio et
    al. 2013; DreamerV2's `OneHotDist`). `event_dims` trailing axes before the class axis are
    summed in `log_prob`, `entropy` and `kl` (like `tfd.Independent`): the RSSM uses 1 (S
    categoricals of K classes), an actor over one discrete action uses 0.
    """

    def __init__(self, logits: tf.Tensor, event_dims: int = 0):
        self.logits = tf.cast(logits, tf.float32)
        self.event_dims = event_dims

    @property
    def probs(self) -> tf.Tensor:
        return tf.nn.softmax(self.logits, -1)

    def _sum_events(self, x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(x, list(range(-self.event_dims, 0))) if self.event_dims else x

    def sample(self, seed: tf.Tensor | None = None) -> tf.Tensor:
        """A one-hot float32 sample with straight-through gradients to the logits."""
        classes = tf.shape(self.logits)[-1]
        flat = tf.reshape(self.logits, [-1, classes])
        if seed is None:
            index = tf.random.categorical(flat, 1, dtype=tf.int32)[:, 0]
        else:
            index = tf.random.stateless_categorical(flat, 1, seed, dtype=tf.int32)[:, 0]
        onehot = tf.reshape(tf.one_hot(index, classes, dtype=tf.float32), tf.shape(self.logits))
        probs = self.probs
        return onehot + (probs - tf.stop_gradient(probs))  # exactly one-hot: x - x == 0

    def mode(self) -> tf.Tensor:
        """The most likely class, one-hot (no gradient)."""
        return tf.one_hot(tf.argmax(self.logits, -1), tf.shape(self.logits)[-1], dtype=tf.float32)

    def log_prob(self, onehot: tf.Tensor) -> tf.Tensor:
        logp = tf.nn.log_softmax(self.logits, -1)
        return self._sum_events(tf.reduce_sum(tf.cast(onehot, tf.float32) * logp, -1))

    def entropy(self) -> tf.Tensor:
        logp = tf.nn.log_softmax(self.logits, -1)
        return self._sum_events(-tf.reduce_sum(tf.exp(logp) * logp, -1))

    def kl(self, other: "OneHotDist") -> tf.Tensor:
        """KL(self || other), summed over the event axes."""
        logp = tf.nn.log_softmax(self.logits, -1)
        logq = tf.nn.log_softmax(other.logits, -1)
        return self._sum_events(tf.reduce_sum(tf.exp(logp) * (logp - logq), -1))


def kl_balance(post_logit: tf.Tensor, prior_logit: tf.Tensor, balance: float = 0.8,
               free: float = 0.0) -> tuple[tf.Tensor, tf.Tensor]:
    """KL balancing (paper eq. 12, DreamerV2 `kl_loss` with forward=False, free_avg=True).

    loss = balance * max(mean KL(sg(q) || p), free) + (1 - balance) * max(mean KL(q || sg(p), free)

    with q the posterior and p the prior over (B, T, S, K) logits. `balance` is the weight of the
    term that trains the prior (DreamerV2's `kl.balance` 0.8): the prior moves towards the
    posterior faster, as the paper's text says. (Eq. 12 as printed attaches delta to the
    posterior term; with delta = 0.8 that would contradict the text and DreamerV2, whose
    convention we follow.) Free nats clip the batch-mean KL. Returns (loss, KL(q || p) per step).
    """
    post, prior = OneHotDist(post_logit, 1), OneHotDist(prior_logit, 1)
    sg_post = OneHotDist(tf.stop_gradient(post.logits), 1)
    sg_prior = OneHotDist(tf.stop_gradient(prior.logits), 1)
    value = post.kl(sg_prior)  # trains the posterior; also the reported KL value
    prior_term = sg_post.kl(prior)  # trains the prior
    loss = (balance * tf.maximum(tf.reduce_mean(prior_term), free)
            + (1 - balance) * tf.maximum(tf.reduce_mean(value), free))
    return loss, value


def image_nll(mean: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """-log Normal(target; mean, 1) summed over H, W, C: DreamerV2's image head ('mse')."""
    diff = tf.cast(target, tf.float32) - tf.cast(mean, tf.float32)
    per_pixel = 0.5 * tf.square(diff) + 0.5 * math.log(2 * math.pi)
    return tf.reduce_sum(per_pixel, [-3, -2, -1])


def image_dist(mean: tf.Tensor) -> tfd.Distribution:
    """The same image distribution as a tfp object (`mode()` is the mean)."""
    return tfd.Independent(tfd.Normal(tf.cast(mean, tf.float32), 1.0), 3)
