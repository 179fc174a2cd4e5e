"""DreamerV2-style configuration: named YAML blocks merged in order, then `--key.sub value` flags.

    config = load_config(['cartpole', 'small'], ['--world_model.steps', '1e4'])
    config.world_model.rssm.deter   # attribute access, immutable
    config['world_model.rssm.deter']  # dotted access
"""

from __future__ import annotations

import difflib
import io
import pathlib
from typing import Any, Iterator, Mapping, Sequence

import ruamel.yaml

from ditto_tf.errors import UserError, read_yaml
from ditto_tf.files import atomic_write_text

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent  # the repository (a clean clone)
CONFIGS_PATH = PROJECT_ROOT / "configs.yaml"


class Config(Mapping[str, Any]):
    """An immutable nested mapping with attribute and dotted-key access."""

    def __init__(self, data: Mapping[str, Any]):
        object.__setattr__(self, "_data", {k: _freeze(v) for k, v in data.items()})

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Config is immutable; use config.update({...})")

    def __getitem__(self, key: str) -> Any:
        node: Any = self
        for part in key.split("."):
            if not isinstance(node, Config) or part not in node._data:
                raise KeyError(key)
            node = node._data[part]
        return node

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Config({self.to_dict()})"

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict of lists and scalars (for YAML / JSON)."""
        return {k: _thaw(v) for k, v in self._data.items()}

    def flat(self) -> dict[str, Any]:
        """All leaves as {'a.b.c': value}."""
        out: dict[str, Any] = {}
        for key, value in self._data.items():
            if isinstance(value, Config):
                out.update({f"{key}.{k}": v for k, v in value.flat().items()})
            else:
                out[key] = value
        return out

    def update(self, changes: Mapping[str, Any]) -> "Config":
        """A new Config with dotted or nested `changes` merged in; unknown keys are errors."""
        data = self.to_dict()
        for key, value in changes.items():
            _merge_into(data, _unflatten({key: value}), where="update", path="")
        return Config(data)

    def save(self, path: str | pathlib.Path) -> None:
        """Write as YAML, atomically."""
        stream = io.StringIO()
        yaml = ruamel.yaml.YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        yaml.dump(self.to_dict(), stream)
        atomic_write_text(path, stream.getvalue())


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return Config(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _closest(name: str, options: Sequence[str]) -> str:
    matches = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    if not matches:  # fall back to keys that share the last dotted part
        tail = name.split(".")[-1]
        matches = [o for o in options if o.split(".")[-1] == tail][:3]
    return ", ".join(matches) if matches else "none"


def _merge_into(base: dict[str, Any], update: Mapping[str, Any], where: str, path: str) -> None:
    """Merge `update` into `base` in place; every key must already exist in `base`."""
    for key, value in update.items():
        full = f"{path}{key}"
        if key not in base:
            options = [f"{path}{k}" for k in base]
            raise UserError(f"{where}: unknown key {full!r}; closest: {_closest(full, options)}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise UserError(f"{where}: key {full!r} is a section; give one of its keys")
            _merge_into(base[key], value, where, f"{full}.")
        else:
            base[key] = _check_type(full, value, base[key], where)


def _check_type(key: str, value: Any, default: Any, where: str) -> Any:
    """Return `value` if it fits the type of `default` (ints widen to floats)."""
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(value, bool) and isinstance(default, bool):
            return value
    elif isinstance(default, float) and isinstance(value, (int, float)):
        return float(value)
    elif isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return list(value)
    elif type(value) is type(default):
        return value
    raise UserError(
        f"{where}: key {key!r} must be {type(default).__name__} like {default!r}, got {value!r}"
    )


def read_blocks(path: str | pathlib.Path = CONFIGS_PATH) -> dict[str, Any]:
    """Read the named config blocks from a YAML file."""
    path = pathlib.Path(path)
    blocks = read_yaml(path, missing="config file not found")
    if not isinstance(blocks, dict) or "defaults" not in blocks:
        raise UserError(f"{path}: needs a top-level 'defaults' block")
    return blocks


def parse_value(key: str, text: Sequence[str], default: Any) -> Any:
    """Parse command-line tokens to the type of `default` (lists, bools, `1e5` numbers)."""
    flag = f"--{key}"
    if isinstance(default, (list, tuple)):
        tokens = [t for part in text for t in part.split(",") if t != ""]
        if not default:
            return tokens
        return [parse_value(key, [t], default[0]) for t in tokens]
    if len(text) != 1:
        raise UserError(f"{flag}: expects one value, got {len(text)}: {' '.join(text)!r}")
    (value,) = text
    kind = type(default).__name__
    if isinstance(default, bool):
        lowered = value.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise UserError(f"{flag}: {value!r} is not a bool (true/false)")
    if isinstance(default, int):
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"{flag}: {value!r} is not an {kind} (default {default!r})") from None
        if not number.is_integer():
            raise UserError(f"{flag}: {value!r} is not a whole number (default {default!r})")
        return int(number)
    if isinstance(default, float):
        try:
            return float(value)
        except ValueError:
            raise UserError(f"{flag}: {value!r} is not a {kind} (default {default!r})") from None
    return value


def parse_overrides(argv: Sequence[str], defaults: Config) -> dict[str, Any]:
    """Turn `--a.b 1 --c x,y` into {'a.b': 1, 'c': [...]} typed like `defaults`."""
    flat = defaults.flat()
    sections = {k.rsplit(".", 1)[0] for k in flat if "." in k}
    overrides: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        token = argv[index]
        if not token.startswith("--") or token == "--":
            raise UserError(f"unexpected argument {token!r}; flags look like --key.sub value")
        key, _, inline = token[2:].partition("=")
        values = [inline] if inline else []
        index += 1
        while not inline and index < len(argv) and not argv[index].startswith("--"):
            values.append(argv[index])
            index += 1
        if key not in flat:
            if key in sections:
                raise UserError(f"--{key} is a section; set one of its keys, e.g. --{key}.<key>")
            raise UserError(f"unknown key {key!r}; closest: {_closest(key, list(flat))}")
        if not values:
            raise UserError(f"--{key}: missing value")
        overrides[key] = parse_value(key, values, flat[key])
    return overrides


def load_config(
    names: Sequence[str], overrides: Sequence[str] = (), path: str | pathlib.Path = CONFIGS_PATH,
    base: Config | None = None,
) -> Config:
    """Merge `defaults` (or `base`, e.g. a run directory's stored config), then each named block
    in order, then command-line overrides."""
    blocks = read_blocks(path)
    data = base.to_dict() if base is not None else blocks["defaults"]
    for name in names:
        if name == "defaults":
            continue
        if name not in blocks:
            options = [b for b in blocks if b != "defaults"]
            raise UserError(f"unknown config {name!r} in {path}; closest: {_closest(name, options)}")
        block = blocks[name] or {}
        _merge_into(data, block, where=f"{pathlib.Path(path).name} block {name!r}", path="")
    config = Config(data)
    return config.update(parse_overrides(overrides, config))


def config_names(path: str | pathlib.Path = CONFIGS_PATH) -> list[str]:
    """The named blocks a user can pass to --configs."""
    return [name for name in read_blocks(path) if name != "defaults"]
