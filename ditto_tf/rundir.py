"""The run directory: its paths are resolved once, and it keeps the config it was made with.

Every command-line entry point turns the user's paths into absolute ones with `resolve_path`
before anything else sees them, so a relative `--logdir runs/x` behaves exactly like an absolute
one from any working directory (TensorFlow's checkpoint state, manifests and symlinks all hold
paths relative to the directory they live in, and would otherwise be joined twice).

`RunDir.configure` pins the config: in an existing run directory the stored `config.yaml` is
the base, the named blocks and flags given on the command line are merged over it, and the keys
that define what was collected and built (`PINNED`) may not change. Every other change is
appended to `config_changes.jsonl`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
from typing import Any, Iterator, Sequence

import ruamel.yaml

from ditto_tf.config import Config, load_config
from ditto_tf.errors import UserError
from ditto_tf.files import atomic_write_text

# Keys (exact, or a prefix ending in ".") that define the data collected and the networks built:
# changing one in an existing run directory would silently mix runs.
PINNED = (
    "task", "env.", "expert.algo", "expert.env_id", "expert.source", "expert.deterministic",
    "data.wm_policy", "data.wm_epsilon",
    "world_model.rssm.", "world_model.encoder.", "world_model.decoder.",
    "world_model.reward_head", "world_model.discount_head",
    "agent.actor.", "agent.critic.", "dgail.disc.", "bc.depth", "bc.mlp.", "bc.frame_stack",
)
# Config values that are file-system locations: made absolute when given relative.
PATH_KEYS = ("expert.folder", "expert.cache")


def resolve_path(path: str | os.PathLike) -> pathlib.Path:
    """`~` expanded and made absolute against the working directory. Symlinks are kept (a sweep
    run links the shared stage's `data/`), and `..` is normalised lexically."""
    return pathlib.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def is_pinned(key: str) -> bool:
    """Whether `key` (dotted) may not change once a run directory exists."""
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in PINNED)


def absolute_paths(config: Config) -> Config:
    """`config` with its relative PATH_KEYS made absolute (`~` is kept: it is portable)."""
    changes = {}
    for key in PATH_KEYS:
        value = str(config[key])
        if value and not value.startswith("~") and not os.path.isabs(value):
            changes[key] = str(resolve_path(value))
    return config.update(changes) if changes else config


def config_diff(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """{key: (old, new)} for every leaf that differs."""
    a, b = old.flat(), new.flat()
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


class RunDir:
    """A `train.py` logdir, addressed by its absolute path."""

    def __init__(self, root: str | os.PathLike):
        self.root = resolve_path(root)

    @property
    def config_path(self) -> pathlib.Path:
        return self.root / "config.yaml"

    @property
    def changes_path(self) -> pathlib.Path:
        return self.root / "config_changes.jsonl"

    def exists(self) -> bool:
        """Whether this directory already holds a run (its config was written)."""
        return self.config_path.is_file()

    def stored_config(self) -> Config:
        """The config the run was made with, merged over today's defaults (new keys get theirs)."""
        path = self.config_path
        if not path.is_file():
            raise UserError(f"{path}: missing; is {self.root} a ditto_tf run directory?")
        try:
            saved = ruamel.yaml.YAML(typ="safe", pure=True).load(path.read_text())
        except ruamel.yaml.YAMLError as e:
            raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(saved, dict):
            raise UserError(f"{path}: expected a mapping of config keys")
        try:
            return load_config([]).update(saved)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None

    def configure(self, names: Sequence[str], overrides: Sequence[str]) -> Config:
        """The config to run with: new directory, the blocks and flags; existing directory, the
        stored config with the given blocks and flags over it. Pinned keys must not change
        (one-line error, nothing written); other changes are logged. Writes `config.yaml`."""
        if not self.exists():
            config = absolute_paths(load_config(names, overrides))
            config.save(self.config_path)
            return config
        stored = self.stored_config()
        config = absolute_paths(load_config(names, overrides, base=stored))
        diff = config_diff(stored, config)
        fixed = {k: v for k, v in diff.items() if is_pinned(k)}
        if fixed:
            listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in fixed.items())
            raise UserError(f"{self.config_path}: cannot change {listed} (they define what this run "
                            "collected and built; use a new --logdir)")
        if diff:
            self._log_changes(diff)
            config.save(self.config_path)
        return config

    def _log_changes(self, diff: dict[str, tuple[Any, Any]]) -> None:
        """Append one line {time, changes: {key: [old, new]}} to config_changes.jsonl."""
        line = json.dumps({"time": datetime.datetime.now().isoformat(timespec="seconds"),
                           "changes": {k: [a, b] for k, (a, b) in diff.items()}})
        old = self.changes_path.read_text() if self.changes_path.is_file() else ""
        atomic_write_text(self.changes_path, old + line + "\n")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Undo this invocation's config writes if the block fails on bad input (`UserError`): an
        existing run gets its previous config and change log back, a new one keeps neither (and
        the directory itself goes if this invocation made it and left it empty)."""
        made = not self.root.exists()
        own = (self.config_path, self.changes_path)
        saved = {p: p.read_text() for p in own if p.is_file()}
        try:
            yield
        except UserError:
            for path in own:
                if path not in saved:
                    path.unlink(missing_ok=True)
                elif path.read_text() != saved[path]:
                    atomic_write_text(path, saved[path])
            if made and self.root.is_dir() and not any(self.root.iterdir()):
                self.root.rmdir()
            raise
