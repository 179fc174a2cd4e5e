"""The DreamerV2 world model in Keras 3: RSSM with categorical latents, conv and/or MLP encoder
and decoder (DreamerV2's `cnn_keys` / `mlp_keys`, see `obs_keys`).

    wm = WorldModel(config, action_size=2, shapes={'image': (64, 64, 1)})   # or {'vector': (4,)}
    data = wm.preprocess(batch)                     # images -> x / 255 - 0.5, vectors standardised
    embed = wm.embed(data)                          # (B, T, E): concat(cnn embed, mlp embed)
    post, prior = wm.rssm.observe(embed, data['action'], data['is_first'])   # batch-major
    feat = wm.rssm.get_feat(post)                   # concat([stoch flat, deter])
    seq = wm.rssm.imagine(policy_fn, start_state, horizon)                   # time-major

State dicts hold `deter` (B, D) and `stoch` (B, S, K) one-hot in the compute dtype and `logit`
(B, S, K) in float32. Layer names follow DreamerV2 (`img_in`, `img_out_0`, `img_dist_0`,
`obs_out`, `obs_dist`, the GRU's `dense` and `norm`) so a DreamerV2 checkpoint maps one to one.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import keras
import tensorflow as tf

from ditto_tf import dists, nets, obs_keys
from ditto_tf.config import Config
from ditto_tf.errors import UserError

State = dict[str, tf.Tensor]
PolicyFn = Callable[[tf.Tensor], tf.Tensor]


def precision_policy(config: Config) -> str:
    """The Keras dtype policy for `config.precision` (auto: mixed_float16 on GPU, else float32)."""
    precision = config.precision
    if precision == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    if precision in ("mixed", "mixed_float16"):
        return "mixed_float16"
    if precision == "float32":
        return "float32"
    raise UserError(f"precision: {precision!r} is not one of auto, float32, mixed")


def image_shape(config: Config) -> tuple[int, int, int]:
    """(H, W, C) of the images the world model sees, from `config.env`."""
    height, width = config.env.size
    return int(height), int(width), 1 if config.env.grayscale else 3


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


class WorldModel(keras.Model):
    """Encoders, RSSM, decoders and the optional reward / discount heads, with the loss.

    `shapes` maps the observation keys the data offers to their shapes (default: the config's
    image); `obs_keys.select` picks what the encoder reads and the decoder reconstructs. The
    conv parts keep their DreamerV2 names and places (`encoder`, `decoder`, None when no cnn key
    matches), so image checkpoints and the DreamerV2 import are unchanged; vectors go through
    `mlp_encoder` / `mlp_decoder`, standardised by `standardize_<key>` (statistics saved with the
    model). Variables are created in the constructor (a forward pass on zeros), so a checkpoint
    can be restored right away. Precision comes from `config.precision` via `precision_policy`.
    """

    def __init__(self, config: Config, action_size: int,
                 shapes: Mapping[str, Any] | None = None, **kwargs):
        kwargs.setdefault("dtype", precision_policy(config))
        super().__init__(**kwargs)
        wm = config.world_model
        self.config, self.image_shape, self.action_size = config, image_shape(config), action_size
        shapes = {"image": self.image_shape} if shapes is None else shapes
        self.shapes = {k: tuple(int(x) for x in v) for k, v in shapes.items()}
        self.keys = obs_keys.select(config, self.shapes)
        if "image" in self.shapes and self.shapes["image"] != self.image_shape:
            raise UserError(f"episode images are {self.shapes['image']} but env.size / "
                            f"env.grayscale give {self.image_shape}; collect again or fix the config")
        policy = self.dtype_policy
        enc, dec = wm.encoder, wm.decoder
        self.encoder = self.mlp_encoder = self.decoder = self.mlp_decoder = None
        self.embed_size = 0
        if self.keys.encoder_cnn:
            self.encoder = nets.ConvEncoder(enc.depth, enc.kernels, enc.act, name="encoder",
                                            dtype=policy)
            self.embed_size += self.encoder.embed_size(self.image_shape)
        if self.keys.encoder_mlp:
            self.mlp_encoder = nets.MLPEncoder(enc.mlp_layers, enc.mlp_units, enc.act,
                                               name="mlp_encoder", dtype=policy)
            self.embed_size += self.mlp_encoder.units
        self.standardizers = [nets.Standardize(self.shapes[k][0], name=f"standardize_{k}")
                              for k in self.keys.mlp]
        nets.track_layers(self, self.standardizers)  # as a list Keras 3 would hide them
        rssm = wm.rssm
        self.rssm = RSSM(action_size, rssm.deter, rssm.hidden, rssm.stoch, rssm.discrete,
                         rssm.act, rssm.norm, name="rssm", dtype=policy)
        if self.keys.decoder_cnn:
            self.decoder = nets.ConvDecoder(self.image_shape, dec.depth, dec.kernels, dec.act,
                                            name="decoder", dtype=policy)
        if self.keys.decoder_mlp:
            size = sum(self.shapes[k][0] for k in self.keys.decoder_mlp)
            self.mlp_decoder = nets.MLP(size, dec.mlp_layers, dec.mlp_units, dec.act,
                                        name="mlp_decoder", dtype=policy)
        # DreamerV2's heads: 4 x 400 ELU MLPs with an 'mse' reward and a 'binary' discount.
        self.reward_head = nets.MLP(1, name="reward", dtype=policy) if wm.reward_head else None
        self.discount_head = nets.MLP(1, name="discount", dtype=policy) if wm.discount_head else None
        self._build_variables()

    def _build_variables(self) -> None:
        zeros = {k: tf.zeros((1, 1, *self.shapes[k]), tf.uint8 if k == "image" else tf.float32)
                 for k in self.keys.stored}
        data = self.preprocess(dict(zeros, action=tf.zeros((1, 1, self.action_size)),
                                    is_first=tf.ones((1, 1), tf.bool)))
        embed = self.embed(data)
        post, _ = self.rssm.obs_step(self.rssm.initial(1), data["action"][:, 0], embed[:, 0],
                                     data["is_first"][:, 0])
        feat = self.rssm.get_feat(post)
        for head in (self.decoder, self.mlp_decoder, self.reward_head, self.discount_head):
            if head is not None:
                head(feat)

    def set_statistics(self, stats: Mapping[str, tuple[Any, Any]]) -> None:
        """Set the standardisation {key: (mean, std)} of every mlp key (before training)."""
        for key, layer in zip(self.keys.mlp, self.standardizers):
            layer.set(*stats[key])

    def embed(self, data: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """Preprocessed (..., obs) -> (..., E): concat of the cnn and mlp embeddings (DreamerV2's
        `Encoder`, cnn first)."""
        parts = []
        if self.encoder is not None:
            parts.append(self.encoder(data["image"]))
        if self.mlp_encoder is not None:
            parts.append(self.mlp_encoder(tf.concat([data[k] for k in self.keys.encoder_mlp], -1)))
        return parts[0] if len(parts) == 1 else tf.concat(parts, -1)

    def preprocess(self, batch: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        """Images to `x / 255 - 0.5` in the compute dtype, vectors standardised (float32),
        actions float32, flags bool."""
        data = dict(batch)
        if "image" in batch:
            data["image"] = tf.cast(batch["image"], self.compute_dtype) / 255.0 - 0.5
        for key, layer in zip(self.keys.mlp, self.standardizers):
            if key in batch:
                data[key] = layer(batch[key])
        data["action"] = tf.cast(batch["action"], tf.float32)
        data["is_first"] = tf.cast(batch["is_first"], tf.bool)
        for key in ("reward", "is_terminal"):
            if key in batch:
                data[key] = tf.cast(batch[key], tf.float32)
        return data

    def model_loss(self, data: Mapping[str, tf.Tensor],
             state: Mapping[str, tf.Tensor] | None = None) -> tuple[tf.Tensor, dict, dict]:
        """Paper eq. 11-12 on preprocessed batch-major data: image NLL (and/or the vector NLL on
        standardised vectors) + beta * KL balancing.

        Returns (loss float32 scalar, outputs {embed, feat, post, prior, kl}, metrics).
        """
        wm = self.config.world_model
        embed = self.embed(data)
        post, prior = self.rssm.observe(embed, data["action"], data["is_first"], state)
        kl_loss, kl_value = dists.kl_balance(post["logit"], prior["logit"], wm.kl_balance, wm.kl_free)
        feat = self.rssm.get_feat(post)
        losses, loss = {}, 0.0
        if self.decoder is not None:
            losses["image"] = tf.reduce_mean(dists.image_nll(self.decoder(feat), data["image"]))
            loss = wm.image_weight * losses["image"]
        if self.mlp_decoder is not None:
            target = tf.concat([data[k] for k in self.keys.decoder_mlp], -1)
            losses["vector"] = tf.reduce_mean(nets.vector_nll(self.mlp_decoder(feat), target))
            loss += wm.vector_weight * losses["vector"]
        losses["kl"] = kl_loss
        loss += wm.kl_scale * kl_loss
        if self.reward_head is not None:
            pred = self.reward_head(feat)[..., 0]
            losses["reward"] = tf.reduce_mean(0.5 * tf.square(pred - data["reward"]))
            loss += losses["reward"]
        if self.discount_head is not None:
            logit = self.discount_head(feat)[..., 0]
            label = 1.0 - data["is_terminal"]
            losses["discount"] = tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=label, logits=logit))
            loss += losses["discount"]
        metrics = {f"{k}_loss": v for k, v in losses.items()}
        metrics["model_kl"] = tf.reduce_mean(kl_value)
        metrics["prior_ent"] = tf.reduce_mean(self.rssm.get_dist(prior).entropy())
        metrics["post_ent"] = tf.reduce_mean(self.rssm.get_dist(post).entropy())
        outs = dict(embed=embed, feat=feat, post=post, prior=prior, kl=kl_value)
        return loss, outs, metrics

    @tf.function
    def open_loop(self, data: Mapping[str, tf.Tensor], context: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Observe `context` frames, imagine the rest under the true actions (DreamerV2's
        `video_pred`). Returns (truth, model) images in [0, 1], (B, T, H, W, C) float32; model
        frames before `context` are reconstructions, after it open-loop predictions.
        """
        truth = tf.cast(data["image"], tf.float32) + 0.5
        recon, openl = self._open_loop_feats(data, context)
        recon, openl = self.decoder(recon), self.decoder(openl)
        model = tf.concat([tf.cast(recon, tf.float32), tf.cast(openl, tf.float32)], 1) + 0.5
        return truth, tf.clip_by_value(model, 0.0, 1.0)

    def _open_loop_feats(self, data: Mapping[str, tf.Tensor], context: int
                         ) -> tuple[tf.Tensor, tf.Tensor]:
        """Posterior features of the first `context` steps, prior features of the rest."""
        embed = self.embed({k: v[:, :context] for k, v in data.items()})
        states, _ = self.rssm.observe(embed, data["action"][:, :context],
                                      data["is_first"][:, :context])
        start = {k: v[:, -1] for k, v in states.items()}
        prior = self.rssm.rollout(data["action"][:, context:], start)
        return self.rssm.get_feat(states), self.rssm.get_feat(prior)

    @tf.function
    def open_loop_vector(self, data: Mapping[str, tf.Tensor], context: int) -> tf.Tensor:
        """Mean squared error of the open-loop vector predictions (standardised units)."""
        _, openl = self._open_loop_feats(data, context)
        target = tf.concat([data[k][:, context:] for k in self.keys.decoder_mlp], -1)
        return tf.reduce_mean(tf.square(self.mlp_decoder(openl) - tf.cast(target, tf.float32)))


