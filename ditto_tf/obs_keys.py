"""Which observation keys the world model (and BC) read: DreamerV2's `cnn_keys` / `mlp_keys`.

    keys = select(config, {'image': (64, 64, 1), 'vector': (4,)})
    keys.encoder_cnn, keys.encoder_mlp, keys.decoder_cnn, keys.decoder_mlp   # sorted key lists
    keys.stored                                                              # what episodes keep

As in DreamerV2, a key is a cnn key when its regex matches (`re.match`) and the observation has
rank 3, an mlp key when its regex matches and it has rank 1; `'$^'` matches nothing. The envs
offer `image` (always, Atari and rendered gymnasium envs) and `vector` (gymnasium envs whose
native observation is a 1-D Box). Whether to render images is decided from the regexes alone
(`needs_image`), before any env exists, because rendering is most of the collection cost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from ditto_tf.config import Config
from ditto_tf.errors import UserError

if TYPE_CHECKING:
    from ditto_tf.env_base import Env

OBS_KEYS = ("image", "vector")  # observation keys the envs can offer (rank 3 and rank 1)


def _regex(config: Config, part: str, kind: str) -> re.Pattern:
    key = f"world_model.{part}.{kind}_keys"
    pattern = config[key]
    try:
        return re.compile(str(pattern))
    except re.error as e:
        raise UserError(f"{key}: {pattern!r} is not a regular expression ({e})") from None


def _match(config: Config, part: str, kind: str, shapes: Mapping[str, Sequence[int]]) -> list[str]:
    regex, rank = _regex(config, part, kind), 3 if kind == "cnn" else 1
    return sorted(k for k, s in shapes.items() if k in OBS_KEYS and len(s) == rank and regex.match(k))


def needs_image(config: Config) -> bool:
    """True when an encoder or decoder cnn regex matches `image` (then envs render frames)."""
    return any(_regex(config, part, "cnn").match("image") for part in ("encoder", "decoder"))


@dataclass(frozen=True)
class Keys:
    """The observation keys each part of the world model reads, sorted."""

    encoder_cnn: list[str]
    encoder_mlp: list[str]
    decoder_cnn: list[str]
    decoder_mlp: list[str]

    @property
    def stored(self) -> list[str]:
        """Observation keys episodes must hold: everything the encoder or the decoder reads."""
        return sorted({*self.encoder_cnn, *self.encoder_mlp, *self.decoder_cnn, *self.decoder_mlp})

    @property
    def mlp(self) -> list[str]:
        """Keys that are standardised (every mlp key of the encoder or the decoder)."""
        return sorted({*self.encoder_mlp, *self.decoder_mlp})


def select(config: Config, shapes: Mapping[str, Sequence[int]]) -> Keys:
    """The keys of `shapes` (observation key -> shape) selected by the config's regexes.

    A UserError names the keys when the encoder reads nothing or the decoder reconstructs nothing.
    """
    keys = Keys(*(_match(config, part, kind, shapes)
                  for part in ("encoder", "decoder") for kind in ("cnn", "mlp")))
    offered = ", ".join(f"{k} {tuple(s)}" for k, s in shapes.items() if k in OBS_KEYS) or "none"
    if not keys.encoder_cnn and not keys.encoder_mlp:
        raise UserError("world_model.encoder.cnn_keys / mlp_keys match no observation key "
                        f"(offered: {offered})")
    if not keys.decoder_cnn and not keys.decoder_mlp:
        raise UserError("world_model.decoder.cnn_keys / mlp_keys match no observation key "
                        f"(offered: {offered})")
    return keys


def env_shapes(env: Env) -> dict[str, tuple[int, ...]]:
    """{observation key: shape} of an env's observation dict (image and/or vector)."""
    return {k: tuple(space.shape) for k, space in env.obs_space.items() if k in OBS_KEYS}
