"""Results tables (markdown + CSV) and figures (paper Fig. 2, Fig. 3, the horizon ablation).

All figures use matplotlib's Agg backend (no display needed) and are written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import pathlib
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ditto_tf import published
from ditto_tf.errors import UserError
from ditto_tf.files import atomic_path, atomic_write_text
from ditto_tf.runs import AGENTS, HORIZON_AGENTS, OFFLINE_KEYS, Run, offline_curves
from ditto_tf.scores import summarize

if TYPE_CHECKING:
    from ditto_tf.scores import RunResult

LABELS = {"ditto": "DITTO", "dgail": "D-GAIL", "dbc": "D-BC", "bc": "BC"}
COLORS = {"ditto": "tab:red", "dgail": "tab:blue", "dbc": "tab:green", "bc": "tab:orange"}
COLUMNS = ["env", "agent", "n_expert", "horizon", "seeds", "checkpoints", "episodes",
           "return_mean", "return_se", "return_se_rollouts", "random", "expert", "normalized",
           "normalized_se", "latent_distance", "action_accuracy", "dreamerv2_online", "logdirs"]


def dreamerv2_score(task: str) -> float:
    """DreamerV2's published final Atari score for `task` (online RL with the true reward and
    sticky actions: a reference, not a baseline) from `ditto_tf.published`; NaN if none."""
    score = published.dreamerv2_score(task)
    return math.nan if score is None else float(score)


def dreamerv2_label() -> str:
    """The legend and column label of the published DreamerV2 scores."""
    return published.DREAMERV2_SCORES_LABEL


# ----------------------------------------------------------------------------- aggregation

def group_key(run: Run) -> tuple[str, str, int, int | None]:
    """Runs that differ only by seed are aggregated together."""
    return run.task, run.agent, run.n_expert, run.horizon


def _sort_key(key: tuple[str, str, int, int | None]) -> tuple:
    task, agent, n_expert, horizon = key
    return task, AGENTS.index(agent), n_expert, horizon or 0


def aggregate(results: Sequence["RunResult"]) -> list[dict[str, Any]]:
    """One row per (env, agent, N_E, H): returns pooled over seeds (see ditto_tf.evaluation)."""
    groups: dict[tuple, list["RunResult"]] = {}
    for result in results:
        groups.setdefault(group_key(result.run), []).append(result)
    rows = []
    for key in sorted(groups, key=_sort_key):
        members = groups[key]
        task, agent, n_expert, horizon = key
        score = summarize([r for m in members for r in m.returns])
        random = float(np.mean([x for m in members for x in m.random]))
        expert = float(np.mean([x for m in members for x in m.expert]))
        norm, norm_se = score.normalized(random, expert)
        offline = {}
        for name in OFFLINE_KEYS:
            values = [m.offline[name] for m in members if name in m.offline]
            offline[name] = float(np.mean(values)) if values else math.nan
        rows.append({
            "env": task, "agent": agent, "n_expert": n_expert,
            "horizon": "" if horizon is None else horizon,
            "seeds": len({m.run.seed for m in members}), "checkpoints": score.checkpoints,
            "episodes": score.episodes, "return_mean": score.mean, "return_se": score.se,
            "return_se_rollouts": score.se_rollouts, "random": random, "expert": expert,
            "normalized": norm, "normalized_se": norm_se, **offline,
            "dreamerv2_online": dreamerv2_score(task),
            "logdirs": " ".join(sorted({str(m.run.logdir) for m in members})),
        })
    return rows


# ----------------------------------------------------------------------------- tables

def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a GitHub markdown table (return and normalised score as mean ± SE)."""
    dreamer = any(not math.isnan(r["dreamerv2_online"]) for r in rows)
    header = ["env", "agent", "N_E", "H", "seeds", "ckpts x eps", "return", "expert-norm.",
              "random", "expert", "L_d", "accuracy"]
    if dreamer:
        header.append(dreamerv2_label())
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["env"], LABELS.get(r["agent"], r["agent"]), str(r["n_expert"]),
                 str(r["horizon"]) or "-", str(r["seeds"]), f"{r['checkpoints']} x "
                 f"{r['episodes'] // max(1, r['checkpoints'])}",
                 f"{_fmt(r['return_mean'])} ± {_fmt(r['return_se'])}",
                 f"{_fmt(r['normalized'])} ± {_fmt(r['normalized_se'])}",
                 _fmt(r["random"]), _fmt(r["expert"]), _fmt(r["latent_distance"], 3),
                 _fmt(r["action_accuracy"], 3)]
        if dreamer:
            cells.append(_fmt(r["dreamerv2_online"], 1))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v)
                         for k, v in row.items()})
    return buffer.getvalue()