def video_strip(truth: tf.Tensor, model: tf.Tensor) -> tf.Tensor:
    """DreamerV2's open-loop video: rows truth, model, error; episodes side by side.

    (B, T, H, W, C) x 2 -> (T, 3H, B*W, C) in [0, 1].
    """
    error = (model - truth + 1.0) / 2.0
    video = tf.concat([truth, model, error], 2)  # (B, T, 3H, W, C)
    video = tf.transpose(video, [1, 2, 0, 3, 4])  # (T, 3H, B, W, C)
    shape = tf.shape(video)
    return tf.reshape(video, [shape[0], shape[1], shape[2] * shape[3], shape[4]])


class WorldModelTrainer:
    """Adam (lr, eps, global-norm clip from config), DreamerV2's decoupled weight decay, and one
    tf.function update. Under mixed_float16 the Adam is wrapped in Keras 3's dynamic
    `LossScaleOptimizer`; `scale_loss()` is called inside the GradientTape (outside it every
    gradient is None) and `apply()` unscales, skips non-finite steps and clips.
    """

    def __init__(self, model: WorldModel, config: Config):
        wm = config.world_model
        self.model, self.weight_decay = model, wm.weight_decay
        self.mixed = model.dtype_policy.name == "mixed_float16"
        adam = keras.optimizers.Adam(wm.lr, epsilon=wm.eps, global_clipnorm=wm.clip or None)
        self.optimizer = keras.optimizers.LossScaleOptimizer(adam) if self.mixed else adam
        self.optimizer.build(model.trainable_variables)  # before any checkpoint restore

    @tf.function
    def train(self, batch: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """One update on a raw batch (uint8 images); returns float32 scalar metrics."""
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            loss, _, metrics = self.model.model_loss(self.model.preprocess(batch))
            scaled = self.optimizer.scale_loss(loss) if self.mixed else loss
        grads = tape.gradient(scaled, variables)
        norm = tf.linalg.global_norm(grads)
        if self.mixed:
            norm = norm / tf.cast(self.optimizer.dynamic_scale, norm.dtype)
            metrics["loss_scale"] = tf.cast(self.optimizer.dynamic_scale, tf.float32)

        def update() -> tf.Tensor:
            if self.weight_decay:
                for var in variables:
                    var.assign(var * (1.0 - self.weight_decay))
            self.optimizer.apply(grads, variables)
            return tf.constant(True)

        if self.mixed:  # the loss-scale optimizer skips non-finite steps itself
            update()
        else:  # never write a non-finite update into the weights: the caller stops instead
            finite = tf.math.is_finite(loss) & tf.math.is_finite(norm)
            tf.cond(finite, update, lambda: tf.constant(False))
        metrics["model_loss"] = loss
        metrics["model_grad_norm"] = norm
        return {k: tf.cast(v, tf.float32) for k, v in metrics.items()}
