"""DreamerV2's recurrent state-space model (RSSM) with categorical latents, in Keras 3 (see
`ditto_tf.world_model` for the state dicts and how the world model uses it).

Layer names follow DreamerV2 (`img_in`, `img_out_0`, `img_dist_0`, `obs_out`, `obs_dist`, the
GRU's `dense` and `norm`) so a DreamerV2 checkpoint maps one to one.
"""

from __future__ import annotations

from typing import Callable, Mapping

import keras
import tensorflow as tf

from ditto_tf import dists, nets

State = dict[str, tf.Tensor]
PolicyFn = Callable[[tf.Tensor], tf.Tensor]


def _swap(x: tf.Tensor) -> tf.Tensor:
    """Swap the first two axes (batch-major <-> time-major)."""
    return tf.transpose(x, tf.concat([[1, 0], tf.range(2, tf.rank(x))], 0))


def _mask(x: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """Multiply x (B, ...) by keep (B,) broadcast over the trailing axes."""
    keep = tf.cast(keep, x.dtype)
    return x * tf.reshape(keep, tf.concat([tf.shape(keep), tf.ones([tf.rank(x) - 1], tf.int32)], 0))


class RSSM(keras.Model):
    """DreamerV2's `EnsembleRSSM` with ensemble 1 and discrete latents (S categoricals of K).

    img_step: concat(stoch flat, action) -> img_in -> act -> GRU(deter) -> img_out_0 -> act
    -> img_dist_0 -> prior logits. obs_step: concat(prior deter, embed) -> obs_out -> act ->
    obs_dist -> posterior logits. Samples are one-hot with straight-through gradients.
    """

    def __init__(self, action_size: int, deter: int = 600, hidden: int = 600, stoch: int = 32,
                 discrete: int = 32, act: str = "elu", norm: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.action_size, self.deter, self.stoch, self.discrete = action_size, deter, stoch, discrete
        self._act = nets.get_act(act)
        policy = self.dtype_policy
        self.img_in = keras.layers.Dense(hidden, name="img_in", dtype=policy)
        self.cell = nets.GRUCell(deter, norm=norm, name="gru", dtype=policy)
        self.img_out = keras.layers.Dense(hidden, name="img_out_0", dtype=policy)
        self.img_dist = keras.layers.Dense(stoch * discrete, name="img_dist_0", dtype=policy)
        self.obs_out = keras.layers.Dense(hidden, name="obs_out", dtype=policy)
        self.obs_dist = keras.layers.Dense(stoch * discrete, name="obs_dist", dtype=policy)

    @property
    def feat_size(self) -> int:
        return self.stoch * self.discrete + self.deter

    def initial(self, batch: int | tf.Tensor) -> State:
        """The all-zero state DreamerV2 starts from (and resets to at is_first)."""
        dtype = self.compute_dtype
        return dict(
            deter=tf.zeros([batch, self.deter], dtype),
            stoch=tf.zeros([batch, self.stoch, self.discrete], dtype),
            logit=tf.zeros([batch, self.stoch, self.discrete], tf.float32))

    def get_feat(self, state: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """concat([stoch flat, deter]) over any leading axes, in the compute dtype."""
        stoch = tf.cast(state["stoch"], self.compute_dtype)
        shape = tf.concat([tf.shape(stoch)[:-2], [self.stoch * self.discrete]], 0)
        return tf.concat([tf.reshape(stoch, shape), tf.cast(state["deter"], self.compute_dtype)], -1)

    def get_dist(self, state: Mapping[str, tf.Tensor]) -> dists.OneHotDist:
        """The latent distribution of a state (its S categoricals form one event)."""
        return dists.OneHotDist(state["logit"], event_dims=1)

    def _latent(self, x: tf.Tensor, layer: keras.layers.Layer, sample: bool) -> State:
        logit = tf.cast(layer(x), tf.float32)
        logit = tf.reshape(logit, [-1, self.stoch, self.discrete])
        dist = dists.OneHotDist(logit, event_dims=1)
        stoch = dist.sample() if sample else dist.mode()
        return dict(stoch=tf.cast(stoch, self.compute_dtype), logit=logit)

    def img_step(self, prev_state: Mapping[str, tf.Tensor], prev_action: tf.Tensor,
                 sample: bool = True) -> State:
        """Prior p(z_t | h_t) with h_t = f(h_t-1, z_t-1, a_t-1); usable inside any tf loop."""
        prev_stoch = tf.reshape(tf.cast(prev_state["stoch"], self.compute_dtype),
                                [-1, self.stoch * self.discrete])
        x = tf.concat([prev_stoch, tf.cast(prev_action, self.compute_dtype)], -1)
        x = self._act(self.img_in(x))
        deter = self.cell(x, prev_state["deter"])
        x = self._act(self.img_out(deter))
        return dict(deter=deter, **self._latent(x, self.img_dist, sample))

    def obs_step(self, prev_state: Mapping[str, tf.Tensor], prev_action: tf.Tensor,
                 embed: tf.Tensor, is_first: tf.Tensor, sample: bool = True) -> tuple[State, State]:
        """(posterior, prior) for one step; state and action are zeroed where `is_first`."""
        keep = 1.0 - tf.cast(is_first, tf.float32)
        prev_state = {k: _mask(v, keep) for k, v in prev_state.items()}
        prev_action = _mask(tf.cast(prev_action, tf.float32), keep)
        prior = self.img_step(prev_state, prev_action, sample)
        x = tf.concat([prior["deter"], tf.cast(embed, self.compute_dtype)], -1)
        x = self._act(self.obs_out(x))
        post = dict(deter=prior["deter"], **self._latent(x, self.obs_dist, sample))
        return post, prior

    @tf.function
    def observe(self, embed: tf.Tensor, action: tf.Tensor, is_first: tf.Tensor,
                state: Mapping[str, tf.Tensor] | None = None,
                sample: bool = True) -> tuple[State, State]:
        """Posterior filter over batch-major (B, T, ...) inputs -> batch-major (post, prior).

        `action[:, t]` is the action that led to step t; the state resets at `is_first`.
        """
        if state is None:
            state = self.initial(tf.shape(action)[0])
        state = dict(state)

        def step(prev: tuple[State, State], inputs: tuple[tf.Tensor, ...]) -> tuple[State, State]:
            return self.obs_step(prev[0], *inputs, sample=sample)

        inputs = (_swap(tf.cast(action, tf.float32)), _swap(embed), _swap(is_first))
        post, prior = tf.scan(step, inputs, (state, state))
        return ({k: _swap(v) for k, v in post.items()}, {k: _swap(v) for k, v in prior.items()})

    @tf.function
    def rollout(self, action: tf.Tensor, state: Mapping[str, tf.Tensor],
                sample: bool = True) -> State:
        """Open-loop priors under given batch-major actions (B, T, A) -> batch-major states."""
        prior = tf.scan(lambda prev, act: self.img_step(prev, act, sample),
                        _swap(tf.cast(action, tf.float32)), dict(state))
        return {k: _swap(v) for k, v in prior.items()}

    def imagine(self, policy_fn: PolicyFn, start: Mapping[str, tf.Tensor], horizon: int) -> State:
        """Roll the prior forward under `policy_fn(feat) -> action` (B, A) for `horizon` steps.

        Returns time-major tensors of length horizon + 1 (DreamerV2's `WorldModel.imagine`):
        `deter`, `stoch`, `logit`, `feat` (index 0 is the start state) and `action`, where
        `action[t]` led to state t (`action[0]` is zero). The policy sees `stop_gradient(feat)`.
        Call it inside your own tf.function (tf.scan compiles the loop there).
        """
        start = {k: start[k] for k in ("deter", "stoch", "logit")}  # extra keys (feat, ...) dropped
        batch = tf.shape(start["deter"])[0]

        def step(prev: tuple[State, tf.Tensor], _: tf.Tensor) -> tuple[State, tf.Tensor]:
            state = prev[0]
            action = tf.cast(policy_fn(tf.stop_gradient(self.get_feat(state))), tf.float32)
            return self.img_step(state, action), action

        zero = tf.zeros([batch, self.action_size], tf.float32)
        states, actions = tf.scan(step, tf.range(horizon), (start, zero))
        seq = {k: tf.concat([tf.cast(start[k], v.dtype)[None], v], 0) for k, v in states.items()}
        seq["action"] = tf.concat([zero[None], actions], 0)
        seq["feat"] = self.get_feat(seq)
        return seq
