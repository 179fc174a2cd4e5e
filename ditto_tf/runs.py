"""Run directories as evaluation sees them: which agents, trained how, with which checkpoints.

A run directory is a `train.py` logdir: `config.yaml` (the effective config: env, N_E, H, seed)
and one folder per trained agent (`ditto/`, `dgail/`, `dbc/`, `bc/`) holding `checkpoints/` and
the training log `metrics.jsonl` (the offline metrics on held-out expert episodes). Evaluation
writes its caches under `eval/`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ditto_tf.config import Config
from ditto_tf.errors import UserError, about
from ditto_tf.files import atomic_write_text
from ditto_tf.rundir import RunDir, checkpoint_state, checkpoint_step, resolve_path

AGENTS = ("ditto", "dgail", "dbc", "bc")
LATENT_AGENTS = ("ditto", "dgail", "dbc")  # act on world-model states
HORIZON_AGENTS = ("ditto", "dgail")        # trained on imagined rollouts of horizon H


@dataclasses.dataclass(frozen=True)
class Run:
    """One agent of one run directory: what it is (from config.yaml) and where its files are."""

    logdir: pathlib.Path
    agent: str
    config: Config

    @property
    def task(self) -> str:
        return str(self.config.task)

    @property
    def n_expert(self) -> int:
        """N_E: the expert episodes this agent learned from."""
        return int(self.config.agent.expert_episodes or self.config.data.expert_train)

    @property
    def horizon(self) -> int | None:
        """H for the imagination agents; None for those that do not imagine."""
        return int(self.config.agent.horizon) if self.agent in HORIZON_AGENTS else None

    @property
    def seed(self) -> int:
        return int(self.config.seed)

    @property
    def rundir(self) -> RunDir:
        return RunDir(self.logdir)

    @property
    def checkpoint_dir(self) -> pathlib.Path:
        return self.rundir.checkpoints(self.agent)

    @property
    def cache_dir(self) -> pathlib.Path:
        return self.rundir.eval_cache(self.agent)

    @property
    def name(self) -> str:
        return f"{self.logdir}/{self.agent}"


def load_run_config(logdir: pathlib.Path) -> Config:
    """The effective config a run was trained with, merged over today's defaults."""
    return RunDir(logdir).stored_config()


def find_runs(logdirs: Iterable[str | pathlib.Path], agents: Sequence[str] = AGENTS) -> list[Run]:
    """Every trained agent in the given run directories; a directory without one is an error."""
    runs: list[Run] = []
    for logdir in map(resolve_path, logdirs):
        if not logdir.is_dir():
            raise UserError(f"{logdir}: no such run directory")
        config = load_run_config(logdir)
        found = [Run(logdir, a, config) for a in agents if RunDir(logdir).phase_dir(a).is_dir()]
        if not found:
            raise UserError(f"{logdir}: no trained agent (expected one of {', '.join(agents)}/)")
        runs.extend(found)
    return runs


def list_checkpoints(run: Run, count: int) -> list[str]:
    """The last `count` checkpoint prefixes of an agent, oldest first, each checked to exist."""
    directory = run.checkpoint_dir
    if not (directory / "checkpoint").is_file():
        raise UserError(f"{directory}: no checkpoint (train the agent first: --phase {run.agent})")
    _, prefixes = checkpoint_state(directory)  # joined onto the directory, as TensorFlow does
    if not prefixes:
        raise UserError(f"{directory}/checkpoint: lists no checkpoints")
    prefixes = sorted(prefixes, key=checkpoint_step)[-count:]
    for prefix in prefixes:
        if not pathlib.Path(prefix + ".index").is_file() or not list(
                pathlib.Path(prefix).parent.glob(pathlib.Path(prefix).name + ".data-*")):
            raise UserError(f"{prefix}: checkpoint files missing (.index or .data)")
    if len(prefixes) < count:
        warnings.warn(f"{directory}: only {len(prefixes)} of the last {count} checkpoints exist",
                      stacklevel=2)
    return prefixes


def check_readable(prefix: str) -> None:
    """Read every tensor of a checkpoint: a truncated or corrupt one fails here, before any
    rollout, with a one-line error naming it."""
    import tensorflow as tf

    with about(prefix, "checkpoint unreadable", typed=True, limit=120):  # DataLossError, NotFoundError, ...
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)


def checkpoint_signature(prefix: str) -> str:
    """A hash of the checkpoint's index file: a retrained checkpoint invalidates its cache."""
    return hashlib.sha1(pathlib.Path(prefix + ".index").read_bytes()).hexdigest()[:16]


def env_signature(config: Config) -> str:
    """The env settings that change scores: a reference cache is reusable across matching runs."""
    keys = {"task": config.task, "env": config.env.to_dict(), "expert": config.expert.to_dict()}
    return hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]



# ----------------------------------------------------------------------------- caches

def read_cache(path: pathlib.Path) -> dict[str, Any] | None:
    """A cached JSON object, or None when absent or unreadable (it is then recomputed)."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: pathlib.Path, data: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- offline metrics

# metrics.jsonl keys the agents log on the held-out expert episodes (first match wins).
OFFLINE_KEYS: dict[str, tuple[str, ...]] = {
    "latent_distance": ("val/latent_distance", "val_latent_distance", "latent_distance", "val/L_d"),
    "action_accuracy": ("val/action_accuracy", "val_action_accuracy", "action_accuracy",
                        "val/accuracy"),
}


def read_lines(path: pathlib.Path) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file, one a line ([] when it is missing); a line that is not
    one (a torn last line of a killed writer) is skipped."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [row for row in rows if isinstance(row, dict)]


def read_metrics(path: pathlib.Path) -> list[dict[str, float]]:
    """The rows of a metrics.jsonl; a torn last line (killed writer) is skipped."""
    return [row for row in read_lines(path) if "step" in row]


def offline_curves(run: Run) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'latent_distance' | 'action_accuracy': (steps, values)} from the agent's training log."""
    rows = read_metrics(run.rundir.metrics(run.agent))
    curves = {}
    for name, candidates in OFFLINE_KEYS.items():
        for key in candidates:
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                steps, values = map(np.asarray, zip(*sorted(points)))
                curves[name] = (steps.astype(np.int64), values.astype(np.float64))
                break
    return curves


def offline_summary(run: Run, from_step: int) -> dict[str, float]:
    """The offline metrics reported at the end: their mean over the steps the evaluated
    checkpoints span (>= `from_step`), else the last value logged."""
    out = {}
    for name, (steps, values) in offline_curves(run).items():
        window = values[steps >= from_step]
        out[name] = float(window.mean() if len(window) else values[-1])
    return out
