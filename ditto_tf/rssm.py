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

    def _kernel(self, layer: keras.layers.Dense, rows: slice) -> tf.Tensor:
        """The rows of a Dense kernel that one input of its concat meets, in the compute dtype.

        `observe` splits `img_in` and `obs_out` this way, so that the shares that do not depend
        on the recurrent state are computed for all T steps at once, outside the scan.
        """
        return tf.cast(layer.kernel[rows], self.compute_dtype)

    def _prior(self, prev_deter: tf.Tensor, img_in: tf.Tensor, sample: bool) -> State:
        """The prior from `img_in`'s pre-activation output on concat(stoch flat, action)."""
        deter = self.cell(self._act(img_in), prev_deter)
        x = self._act(self.img_out(deter))
        return dict(deter=deter, **self._latent(x, self.img_dist, sample))

    def _posterior(self, prior: State, obs_out: tf.Tensor, sample: bool) -> State:
        """The posterior from `obs_out`'s pre-activation output on concat(prior deter, embed)."""
        return dict(deter=prior["deter"], **self._latent(self._act(obs_out), self.obs_dist, sample))

    def img_step(self, prev_state: Mapping[str, tf.Tensor], prev_action: tf.Tensor,
                 sample: bool = True) -> State:
        """Prior p(z_t | h_t) with h_t = f(h_t-1, z_t-1, a_t-1); usable inside any tf loop."""
        prev_stoch = tf.reshape(tf.cast(prev_state["stoch"], self.compute_dtype),
                                [-1, self.stoch * self.discrete])
        x = tf.concat([prev_stoch, tf.cast(prev_action, self.compute_dtype)], -1)
        return self._prior(prev_state["deter"], self.img_in(x), sample)

    def obs_step(self, prev_state: Mapping[str, tf.Tensor], prev_action: tf.Tensor,
                 embed: tf.Tensor, is_first: tf.Tensor, sample: bool = True) -> tuple[State, State]:
        """(posterior, prior) for one step; state and action are zeroed where `is_first`."""
        keep = 1.0 - tf.cast(is_first, tf.float32)
        prev_state = {k: _mask(v, keep) for k, v in prev_state.items()}
        prev_action = _mask(tf.cast(prev_action, tf.float32), keep)
        prior = self.img_step(prev_state, prev_action, sample)
        x = tf.concat([prior["deter"], tf.cast(embed, self.compute_dtype)], -1)
        return self._posterior(prior, self.obs_out(x), sample), prior

    @tf.function
    def observe(self, embed: tf.Tensor, action: tf.Tensor, is_first: tf.Tensor,
                state: Mapping[str, tf.Tensor] | None = None,
                sample: bool = True) -> tuple[State, State]:
        """Posterior filter over batch-major (B, T, ...) inputs -> batch-major (post, prior).

        `action[:, t]` is the action that led to step t; the state resets at `is_first`. The
        same computation as `obs_step` at every t, but the action's share of `img_in` and the
        embedding's share of `obs_out` (with their biases) are computed for all B x T steps in
        one matmul each before the scan: only what depends on the recurrent state stays inside.
        """
        if state is None:
            state = self.initial(tf.shape(action)[0])
        flat = self.stoch * self.discrete
        keep = _swap(1.0 - tf.cast(is_first, self.compute_dtype))  # (T, B)
        action = _swap(tf.cast(action, self.compute_dtype)) * keep[..., None]
        embed = _swap(tf.cast(embed, self.compute_dtype))
        steps, batch = tf.shape(keep)[0], tf.shape(keep)[1]

        def share(layer: keras.layers.Dense, x: tf.Tensor, rows: slice) -> tf.Tensor:
            y = tf.matmul(tf.reshape(x, [steps * batch, -1]), self._kernel(layer, rows))
            return tf.reshape(y + tf.cast(layer.bias, y.dtype), [steps, batch, -1])

        inputs = (share(self.img_in, action, slice(flat, None)),
                  share(self.obs_out, embed, slice(self.deter, None)), keep)
        img_in, obs_out = self._kernel(self.img_in, slice(0, flat)), self._kernel(
            self.obs_out, slice(0, self.deter))

        def step(prev: tuple[State, State], inp: tuple[tf.Tensor, ...]) -> tuple[State, State]:
            action_in, embed_in, keep = inp
            keep = keep[:, None]  # the reset zeroes the state (the action is zeroed already)
            stoch = tf.reshape(prev[0]["stoch"], [-1, flat]) * keep
            prior = self._prior(prev[0]["deter"] * keep, tf.matmul(stoch, img_in) + action_in,
                                sample)
            post = self._posterior(prior, tf.matmul(prior["deter"], obs_out) + embed_in, sample)
            return post, prior

        state = {k: tf.cast(v, tf.float32 if k == "logit" else self.compute_dtype)
                 for k, v in state.items()}
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
