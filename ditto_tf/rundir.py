"""The run directory: its paths are resolved once, and it keeps the config it was made with.

Every command-line entry point turns the user's paths into absolute ones with `resolve_path`
before anything else sees them, so a relative `--logdir runs/x` behaves exactly like an absolute
one from any working directory (TensorFlow's checkpoint state, manifests and symlinks all hold
paths relative to the directory they live in, and would otherwise be joined twice).

`RunDir.configure` pins the config: in an existing run directory the stored `config.yaml` is
the base, the named blocks and flags given on the command line are merged over it, and the keys
that define what was collected and built (`PINNED`) may not change. Every other change is
appended to `config_changes.jsonl`.

`RunDir` also owns the layout every phase reads and writes (no other module spells a folder or
file name of it):

    config.yaml, config_changes.jsonl, timings.json
    data/{wm, expert/train, expert/val}/*.npz, data/manifest.jsonl, data/summary.json
    world_model/{checkpoints/, model.json, margin.json, metrics.jsonl}
    <agent>/{checkpoints/, metrics.jsonl}          ditto, dgail, dbc, bc
    latents/<world-model checkpoint>/              expert latents, per world-model checkpoint
    eval/{reference.json, <agent>/ckpt-<n>.json, results.md, ...}

`model.json` is the spec of the world model (action size, discrete or not, observation
shapes); `save_spec` is its only writer and `spec` its only reader.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import re
from typing import Any, Iterator, Sequence

from ditto_tf.config import PROJECT_ROOT, Config, load_config
from ditto_tf.errors import UserError, read_json, read_yaml, within
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
# Episode set (as collect names it) -> its folder under LOGDIR/data.
EPISODE_SETS = {"wm": "wm", "expert_train": "expert/train", "expert_val": "expert/val"}
WORLD_MODEL = "world_model"  # the world-model phase's folder (the agents' are their names)
METRICS = "metrics.jsonl"  # a phase's training log, in its folder (`ditto_tf.logger.Logger`)


def resolve_path(path: str | os.PathLike) -> pathlib.Path:
    """`~` expanded and made absolute against the working directory. Symlinks are kept (a sweep
    run links the shared stage's `data/`), and `..` is normalised lexically."""
    return pathlib.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def is_pinned(key: str) -> bool:
    """Whether `key` (dotted) may not change once a run directory exists."""
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in PINNED)


def absolute_paths(config: Config) -> Config:
    """`config` with its relative PATH_KEYS made absolute (`~` is kept: it is portable).

    A relative `expert.folder` missing from the working directory but present in the project
    (`experts`, the shipped MinAtar experts) is the project's, so a run works from any directory.
    """
    changes = {}
    for key in PATH_KEYS:
        value = str(config[key])
        if value and not value.startswith("~") and not os.path.isabs(value):
            path = resolve_path(value)
            if key == "expert.folder" and not path.exists() and (PROJECT_ROOT / value).is_dir():
                path = PROJECT_ROOT / value
            changes[key] = str(path)
    return config.update(changes) if changes else config


