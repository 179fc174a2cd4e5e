"""DreamerV2's variable layout, derived from a ditto_tf config: the order and shape of every
world-model tensor in a `variables.pkl` (`Module.save`: `tf.Module.variables` order, no names),
and the ditto_tf variable each one maps to. Used by `ditto_tf.dreamerv2` to import a pickle."""

from __future__ import annotations

import dataclasses

from ditto_tf.config import Config

HEAD_LAYERS, HEAD_UNITS = 4, 400  # DreamerV2's reward / discount MLPs (ditto_tf's nets.MLP too)


@dataclasses.dataclass(frozen=True)
class Slot:
    """One tensor of DreamerV2's world model: its path there, shape, and ditto_tf target.

    `target` is an attribute path into ditto_tf's `WorldModel` (ints index lists), e.g.
    ('rssm', 'cell', 'dense', 'kernel'); None marks a tensor that is read and checked but not
    loaded (a head the ditto_tf config switches off).
    """

    name: str
    shape: tuple[int, ...]
    target: tuple[str | int, ...] | None


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Everything that fixes the world model's shapes, from a ditto_tf config."""

    image: tuple[int, int, int]
    actions: int
    deter: int
    hidden: int
    stoch: int
    discrete: int
    encoder_depth: int
    encoder_kernels: tuple[int, ...]
    decoder_depth: int
    decoder_kernels: tuple[int, ...]
    gru_norm: bool = True

    @classmethod
    def from_config(cls, config: Config, actions: int) -> "Sizes":
        wm = config.world_model
        height, width = config.env.size
        return cls(
            image=(int(height), int(width), 1 if config.env.grayscale else 3), actions=actions,
            deter=wm.rssm.deter, hidden=wm.rssm.hidden, stoch=wm.rssm.stoch,
            discrete=wm.rssm.discrete, encoder_depth=wm.encoder.depth,
            encoder_kernels=tuple(wm.encoder.kernels), decoder_depth=wm.decoder.depth,
            decoder_kernels=tuple(wm.decoder.kernels), gru_norm=bool(wm.rssm.norm))

    @property
    def feat(self) -> int:
        return self.stoch * self.discrete + self.deter

    @property
    def embed(self) -> int:
        height, width = self.image[:2]
        for kernel in self.encoder_kernels:  # stride 2, 'valid'
            height, width = (height - kernel) // 2 + 1, (width - kernel) // 2 + 1
        return height * width * self.encoder_depth * 2 ** (len(self.encoder_kernels) - 1)


def _layer(name: str, shapes: dict[str, tuple[int, ...]], target: tuple | None) -> list[Slot]:
    """A Keras layer's variables in creation order (kernel before bias, gamma before beta)."""
    return [Slot(f"{name}/{var}", shape, None if target is None else (*target, var))
            for var, shape in shapes.items()]


def _dense(name: str, n_in: int, n_out: int, target: tuple | None) -> list[Slot]:
    return _layer(name, {"kernel": (n_in, n_out), "bias": (n_out,)}, target)


def _by_name(parts: dict[str, list[Slot]]) -> list[Slot]:
    """tf.Module visits attributes (and dict keys) in sorted string order: conv10 < conv2."""
    return [slot for key in sorted(parts) for slot in parts[key]]


def _head(name: str, feat: int, target: tuple | None) -> list[Slot]:
    """DreamerV2's `MLP`: dense0..dense{n-1}, then its DistLayer 'out' holding a Dense 'out'."""
    parts, n_in = {}, feat
    for i in range(HEAD_LAYERS):
        sub = None if target is None else (*target, "dense", i)
        parts[f"dense{i}"] = _dense(f"heads/{name}/dense{i}", n_in, HEAD_UNITS, sub)
        n_in = HEAD_UNITS
    sub = None if target is None else (*target, "out")
    parts["out"] = _dense(f"heads/{name}/out/out", HEAD_UNITS, 1, sub)
    return _by_name(parts)


def world_model_layout(sizes: Sizes, discount: bool, load_reward: bool,
                       load_discount: bool) -> list[Slot]:
    """DreamerV2's `WorldModel.variables` (without `tfstep`) for these sizes, in pickle order.

    WorldModel visits encoder, heads {decoder, discount (if pred_discount), reward}, rssm.
    DreamerV2 always has a reward head; `load_*` say whether ditto_tf's model has the head.
    """
    s = sizes
    # Encoder: conv{i} with depth * 2**i filters, stride 2 (Conv2D kernel: kh, kw, in, out).
    encoder, channels = {}, s.image[2]
    for i, kernel in enumerate(s.encoder_kernels):
        depth = s.encoder_depth * 2**i
        encoder[f"conv{i}"] = _layer(f"encoder/conv{i}", {
            "kernel": (kernel, kernel, channels, depth), "bias": (depth,)},
            ("encoder", "convs", i))
        channels = depth
    # Decoder: convin dense to 32 * depth, then transposed convs (kernel: kh, kw, out, in).
    decoder, n = {}, len(s.decoder_kernels)
    decoder["convin"] = _dense("heads/decoder/convin", s.feat, 32 * s.decoder_depth,
                               ("decoder", "convin"))
    channels = 32 * s.decoder_depth
    for i, kernel in enumerate(s.decoder_kernels):
        depth = s.image[2] if i == n - 1 else s.decoder_depth * 2 ** (n - i - 2)
        decoder[f"conv{i}"] = _layer(f"heads/decoder/conv{i}", {
            "kernel": (kernel, kernel, depth, channels), "bias": (depth,)},
            ("decoder", "convs", i))
        channels = depth
    heads = {"decoder": _by_name(decoder),
             "reward": _head("reward", s.feat, ("reward_head",) if load_reward else None)}
    if discount:
        heads["discount"] = _head("discount", s.feat, ("discount_head",) if load_discount else None)
    # RSSM: the GRU cell (attribute `_cell`) first, then its `_modules` dict by name.
    sk = s.stoch * s.discrete
    cell = _dense("rssm/_cell/_layer", s.hidden + s.deter, 3 * s.deter, ("rssm", "cell", "dense"))
    cell += _layer("rssm/_cell/_norm", {"gamma": (3 * s.deter,), "beta": (3 * s.deter,)},
                   ("rssm", "cell", "norm"))
    rssm = {
        "img_in": _dense("rssm/img_in", sk + s.actions, s.hidden, ("rssm", "img_in")),
        "img_out_0": _dense("rssm/img_out_0", s.deter, s.hidden, ("rssm", "img_out")),
        "img_dist_0": _dense("rssm/img_dist_0", s.hidden, sk, ("rssm", "img_dist")),
        "obs_out": _dense("rssm/obs_out", s.deter + s.embed, s.hidden, ("rssm", "obs_out")),
        "obs_dist": _dense("rssm/obs_dist", s.hidden, sk, ("rssm", "obs_dist")),
    }
    return _by_name(encoder) + _by_name(heads) + cell + _by_name(rssm)
