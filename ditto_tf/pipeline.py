"""`train.py --phase all`: every training phase in order, then evaluation and a summary.

    python train.py --configs quickstart --logdir runs/quickstart

Each phase resumes from its own checkpoints (a finished phase returns at once), so re-running
the command after a kill continues where it stopped. After the agents, the true-env evaluation
of `ditto_tf.evaluation` plays the last `eval.checkpoints` checkpoints of every agent, prints the
results table and writes tables and plots to `LOGDIR/eval/`. The wall time of each phase is
printed and kept in `LOGDIR/timings.json` (only phases that did work in this invocation count).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Sequence

from ditto_tf.config import Config
from ditto_tf.files import atomic_write_text
from ditto_tf.logger import format_seconds
from ditto_tf.rundir import RunDir
from ditto_tf.runs import AGENTS, read_cache

PhaseFunction = Callable[[Config, RunDir], Any]


def _save_timings(run: RunDir, timings: dict[str, float]) -> None:
    """Merge this invocation's phase times into the run's timings.json (a resumed run adds up)."""
    path = run.timings
    old = read_cache(path) or {}
    merged = {k: float(old.get(k, 0.0)) + v for k, v in timings.items()}
    merged.update({k: v for k, v in old.items() if k not in merged})
    atomic_write_text(path, json.dumps(merged, indent=1, sort_keys=True) + "\n")


def summary_lines(config: Config, run: RunDir, agents: Sequence[str],
                  timings: dict[str, float]) -> list[str]:
    """Where everything is, how long each phase took, and how to look at it."""
    d = run.root
    lines = ["", f"done: {config.task} in {format_seconds(sum(timings.values()))} "
             f"({', '.join(f'{k} {format_seconds(v)}' for k, v in timings.items())})",
             f"  config        {run.config_path}",
             f"  episodes      {run.data}  (wm/, expert/train/, expert/val/, manifest.jsonl)",
             f"  world model   {run.world_model}  (checkpoints/, metrics.jsonl, TensorBoard)"]
    for agent in agents:
        lines.append(f"  {agent:<13} {run.phase_dir(agent)}  (checkpoints/, metrics.jsonl, TensorBoard)")
    lines += [f"  results       {run.eval_dir}  (results.md, results.csv, *.png)",
              f"  timings       {run.timings}",
              f"view the training curves: tensorboard --logdir {d}",
              f"re-evaluate: python evaluate.py {d}"]
    return lines


def run_all(config: Config, run: RunDir, phases: Sequence[str],
            load: Callable[[str], PhaseFunction]) -> dict[str, Any]:
    """Run `phases` (each through `load(name)`), then evaluate every agent of the run.

    Returns the evaluation report ({rows, results, files}) plus `timings` in seconds.
    """
    from ditto_tf.evaluation import Protocol, report

    timings: dict[str, float] = {}
    for name in phases:
        print(f"\n== phase {name} ==", flush=True)
        begin = time.time()
        load(name)(config, run)
        timings[name] = time.time() - begin
        _save_timings(run, {name: timings[name]})
    print("\n== evaluation ==", flush=True)
    begin = time.time()
    agents = [a for a in AGENTS if a in phases and run.checkpoints(a).is_dir()]
    protocol = Protocol(config.eval.checkpoints, config.eval.episodes, config.eval.envs)
    result = report([run.root], protocol=protocol, agents=agents)
    timings["evaluate"] = time.time() - begin
    _save_timings(run, {"evaluate": timings["evaluate"]})
    print("\n".join(summary_lines(config, run, agents, timings)), flush=True)
    return {**result, "timings": timings}
