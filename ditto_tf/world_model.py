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

from typing import Any, Mapping

import keras
import tensorflow as tf

from ditto_tf import dists, nets, obs_keys
from ditto_tf.config import Config
from ditto_tf.errors import UserError
from ditto_tf.rssm import RSSM, PolicyFn, State

__all__ = ["RSSM", "State", "PolicyFn", "WorldModel", "WorldModelTrainer", "image_shape",
           "precision_policy", "video_strip"]

VECTOR_DISTS = ("mse", "binary")  # world_model.decoder.mlp_dist


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
        if dec.mlp_dist not in VECTOR_DISTS:
            raise UserError(f"world_model.decoder.mlp_dist: {dec.mlp_dist!r} is not one of "
                            f"{', '.join(VECTOR_DISTS)}")
        # binary: 0/1 vectors read as is and reconstructed by a Bernoulli per dimension.
        self.binary_vectors = dec.mlp_dist == "binary"
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
        standardised vectors, or the Bernoulli NLL of `binary` ones) + beta * KL balancing.

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
            nll = nets.vector_binary_nll if self.binary_vectors else nets.vector_nll
            losses["vector"] = tf.reduce_mean(nll(self.mlp_decoder(feat), target))
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
        """Mean squared error of the open-loop vector predictions (standardised units; for
        `binary` vectors, of the predicted probabilities against the 0/1 values)."""
        _, openl = self._open_loop_feats(data, context)
        target = tf.concat([data[k][:, context:] for k in self.keys.decoder_mlp], -1)
        pred = tf.cast(self.mlp_decoder(openl), tf.float32)
        if self.binary_vectors:
            pred = tf.nn.sigmoid(pred)
        return tf.reduce_mean(tf.square(pred - tf.cast(target, tf.float32)))


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
