"""Keras layers of the DreamerV2 world model: conv encoder, transposed-conv decoder, MLP, LayerNorm GRU,
and for vector observations the MLP encoder, the MLP decoder and the input standardisation.

Layer for layer as DreamerV2's `common/nets.py` (names too: `conv0..`, `convin`, `dense0..`,
`out`), so that a DreamerV2 `variables.pkl` maps onto these variables one to one. Every layer
takes a Keras `dtype` policy (e.g. "mixed_float16"); variables stay float32 under mixed precision.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import keras
import tensorflow as tf

from ditto_tf.errors import UserError

Activation = Callable[[tf.Tensor], tf.Tensor]


def get_act(name: str) -> Activation:
    """An activation by DreamerV2 name: 'none', 'elu', 'relu', 'tanh', 'mish', any tf.nn op."""
    if name == "none":
        return tf.identity
    if name == "mish":
        return lambda x: x * tf.math.tanh(tf.nn.softplus(x))
    if hasattr(tf.nn, name):
        return getattr(tf.nn, name)
    raise UserError(f"activation {name!r} is unknown; use elu, relu, tanh, mish or none")


def _flatten_batch(x: tf.Tensor, event_rank: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Merge all leading axes into one; returns the merged tensor and the leading shape."""
    shape = tf.shape(x)
    lead = shape[: tf.rank(x) - event_rank]
    return tf.reshape(x, tf.concat([[-1], shape[tf.rank(x) - event_rank:]], 0)), lead


def conv_out_size(size: int, kernels: Sequence[int]) -> int:
    """Spatial size after DreamerV2's stride-2 'valid' convolutions."""
    for kernel in kernels:
        size = (size - kernel) // 2 + 1
    return size


def deconv_out_size(kernels: Sequence[int]) -> int:
    """Spatial size DreamerV2's decoder produces from its 1x1 start with stride-2 'valid' kernels."""
    size = 1
    for kernel in kernels:
        size = (size - 1) * 2 + kernel
    return size


def track_layers(owner: keras.layers.Layer, layers: Sequence[keras.layers.Layer]) -> None:
    """Also set each listed layer as an attribute named after it (`conv0`, `dense1`, ...).

    [dreamerv2 helper edit] Keras 3 keeps a list attribute of layers in its own TrackedList,
    which tf.train.Checkpoint does not see: without this the checkpoint silently lacks those
    layers (and restore() reports nothing). Attributes are seen; variables are not duplicated.
    """
    for layer in layers:
        setattr(owner, layer.name, layer)


class ConvEncoder(keras.layers.Layer):
    """Images (..., H, W, C) in [-0.5, 0.5] -> embeddings (..., E).

    Conv i has depth `depth * 2**i`, kernel `kernels[i]`, stride 2, 'valid' padding, then the
    activation; the last feature map is flattened (DreamerV2's `Encoder._cnn`).
    """

    def __init__(self, depth: int = 48, kernels: Sequence[int] = (4, 4, 4, 4), act: str = "elu",
                 **kwargs):
        super().__init__(**kwargs)
        self.depth, self.kernels = depth, tuple(kernels)
        self._act = get_act(act)
        self.convs = [
            keras.layers.Conv2D(depth * 2**i, k, strides=2, padding="valid", name=f"conv{i}",
                                dtype=self.dtype_policy)
            for i, k in enumerate(self.kernels)]
        track_layers(self, self.convs)  # [dreamerv2 helper edit] see track_layers

    def embed_size(self, image_shape: Sequence[int]) -> int:
        height, width = (conv_out_size(s, self.kernels) for s in image_shape[:2])
        if height < 1 or width < 1:
            raise UserError(
                f"encoder.kernels {list(self.kernels)}: reduce a {image_shape[0]}x{image_shape[1]}"
                " image to nothing; use fewer or smaller kernels")
        return height * width * self.depth * 2 ** (len(self.kernels) - 1)

    def call(self, image: tf.Tensor) -> tf.Tensor:
        x, lead = _flatten_batch(tf.cast(image, self.compute_dtype), 3)
        for conv in self.convs:
            x = self._act(conv(x))
        x = tf.reshape(x, [tf.shape(x)[0], -1])
        return tf.reshape(x, tf.concat([lead, tf.shape(x)[-1:]], 0))


class ConvDecoder(keras.layers.Layer):
    """Features (..., F) -> image means (..., H, W, C) (DreamerV2's `Decoder._cnn`).

    A dense layer to `32 * depth` units reshaped to 1x1, then stride-2 'valid' transposed convs;
    conv i has depth `depth * 2**(n - i - 2)`, the last one has `channels` and no activation.
    The image distribution is Normal(mean, 1) over H, W, C (see `dists.image_nll`).
    """

    def __init__(self, shape: Sequence[int], depth: int = 48, kernels: Sequence[int] = (5, 5, 6, 6),
                 act: str = "elu", **kwargs):
        super().__init__(**kwargs)
        self.shape, self.depth, self.kernels = tuple(shape), depth, tuple(kernels)
        size = deconv_out_size(self.kernels)
        if (size, size) != tuple(self.shape[:2]):
            raise UserError(
                f"decoder.kernels {list(self.kernels)}: produce {size}x{size} images, but env.size "
                f"is {self.shape[0]}x{self.shape[1]} (each kernel k maps n to 2(n-1)+k from 1x1)")
        self._act = get_act(act)
        self.convin = keras.layers.Dense(32 * depth, name="convin", dtype=self.dtype_policy)
        n = len(self.kernels)
        self.convs = [
            keras.layers.Conv2DTranspose(
                self.shape[-1] if i == n - 1 else depth * 2 ** (n - i - 2), k, strides=2,
                padding="valid", name=f"conv{i}", dtype=self.dtype_policy)
            for i, k in enumerate(self.kernels)]
        track_layers(self, self.convs)  # [dreamerv2 helper edit] see track_layers

    def call(self, feat: tf.Tensor) -> tf.Tensor:
        x, lead = _flatten_batch(tf.cast(feat, self.compute_dtype), 1)
        x = tf.reshape(self.convin(x), [-1, 1, 1, 32 * self.depth])
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = self._act(x)
        return tf.reshape(x, tf.concat([lead, tf.shape(x)[1:]], 0))