def _cell(column: str, text: str) -> Any:
    """A results.csv cell back in the type `aggregate` gives it."""
    if column in ("env", "agent", "logdirs") or (column == "horizon" and text == ""):
        return text
    if text == "":
        return math.nan
    return int(text) if column in ("n_expert", "horizon", "seeds", "checkpoints", "episodes") \
        else float(text)


def keep_other_agents(rows: Sequence[dict[str, Any]], out: pathlib.Path,
                      agents: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The new `rows` plus the rows of `out/results.csv` for agents not evaluated now, so that
    `evaluate.py --agents X` updates X's rows instead of dropping the others'; returns them and
    the agents whose rows were kept."""
    path = out / "results.csv"
    if not path.exists():
        return list(rows), []
    with path.open(newline="") as f:
        try:
            old = [{c: _cell(c, r[c]) for c in COLUMNS} for r in csv.DictReader(f)
                   if r.get("agent") in AGENTS and r["agent"] not in agents]
        except (KeyError, ValueError) as error:
            raise UserError(f"{path}: not a results table of this version ({error}); "
                            "give another --out or remove it") from None
    merged = sorted([*rows, *old], key=lambda r: _sort_key(
        (r["env"], r["agent"], r["n_expert"], r["horizon"] or None)))
    return merged, sorted({r["agent"] for r in old}, key=AGENTS.index)


def write_tables(rows: Sequence[dict[str, Any]], out: pathlib.Path) -> list[pathlib.Path]:
    """Write `results.md`, `results.csv` and (when there is a DITTO row to compare)
    `comparison.md` into `out`, atomically; returns their paths."""
    paths = [out / "results.md", out / "results.csv"]
    atomic_write_text(paths[0], markdown_table(rows))
    atomic_write_text(paths[1], csv_text(rows))
    table = comparison_table(rows)
    if table:
        paths.append(out / "comparison.md")
        atomic_write_text(paths[-1], table)
    else:  # a comparison left by an earlier evaluation into `out` would no longer match
        (out / "comparison.md").unlink(missing_ok=True)
    return paths


# ----------------------------------------------------------------------------- DITTO vs baselines

COMPARISON_RULE = ("DITTO - baseline in mean return; a loss is more than one SE of the difference "
                   "below (the two SEs in quadrature), a win more than one above, else a tie")


def _return_se(row: dict[str, Any]) -> float:
    se = row.get("return_se")
    return 0.0 if se in (None, "") or math.isnan(float(se)) else float(se)


def at_least(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """"A >= B", the benchmarks' rule: A's mean return is not below B's by more than one SE of
    the difference."""
    return a["return_mean"] >= b["return_mean"] - math.hypot(_return_se(a), _return_se(b))


def comparisons(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """DITTO against every baseline row of the same env and N_E (D-GAIL: and the same H): the
    difference in mean return, its SE and the verdict ("win", "tie" or "loss")."""
    found = []
    for ditto in (r for r in rows if r["agent"] == "ditto"):
        for other in rows:
            if other["agent"] == "ditto" or (other["env"], other["n_expert"]) != (
                    ditto["env"], ditto["n_expert"]):
                continue
            if other["agent"] in HORIZON_AGENTS and other["horizon"] != ditto["horizon"]:
                continue
            above, below = at_least(ditto, other), at_least(other, ditto)
            found.append({"env": ditto["env"], "n_expert": ditto["n_expert"],
                          "horizon": ditto["horizon"], "baseline": other["agent"],
                          "difference": ditto["return_mean"] - other["return_mean"],
                          "se": math.hypot(_return_se(ditto), _return_se(other)),
                          "verdict": "tie" if above and below else "win" if above else "loss"})
    return found


def comparison_table(rows: Sequence[dict[str, Any]]) -> str:
    """`comparisons` as a markdown table, one line per (env, N_E, H); "" if there is none."""
    cells: dict[tuple, dict[str, str]] = {}
    for c in comparisons(rows):
        se = f"{abs(c['difference']) / c['se']:.1f} SE" if c["se"] > 0 else "SE 0"
        cells.setdefault((c["env"], c["n_expert"], c["horizon"]), {})[c["baseline"]] = \
            f"{c['difference']:+.2f} ({se}): {c['verdict']}"
    if not cells:
        return ""
    baselines = [a for a in AGENTS if a != "ditto"]
    header = ["env", "N_E", "H", *(f"DITTO - {LABELS[a]}" for a in baselines)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (env, n_expert, horizon), found in cells.items():
        lines.append("| " + " | ".join([env, str(n_expert), str(horizon) or "-",
                                        *(found.get(a, "-") for a in baselines)]) + " |")
    return "\n".join(lines) + f"\n\n{COMPARISON_RULE}.\n"


# ----------------------------------------------------------------------------- figures

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: pathlib.Path) -> pathlib.Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _references(ax: Any, row: dict[str, Any], data: Sequence[float] = ()) -> None:
    """Expert and random lines, and a y-range that shows them and `data` (mean ± SE ends)
    without squashing: DreamerV2's online score is drawn only when it fits that range, else it
    is named in the legend."""
    ax.axhline(row["expert"], color="black", ls="--", lw=1, label=f"expert ({row['expert']:.4g})")
    ax.axhline(row["random"], color="gray", ls=":", lw=1, label=f"random ({row['random']:.4g})")
    values = [v for v in (*data, row["expert"], row["random"]) if np.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = 0.08 * (high - low or abs(high) or 1.0)
    ax.set_ylim(low - pad, high + pad)
    online = row["dreamerv2_online"]
    if not math.isnan(online):
        if low - pad <= online <= high + pad:
            ax.axhline(online, color="purple", ls="-.", lw=1, label=dreamerv2_label())
        else:  # off the scale of the imitation results: named, not drawn
            ax.plot([], [], color="purple", ls="-.", lw=1,
                    label=f"{dreamerv2_label()}: {online:.4g} (off scale)")


def _mean_se(ax: Any, x: np.ndarray, y: np.ndarray, se: np.ndarray, color: str, label: str) -> None:
    """A mean line with ±1 SE shaded (and as error bars, visible for a single point too)."""
    ax.plot(x, y, marker="o", color=color, label=label)
    ax.fill_between(x, y - se, y + se, color=color, alpha=0.2, lw=0)
    ax.errorbar(x, y, yerr=se, fmt="none", ecolor=color, capsize=3, lw=1)


def _line_label(agent: str, horizon: Any, horizons: set) -> str:
    label = LABELS.get(agent, agent)
    return f"{label} H={horizon}" if horizon != "" and len(horizons) > 1 else label


def plot_return_vs_experts(rows: Sequence[dict[str, Any]], out: pathlib.Path) -> list[pathlib.Path]:
    """Paper Fig. 3: true-env return against N_E per agent, ±1 SE, one PNG per env.

    Agents are dodged sideways so that their marks and error bars never hide each other; with a
    single N_E value the x axis lists the agents instead.
    """
    plt, paths = _pyplot(), []
    for task in sorted({r["env"] for r in rows}):
        mine = [r for r in rows if r["env"] == task]
        horizons = {r["horizon"] for r in mine if r["horizon"] != ""}
        values = sorted({r["n_expert"] for r in mine})
        lines = [(agent, h) for agent in AGENTS
                 for h in sorted({r["horizon"] for r in mine if r["agent"] == agent}, key=str)]
        fig, ax = plt.subplots(figsize=(6, 4))
        ends: list[float] = []
        for i, (agent, horizon) in enumerate(lines):
            line = sorted((r for r in mine if r["agent"] == agent and r["horizon"] == horizon),
                          key=lambda r: r["n_expert"])
            y = np.array([r["return_mean"] for r in line])
            se = np.nan_to_num(np.array([r["return_se"] for r in line]))
            ends += [*(y - se), *(y + se)]
            label = _line_label(agent, horizon, horizons)
            if len(values) == 1:
                ax.errorbar([i], y, yerr=se, fmt="o", ms=8, capsize=6, lw=1.5,
                            color=COLORS[agent], label=label)
            else:
                dodge = 2.0 ** (0.08 * (i - (len(lines) - 1) / 2))
                x = np.array([r["n_expert"] for r in line], float) * dodge
                _mean_se(ax, x, y, se, COLORS[agent], label)
        _references(ax, mine[0], ends)
        if len(values) == 1:
            ax.set_xticks(range(len(lines)), [_line_label(a, h, horizons) for a, h in lines])
            ax.set_xlim(-0.6, len(lines) - 0.4)
            ax.set(xlabel=f"agent ($N_E$ = {values[0]} expert episodes)")
        else:
            ax.set_xscale("log", base=2)
            ax.set_xticks(values, [str(v) for v in values])
            ax.set(xlabel="expert episodes $N_E$")
        ax.set(ylabel="return (true env)", title=task)
        ax.legend(fontsize=7)
        paths.append(_save(fig, out / f"fig3_{task}.png"))
    return paths


def plot_horizon(rows: Sequence[dict[str, Any]], out: pathlib.Path) -> list[pathlib.Path]:
    """Paper Fig. 4 (right): return against the training horizon H, for settings with several H."""
    plt, paths = _pyplot(), []
    for task in sorted({r["env"] for r in rows}):
        for n_expert in sorted({r["n_expert"] for r in rows if r["env"] == task}):
            mine = [r for r in rows if r["env"] == task and r["n_expert"] == n_expert
                    and r["horizon"] != ""]
            if len({r["horizon"] for r in mine}) < 2:
                continue
            fig, ax = plt.subplots(figsize=(6, 4))
            for agent in AGENTS:
                line = sorted((r for r in mine if r["agent"] == agent), key=lambda r: r["horizon"])
                if not line:
                    continue
                x = np.array([r["horizon"] for r in line], float)
                y = np.array([r["return_mean"] for r in line])
                se = np.nan_to_num(np.array([r["return_se"] for r in line]))
                _mean_se(ax, x, y, se, COLORS[agent], LABELS[agent])
            _references(ax, mine[0], [v for r in mine for v in
                                      (r["return_mean"] - np.nan_to_num(r["return_se"]),
                                       r["return_mean"] + np.nan_to_num(r["return_se"]))])
            ax.set(xlabel="training horizon H", ylabel="return (true env)",
                   title=f"{task}, $N_E$={n_expert}")
            ax.legend(fontsize=7)
            paths.append(_save(fig, out / f"horizon_{task}_ne{n_expert}.png"))
    return paths


def plot_training(results: Sequence["RunResult"], out: pathlib.Path) -> list[pathlib.Path]:
    """Paper Fig. 2: over training steps, the true-env return of the evaluated checkpoints (±1 SE
    over their rollouts), the latent distance L_d and the expert action accuracy on held-out
    expert episodes. One PNG per (env, N_E); every agent and seed is a line."""
    plt, paths = _pyplot(), []
    settings = sorted({(r.run.task, r.run.n_expert) for r in results})
    for task, n_expert in settings:
        mine = [r for r in results if (r.run.task, r.run.n_expert) == (task, n_expert)]
        seeds = {r.run.seed for r in mine}
        horizons = {r.run.horizon for r in mine if r.run.horizon is not None}
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), sharex=True, gridspec_kw={"wspace": 0.3})
        for result in sorted(mine, key=lambda r: (AGENTS.index(r.run.agent), r.run.seed)):
            run = result.run
            label = _line_label(run.agent, "" if run.horizon is None else run.horizon, horizons)
            label += f" seed {run.seed}" if len(seeds) > 1 else ""
            color = COLORS[run.agent]
            # every checkpoint ever evaluated under this protocol, not only the last K
            steps = np.array([step for step, _ in result.history], float)
            means = np.array([np.mean(r) for _, r in result.history])
            ses = np.array([summarize([r]).se for _, r in result.history])
            axes[0].errorbar(steps, means, yerr=np.nan_to_num(ses), color=color, marker="o",
                             ms=3, capsize=2, label=label)
            curves = offline_curves(run)
            for ax, name in zip(axes[1:], OFFLINE_KEYS):
                if name in curves:
                    ax.plot(*curves[name], color=color, label=label)
        axes[0].axhline(float(np.mean(mine[0].expert)), color="black", ls="--", lw=1, label="expert")
        axes[0].axhline(float(np.mean(mine[0].random)), color="gray", ls=":", lw=1, label="random")
        axes[0].set(xlabel="gradient steps", ylabel="return (true env)", title="extrinsic return")
        axes[1].set(xlabel="gradient steps", ylabel="$L_d = 1 - r_{int}$",
                    title="latent distance (held-out expert)")
        axes[2].set(xlabel="gradient steps", ylabel="accuracy",
                    title="expert action accuracy (held-out expert)")
        for ax in axes:
            if ax.lines:
                ax.legend(fontsize=7)
        fig.suptitle(f"{task}, $N_E$={n_expert}", y=1.04)
        paths.append(_save(fig, out / f"fig2_{task}_ne{n_expert}.png"))
    return paths


def write_plots(results: Sequence["RunResult"], rows: Sequence[dict[str, Any]],
                out: pathlib.Path) -> list[pathlib.Path]:
    """Every figure the results support, into `out`."""
    return [*plot_return_vs_experts(rows, out), *plot_horizon(rows, out), *plot_training(results, out)]
