"""DITTO's signal margin: does the world model's imagination reward the expert's own actions?

From held-out expert states, the prior is rolled open loop for H = `agent.horizon` steps with
latent modes (no sampling noise) under a plan of actions: the expert's own next actions,
uniformly random actions, or one action held constant. R(plan) is the mean eq.-8 reward
(`ditto_tf.agents.eq8`) of the imagined states at steps 1..H against the expert's posterior
latents at the same steps: what DITTO would earn by following the plan. Per row, i.e. latent
(z, h, feat) and, for z, reward form (sample, probs, mode):

    margin = R(expert actions) / R(random actions) - 1

A margin near 0 means that the imagined future hardly depends on the action, so DITTO has
nothing to learn from (issue 15 measured: imitation at +37-47%, failure at +5-14%). The
`expert, sampled` column rolls the expert's actions with sampled latents, as DITTO's imagination
does: it is the reward ceiling that the expert itself earns in training (the noise ceiling).

    report = measure(wm.rssm, val_latents, horizon=15, count=256)
    print("\\n".join(report.lines()))

`PhaseMargin` measures it during world-model training on a fixed small set of start states and
writes the latest to `LOGDIR/world_model/margin.json` (`last_margins(run)` reads it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from ditto_tf.agents.eq8 import eq8
from ditto_tf.agents.latents import GROUP, Encoder, ExpertLatents, encode_episodes, to_state
from ditto_tf.config import Config
from ditto_tf.data.episodes import load_episodes
from ditto_tf.errors import about
from ditto_tf.files import atomic_write_text
from ditto_tf.rundir import RunDir

if TYPE_CHECKING:
    from ditto_tf.rssm import RSSM
    from ditto_tf.world_model import WorldModel

# row -> (latent, reward form): forms apply to z; h enters eq. 8 as is; feat with z sampled.
ROWS = {"z_sample": ("stoch", "sample"), "z_probs": ("stoch", "probs"),
        "z_mode": ("stoch", "mode"), "h": ("deter", "sample"), "feat": ("feat", "sample")}
EXPERT, RANDOM, SAMPLED = "expert", "random", "expert, sampled"
PHASE_STARTS = 32  # start states of the in-phase measurement (fixed across the phase)
PHASE_STEPS = 128  # steps of each held-out episode encoded for it (the filter runs from step 0)


@dataclass
class MarginReport:
    """Mean eq.-8 rewards `rewards[row][plan]` of open-loop rollouts, H steps, `starts` states."""

    horizon: int
    starts: int
    rewards: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def margins(self) -> dict[str, float]:
        """{row: R(expert actions) / R(random actions) - 1}."""
        return {row: r[EXPERT] / r[RANDOM] - 1.0 if r[RANDOM] > 0 else float("nan")
                for row, r in self.rewards.items()}

    def scalars(self) -> dict[str, float]:
        """TensorBoard scalars: `ditto_margin_<row>` and the noise ceiling `ditto_ceiling_<row>`."""
        out = {f"ditto_margin_{row}": m for row, m in self.margins.items()}
        out.update({f"ditto_ceiling_{row}": r[SAMPLED] for row, r in self.rewards.items()})
        return out

    def lines(self) -> list[str]:
        """The table as text: one row per latent / form, one column per plan, then the margin."""
        plans = list(next(iter(self.rewards.values())))
        head = f"{'row':<9}" + "".join(f"{p:>17}" for p in plans) + f"{'margin':>9}"
        rows = [f"{row:<9}" + "".join(f"{r[p]:>17.3f}" for p in plans) + f"{self.margins[row]:>+9.1%}"
                for row, r in self.rewards.items()]
        return [head, *rows]

    def summary(self) -> str:
        """One short line: the margin of every row."""
        return ", ".join(f"{row} {m:+.0%}" for row, m in self.margins.items())

    def to_json(self) -> dict[str, Any]:
        return {"horizon": self.horizon, "starts": self.starts, "margins": self.margins,
                "rewards": self.rewards}


def plans(actions: np.ndarray, discrete: bool, seed: int) -> dict[str, np.ndarray]:
    """Action plans (B, H, A): the expert's, uniformly random, and each constant action
    (continuous actions: the zero action only, as there is no finite set)."""
    rng = np.random.default_rng([seed, 104729])
    batch, horizon, size = actions.shape
    out = {EXPERT: actions.astype(np.float32)}
    if discrete:
        out[RANDOM] = np.eye(size, dtype=np.float32)[rng.integers(size, size=(batch, horizon))]
        for k in range(size):
            out[f"always {k}"] = np.broadcast_to(np.eye(size, dtype=np.float32)[k], actions.shape)
    else:
        out[RANDOM] = rng.uniform(-1.0, 1.0, actions.shape).astype(np.float32)
        out["always 0"] = np.zeros_like(out[EXPERT])
    return out


def is_discrete(actions: np.ndarray) -> bool:
    """One-hot actions (every row has a single 1) are discrete."""
    taken = actions.reshape(-1, actions.shape[-1])
    return bool(np.all(np.isin(taken, (0.0, 1.0))) and np.all(taken.sum(-1) == 1.0))


def choose_starts(latents: ExpertLatents, horizon: int, count: int, seed: int) -> np.ndarray:
    """Up to `count` window starts (H + 1 states, an expert action at each), fixed by `seed`."""
    valid = latents.window_starts(horizon + 1, with_actions=True)
    rng = np.random.default_rng([seed, 7907])
    return valid if len(valid) <= count else np.sort(rng.choice(valid, count, replace=False))


def measure(rssm: RSSM, latents: ExpertLatents, horizon: int, count: int = 256, seed: int = 0,
            starts: np.ndarray | None = None) -> MarginReport:
    """The margin table of `rssm` from `count` held-out expert windows of `latents`."""
    starts = choose_starts(latents, horizon, count, seed) if starts is None else starts
    windows = latents.windows(starts, horizon + 1)
    logit = windows.get("logit")
    expert = to_state(rssm, tf.constant(windows["deter"]), tf.constant(windows["stoch"]),
                      latents.classes, None if logit is None else tf.constant(logit))
    start = {k: v[:, 0] for k, v in expert.items()}
    target = {k: v[:, 1:] for k, v in expert.items()}
    taken = windows["action"][:, :horizon]  # the action in state t led to state t + 1
    report = MarginReport(horizon, len(starts), {row: {} for row in ROWS})
    rollouts = {name: rssm.rollout(tf.constant(plan), start, sample=False)
                for name, plan in plans(taken, is_discrete(taken), seed).items()}
    rollouts[SAMPLED] = rssm.rollout(tf.constant(taken, tf.float32), start, sample=True)
    for name, imagined in rollouts.items():
        for row, (latent, form) in ROWS.items():
            report.rewards[row][name] = float(tf.reduce_mean(eq8(imagined, target, latent, form)))
    return report


class PhaseMargin:
    """The margin during world-model training: the first `PHASE_STEPS` steps of up to `GROUP`
    held-out expert episodes, re-encoded with the current weights each time, and a fixed set of
    `PHASE_STARTS` start states among them. `seconds` sums the time spent, to keep it cheap."""

    def __init__(self, config: Config, run: RunDir, episodes: list[dict[str, np.ndarray]]):
        self.config, self.run = config, run
        self.episodes = [{k: v[:PHASE_STEPS] for k, v in e.items()} for e in episodes]
        self.horizon = int(config.agent.horizon)
        self.encoder: Encoder | None = None
        self.starts: np.ndarray | None = None
        self.last: MarginReport | None = None
        self.seconds = 0.0

    @classmethod
    def create(cls, config: Config, run: RunDir) -> "PhaseMargin | None":
        """None (and says why) when there are no held-out expert episodes long enough."""
        directory = run.expert_episodes("val")
        episodes = load_episodes(directory, limit=GROUP, skip_corrupt=config.data.skip_corrupt)
        episodes = [e for e in episodes if len(e["action"]) > config.agent.horizon + 1]
        if not episodes:
            print(f"world model: no episode in {directory} is longer than agent.horizon + 1; "
                  "DITTO's margin is not measured")
            return None
        return cls(config, run, episodes)

    def __call__(self, wm: WorldModel, step: int) -> MarginReport:
        """Measure with the current weights and write `margin.json` (atomically)."""
        begin = time.perf_counter()
        self.encoder = self.encoder or Encoder(wm)
        latents = encode_episodes(wm, self.episodes, int(self.config.world_model.rssm.discrete),
                                  self.encoder)
        if self.starts is None:
            self.starts = choose_starts(latents, self.horizon, PHASE_STARTS, self.config.seed)
        self.last = measure(wm.rssm, latents, self.horizon, seed=self.config.seed, starts=self.starts)
        self.seconds += time.perf_counter() - begin
        record = {"step": step, "seconds": self.seconds, **self.last.to_json()}
        atomic_write_text(self.run.margin, json.dumps(record) + "\n")
        return self.last


def last_margins(run: RunDir) -> dict[str, Any] | None:
    """The latest in-phase measurement (`step`, `margins`, `rewards`, ...) of a run, or None."""
    path = run.margin
    if not path.exists():
        return None
    with about(path, "unreadable", ValueError,
               hint="; delete it (the next world-model phase rewrites it)"):
        return json.loads(path.read_text())