class MLP(keras.layers.Layer):
    """`layers` dense layers of `units` with the activation, then a dense `out` of `size` units.

    DreamerV2's `MLP` with its `DistLayer('out')`: used for the optional reward / discount heads
    (the caller wraps the output in a distribution).
    """

    def __init__(self, size: int, layers: int = 4, units: int = 400, act: str = "elu", **kwargs):
        super().__init__(**kwargs)
        self._act = get_act(act)
        self.dense = [keras.layers.Dense(units, name=f"dense{i}", dtype=self.dtype_policy)
                      for i in range(layers)]
        track_layers(self, self.dense)  # [dreamerv2 helper edit] see track_layers
        self.out = keras.layers.Dense(size, name="out", dtype=self.dtype_policy)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.cast(x, self.compute_dtype)
        for layer in self.dense:
            x = self._act(layer(x))
        return tf.cast(self.out(x), tf.float32)


class GRUCell(keras.layers.Layer):
    """DreamerV2's GRU: one dense on concat([input, state]) -> 3 * size, LayerNorm, then
    split into reset, candidate, update (in that order); candidate = act(reset * cand) and the
    update gate has bias `update_bias` (-1: keep the old state by default).

    DreamerV2 builds the dense with `use_bias=norm is not None`, which is True for norm True or
    False, so the dense always has a bias. The LayerNorm runs in float32 (epsilon 1e-3, the
    Keras default DreamerV2 used).
    """

    def __init__(self, size: int, norm: bool = True, act: str = "tanh", update_bias: float = -1.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.size, self.update_bias = size, update_bias
        self._act = get_act(act)
        self.dense = keras.layers.Dense(3 * size, use_bias=True, name="dense", dtype=self.dtype_policy)
        self.norm = keras.layers.LayerNormalization(epsilon=1e-3, name="norm", dtype="float32") if norm else None

    def call(self, inputs: tf.Tensor, state: tf.Tensor) -> tf.Tensor:
        parts = self.dense(tf.concat([tf.cast(inputs, self.compute_dtype),
                                      tf.cast(state, self.compute_dtype)], -1))
        if self.norm is not None:
            parts = tf.cast(self.norm(tf.cast(parts, tf.float32)), self.compute_dtype)
        reset, cand, update = tf.split(parts, 3, -1)
        reset = tf.nn.sigmoid(reset)
        cand = self._act(reset * cand)
        update = tf.nn.sigmoid(update + self.update_bias)
        return update * cand + (1 - update) * tf.cast(state, self.compute_dtype)


class Standardize(keras.layers.Layer):
    """(x - mean) / std for one vector observation key, with the statistics as non-trainable
    weights: they are computed once from the world-model data (`set`) and then saved and restored
    with the model's checkpoint, so training, the agents and evaluation standardise alike."""

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        self.mean = self.add_weight(shape=(self.size,), initializer="zeros", trainable=False,
                                    name="mean", dtype="float32")
        self.std = self.add_weight(shape=(self.size,), initializer="ones", trainable=False,
                                   name="std", dtype="float32")

    def set(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean.assign(tf.constant(mean, tf.float32))
        self.std.assign(tf.constant(std, tf.float32))

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return (tf.cast(x, tf.float32) - self.mean) / self.std


class MLPEncoder(keras.layers.Layer):
    """Standardised vectors (..., D) -> embeddings (..., units): DreamerV2's `Encoder._mlp`,
    `layers` dense layers (`dense0..`) each followed by the activation, no output layer."""

    def __init__(self, layers: int = 4, units: int = 400, act: str = "elu", **kwargs):
        super().__init__(**kwargs)
        if layers < 1:
            raise UserError(f"world_model.encoder.mlp_layers: {layers}; want at least 1")
        self.units = int(units)
        self._act = get_act(act)
        self.dense = [keras.layers.Dense(units, name=f"dense{i}", dtype=self.dtype_policy)
                      for i in range(layers)]
        track_layers(self, self.dense)  # [dreamerv2 helper edit] see track_layers

    def call(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.cast(x, self.compute_dtype)
        for layer in self.dense:
            x = self._act(layer(x))
        return x


def vector_nll(mean: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """-log Normal(target; mean, 1) summed over the last axis: DreamerV2's 'mse' vector head,
    on standardised targets so every state dimension weighs alike."""
    diff = tf.cast(target, tf.float32) - tf.cast(mean, tf.float32)
    return tf.reduce_sum(0.5 * tf.square(diff) + 0.5 * math.log(2 * math.pi), -1)


def vector_binary_nll(logits: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """-log Bernoulli(target; sigmoid(logits)) summed over the last axis: the `binary` vector head
    (DreamerV2's 'binary' dist, as its discount head), for targets in [0, 1]."""
    return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(target, tf.float32), logits=tf.cast(logits, tf.float32)), -1)
