"""Scores of the evaluation protocol: mean and standard error of checkpoints x rollouts.

Standard error (our choice, documented): the SE of the K per-checkpoint means,
`std(m_1..m_K, ddof=1) / sqrt(K)`. Rollouts of one checkpoint share its policy and are not
independent samples of "the agent"; the checkpoints (gradient steps) are, which is what the
paper's "mean across 10 gradient steps with 20 validation simulations" averages over. The SE over
all K x E rollouts as if independent (`se_rollouts`) is kept in the CSV.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from ditto_tf.runs import Run


@dataclasses.dataclass(frozen=True)
class Score:
    """Mean and standard error of a K x E (checkpoints x rollouts) table of returns."""

    mean: float
    se: float              # SE of the per-checkpoint means (see module docstring)
    se_rollouts: float     # SE over all rollouts as if independent
    checkpoints: int
    episodes: int          # total rollouts

    def normalized(self, random: float, expert: float) -> tuple[float, float]:
        """(score, se) on the expert-normalised scale (R - random) / (expert - random)."""
        gap = expert - random
        if not np.isfinite(gap) or gap == 0:
            return math.nan, math.nan
        return (self.mean - random) / gap, self.se / abs(gap)


def _se(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else math.nan


def summarize(returns: Sequence[Sequence[float]]) -> Score:
    """Score of `returns[k][e]`: rollout e of checkpoint k (rows may differ in length).

    mean: over all rollouts. se: SE of the per-checkpoint means; with a single checkpoint it
    falls back to the SE over its rollouts (the only spread there is).
    """
    rows = [np.asarray(r, np.float64) for r in returns if len(r)]
    if not rows:
        raise ValueError("summarize: no returns")
    flat = np.concatenate(rows)
    means = np.array([r.mean() for r in rows])
    se = _se(means) if len(rows) > 1 else _se(flat)
    return Score(float(flat.mean()), se, _se(flat), len(rows), len(flat))


def normalize(value: float, random: float, expert: float) -> float:
    """Expert-normalised score: 0 is the random policy, 1 the expert; NaN if they tie."""
    gap = expert - random
    return (value - random) / gap if np.isfinite(gap) and gap != 0 else math.nan


@dataclasses.dataclass
class RunResult:
    """Everything evaluated about one agent of one run."""

    run: Run
    steps: list[int]                 # evaluated checkpoint steps, oldest first
    returns: list[list[float]]       # returns[k][e]
    lengths: list[list[int]]
    random: list[float]              # reference rollouts in the same env
    expert: list[float]
    offline: dict[str, float]        # latent_distance, action_accuracy (end of training)
    # (step, returns) of every checkpoint evaluated under this protocol, including older ones
    # no longer among the last K (or deleted since): the training curve of fig. 2
    earlier: list[tuple[int, list[float]]] = dataclasses.field(default_factory=list)

    @property
    def history(self) -> list[tuple[int, list[float]]]:
        mine = dict(zip(self.steps, self.returns))
        return sorted({**dict(self.earlier), **mine}.items())

    @property
    def score(self) -> Score:
        return summarize(self.returns)