def config_diff(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """{key: (old, new)} for every leaf that differs."""
    a, b = old.flat(), new.flat()
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


_STATE_LINE = re.compile(r'^\s*(\w+)\s*:\s*(.*?)\s*$')


def checkpoint_state(directory: str | os.PathLike) -> tuple[str | None, list[str]]:
    """(newest prefix, every kept prefix) of a `tf.train.CheckpointManager` directory, read from
    its `checkpoint` state file without TensorFlow; (None, []) when there is none. Relative names
    are joined onto `directory`, as TensorFlow does. A damaged state file is a one-line error."""
    directory = pathlib.Path(directory)
    path = directory / "checkpoint"
    if not path.is_file():
        return None, []
    latest, kept = None, []
    for line in path.read_text(errors="replace").splitlines():
        match = _STATE_LINE.match(line)
        if not line.strip():
            continue
        if match is None:
            raise UserError(f"{path}: unreadable (not a checkpoint state line: {line[:60]!r})")
        key, value = match.groups()
        if key not in ("model_checkpoint_path", "all_model_checkpoint_paths"):
            continue
        if len(value) < 2 or value[0] != '"' or value[-1] != '"':
            raise UserError(f"{path}: unreadable ({key} is not a quoted string)")
        prefix = str(directory / value[1:-1])  # an absolute name stays as it is
        if key == "model_checkpoint_path":
            latest = prefix
        else:
            kept.append(prefix)
    return latest, kept


def checkpoint_step(prefix: str) -> int:
    """The step in a CheckpointManager prefix `.../ckpt-<step>`."""
    try:
        return int(pathlib.Path(prefix).name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        raise UserError(f"{prefix}: not a checkpoint name of the form ckpt-<step>") from None


def latest_step(directory: str | os.PathLike) -> int:
    """Step of the newest checkpoint in a CheckpointManager directory (0 if none, or if its
    state file is damaged or names no `ckpt-<step>`)."""
    try:
        latest, _ = checkpoint_state(directory)
        return checkpoint_step(latest) if latest else 0
    except UserError:
        return 0


class RunDir:
    """A `train.py` logdir, addressed by its absolute path; the one owner of its layout."""

    def __init__(self, root: str | os.PathLike):
        self.root = resolve_path(root)

    # -- layout ----------------------------------------------------------------------------

    @property
    def config_path(self) -> pathlib.Path:
        return self.root / "config.yaml"

    @property
    def changes_path(self) -> pathlib.Path:
        return self.root / "config_changes.jsonl"

    @property
    def timings(self) -> pathlib.Path:
        """Wall time per phase, summed over invocations (`train.py --phase all`)."""
        return self.root / "timings.json"

    @property
    def data(self) -> pathlib.Path:
        """Collect's folder: the episode sets, the manifest and the summary."""
        return self.root / "data"

    def episodes(self, name: str) -> pathlib.Path:
        """The folder of episode set `name` (wm, expert_train, expert_val)."""
        return self.data / EPISODE_SETS[name]

    @property
    def wm_episodes(self) -> pathlib.Path:
        """Episodes of `data.wm_policy`, for the world model."""
        return self.episodes("wm")

    def expert_episodes(self, split: str) -> pathlib.Path:
        """Expert episodes of `split` (train: the N_E learned from; val: held out)."""
        return self.episodes(f"expert_{split}")

    @property
    def manifest(self) -> pathlib.Path:
        """One JSON line per collected episode."""
        return self.data / "manifest.jsonl"

    @property
    def summary(self) -> pathlib.Path:
        """Collect's per-set return statistics."""
        return self.data / "summary.json"

    @property
    def collect_lock(self) -> pathlib.Path:
        return self.data / ".collect.lock"

    def phase_dir(self, name: str) -> pathlib.Path:
        """The folder of a training phase (world_model or an agent): checkpoints, metrics.jsonl,
        TensorBoard events."""
        return self.root / name

    def checkpoints(self, name: str) -> pathlib.Path:
        """The CheckpointManager folder of a training phase."""
        return self.phase_dir(name) / "checkpoints"

    def metrics(self, name: str) -> pathlib.Path:
        """The training log of a phase (written by `ditto_tf.logger.Logger`)."""
        return self.phase_dir(name) / METRICS

    def latest_step(self, name: str) -> int:
        """Updates done by phase `name`: the step of its newest checkpoint (0 if none)."""
        return latest_step(self.checkpoints(name))

    @property
    def world_model(self) -> pathlib.Path:
        return self.phase_dir(WORLD_MODEL)

    @property
    def wm_checkpoints(self) -> pathlib.Path:
        return self.checkpoints(WORLD_MODEL)

    @property
    def model_spec(self) -> pathlib.Path:
        """The world model's spec (`save_spec` / `spec`)."""
        return self.world_model / "model.json"

    @property
    def margin(self) -> pathlib.Path:
        """DITTO's signal margin, measured during the world-model phase."""
        return self.world_model / "margin.json"

    @property
    def latents(self) -> pathlib.Path:
        """Expert latents, one folder per world-model checkpoint."""
        return self.root / "latents"

    @property
    def eval_dir(self) -> pathlib.Path:
        """Evaluation's caches and, for a single run, its tables and plots."""
        return self.root / "eval"

    def eval_cache(self, agent: str) -> pathlib.Path:
        """Cached true-env returns of an agent, one file per checkpoint."""
        return self.eval_dir / agent

    @property
    def reference_scores(self) -> pathlib.Path:
        """Random and expert returns of the run's env setting."""
        return self.eval_dir / "reference.json"

    # -- the world model's spec ------------------------------------------------------------

    def save_spec(self, action_size: int, shapes: dict[str, tuple[int, ...]],
                  discrete: bool | None) -> None:
        """Write `model.json` (atomically, only when it changes): `action_size`, `discrete`
        (omitted when unknown), `image_shape` (for tools that read only images) and, unless
        the model reads images only, `obs_shapes`."""
        spec: dict[str, Any] = {"action_size": int(action_size)}
        if discrete is not None:
            spec["discrete"] = bool(discrete)
        if "image" in shapes:
            spec["image_shape"] = [int(s) for s in shapes["image"]]
        if set(shapes) != {"image"}:  # an image model's spec stays as before (and as the import writes)
            spec["obs_shapes"] = {k: [int(s) for s in v] for k, v in shapes.items()}
        path = self.model_spec
        if self.spec() != spec:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(spec) + "\n")

    def spec(self) -> dict[str, Any] | None:
        """The world model's spec (None when `model.json` is missing)."""
        path = self.model_spec
        spec = read_json(path)
        if spec is None:
            return None
        if not isinstance(spec, dict):
            raise UserError(f"{path}: expected a JSON object")
        return spec

    def collect_summary(self) -> dict[str, Any]:
        """Collect's `summary.json` (expert return mean/std is the normaliser; `action` is the
        env's action space)."""
        return read_json(self.summary, missing="not found; run --phase collect first")

    def action_space(self, config: Config) -> tuple[int, bool]:
        """(action size, discrete) of the run's task, without an environment: from `model.json`,
        else from collect's summary. Run directories made before both recorded `discrete` (and
        imports given `--actions`) fall back to building the env once, as they did."""
        spec = self.spec() or {}
        if "discrete" in spec:
            return int(spec["action_size"]), bool(spec["discrete"])
        action = self.collect_summary().get("action") if self.summary.is_file() else None
        if isinstance(action, dict) and "discrete" in action:
            return int(action["size"]), bool(action["discrete"])
        from ditto_tf.envs import make_env  # old run directories only

        env = make_env(config, seed=config.seed)
        try:
            return env.action_size, env.discrete
        finally:
            env.close()

    def exists(self) -> bool:
        """Whether this directory already holds a run (its config was written)."""
        return self.config_path.is_file()

    def stored_config(self) -> Config:
        """The config the run was made with, merged over today's defaults (new keys get theirs)."""
        path = self.config_path
        if not path.is_file():
            raise UserError(f"{path}: missing; is {self.root} a ditto_tf run directory?")
        saved = read_yaml(path)
        if not isinstance(saved, dict):
            raise UserError(f"{path}: expected a mapping of config keys")
        with within(path):
            return load_config([]).update(saved)

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
