"""`train.py --phase all`: every phase on real CartPole (`debug` sizes) on pixels and on the
vector state, and on vector BipedalWalker (continuous actions), then evaluation, the printed
results table, the summary of where everything is, and a resumed second call."""

from __future__ import annotations

import contextlib
import io
import json
import pathlib

import numpy as np
import pytest

import train
from conftest import ZOO_DIR
from ditto_tf.config import load_config
from ditto_tf.runs import AGENTS


# (config blocks, expert flags): pixels with the zoo expert when present; the vector state;
# continuous actions on the vector state (a random "expert": the point is that every phase runs).
CASES = {
    "pixels": (["cartpole", "debug"], None),
    "vector": (["cartpole", "vector", "debug"], None),
    "vector-continuous": (["bipedalwalker", "vector", "debug"], ["--expert.source", "random"]),
}


def _flags(case: str) -> list[str]:
    if CASES[case][1] is not None:
        return CASES[case][1]
    if ZOO_DIR is not None:
        return ["--expert.folder", str(ZOO_DIR)]
    return ["--expert.source", "random"]


@pytest.fixture(scope="module", params=list(CASES))
def run_all(request, tmp_path_factory) -> tuple[pathlib.Path, str, str]:
    case = request.param
    logdir = tmp_path_factory.mktemp("pipeline") / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = train.main(["--configs", *CASES[case][0], "--logdir", str(logdir), *_flags(case)])
    assert code == 0
    return logdir, stdout.getvalue(), case


def test_all_phases_then_table_and_summary(run_all):
    logdir, out, case = run_all
    config = load_config(CASES[case][0])
    keys = set(np.load(next((logdir / "data" / "wm").glob("*.npz"))).files)
    assert ("image" in keys) == (case == "pixels") and ("vector" in keys) == (case != "pixels")
    for agent in AGENTS:
        assert (logdir / agent / "checkpoints" / "checkpoint").is_file(), agent
    assert (logdir / "world_model" / "checkpoints" / "checkpoint").is_file()
    table = (logdir / "eval" / "results.md").read_text()
    assert table.splitlines()[0].startswith("| env | agent |")
    assert len(table.strip().splitlines()) == 2 + len(AGENTS)  # header, rule, one row per agent
    assert table.strip() in out  # the table is printed, not only written
    assert f"tensorboard --logdir {logdir}" in out
    for where in ("config.yaml", "data", "world_model", "eval", *AGENTS):
        assert str(logdir / where) in out, where
    timings = json.loads((logdir / "timings.json").read_text())
    assert set(timings) == {*train.PIPELINE, "evaluate"}
    assert all(v > 0 for v in timings.values())
    # every agent was evaluated with the configured protocol: K checkpoints x E rollouts
    for agent in AGENTS:
        cached = sorted((logdir / "eval" / agent).glob("ckpt-*.json"))
        assert len(cached) == config.eval.checkpoints, agent
        assert all(len(json.loads(p.read_text())["returns"]) == config.eval.episodes for p in cached)


def test_second_call_resumes_without_retraining(run_all, capsys):
    logdir, _, case = run_all
    before = {a: (logdir / a / "checkpoints" / "checkpoint").read_text() for a in AGENTS}
    assert train.main(["--configs", *CASES[case][0], "--logdir", str(logdir), *_flags(case)]) == 0
    out = capsys.readouterr().out
    for agent in AGENTS:
        assert (logdir / agent / "checkpoints" / "checkpoint").read_text() == before[agent]
        assert f"{agent}: already trained" in out
    assert "| env | agent |" in out
