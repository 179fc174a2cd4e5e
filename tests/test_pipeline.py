"""`train.py --phase all` as the README runs it: a relative `--logdir`, every phase on real
CartPole (`debug` sizes) on pixels and on the vector state, on vector BipedalWalker
(continuous actions) and on MinAtar Breakout's pixels with its shipped expert, then
evaluation, the printed table and summary lines, TensorBoard's
`eval/return`, a resumed second call, and `evaluate.py` given a relative path from another
working directory."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import train
from conftest import REPO_ROOT, ZOO_DIR
from ditto_tf import zoo
from ditto_tf.config import load_config
from ditto_tf.errors import read_yaml
from ditto_tf.runs import AGENTS
from ditto_tf.rundir import RunDir

RELATIVE = pathlib.Path("runs") / "quick"  # the README's command shape: a relative logdir


# (config blocks, expert flags): pixels with the zoo expert when present; the vector state;
# continuous actions on the vector state (a random "expert": the point is that every phase runs);
# MinAtar with the expert shipped in experts/ (found from pytest's temporary working directory).
CASES = {
    "pixels": (["cartpole", "debug"], None),
    "vector": (["cartpole", "vector", "debug"], None),
    "vector-continuous": (["bipedalwalker", "vector", "debug"], ["--expert.source", "random"]),
    "minatar": (["minatar", "minatar_breakout", "debug"], []),
}
IMAGES = {"pixels", "minatar"}  # the cases whose world model reads images (the others: vectors)


def _flags(case: str) -> list[str]:
    if CASES[case][1] is not None:
        return CASES[case][1]
    if ZOO_DIR is not None:
        return ["--expert.folder", str(ZOO_DIR)]
    return ["--expert.source", "random"]


@contextlib.contextmanager
def _cwd(path: pathlib.Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@pytest.fixture(scope="module", params=list(CASES))
def run_all(request, tmp_path_factory) -> tuple[pathlib.Path, str, str]:
    case = request.param
    base = tmp_path_factory.mktemp("pipeline")
    stdout = io.StringIO()
    with _cwd(base), contextlib.redirect_stdout(stdout):
        code = train.main(["--configs", *CASES[case][0], "--logdir", str(RELATIVE), *_flags(case)])
    assert code == 0
    return base / RELATIVE, stdout.getvalue(), case


def test_all_phases_then_table_and_summary(run_all):
    logdir, out, case = run_all
    config = load_config(CASES[case][0])
    keys = set(np.load(next(RunDir(logdir).wm_episodes.glob("*.npz"))).files)
    if case == "minatar":  # the shipped expert, found in the project from another directory
        assert read_yaml(RunDir(logdir).config_path)["expert"]["folder"] == str(zoo.PROJECT_ZOO)
    assert ("image" in keys) == (case in IMAGES) and ("vector" in keys) == (case not in IMAGES)
    for agent in AGENTS:
        assert (RunDir(logdir).checkpoints(agent) / "checkpoint").is_file(), agent
    assert (RunDir(logdir).wm_checkpoints / "checkpoint").is_file()
    table = (RunDir(logdir).eval_dir / "results.md").read_text()
    assert table.splitlines()[0].startswith("| env | agent |")
    assert len(table.strip().splitlines()) == 2 + len(AGENTS)  # header, rule, one row per agent
    assert table.strip() in out  # the table is printed, not only written
    assert f"tensorboard --logdir {logdir}" in out
    for where in ("config.yaml", "data", "world_model", "eval", *AGENTS):
        assert str(logdir / where) in out, where
    timings = json.loads(RunDir(logdir).timings.read_text())
    assert set(timings) == {*train.PIPELINE, "evaluate"}
    assert all(v > 0 for v in timings.values())
    # every agent was evaluated with the configured protocol: K checkpoints x E rollouts
    for agent in AGENTS:
        cached = sorted(RunDir(logdir).eval_cache(agent).glob("ckpt-*.json"))
        assert len(cached) == config.eval.checkpoints, agent
        assert all(len(json.loads(p.read_text())["returns"]) == config.eval.episodes for p in cached)


def test_each_phase_ends_with_one_summary_line(run_all):
    _, out, case = run_all
    steps = load_config(CASES[case][0]).world_model.steps
    lines = out.splitlines()
    (wm,) = [line for line in lines if line.startswith(f"world model: {steps} of {steps} updates")]
    assert "KL loss" in wm and "open-loop MSE" in wm
    assert ("image loss" in wm) == (case in IMAGES) and ("vector loss" in wm) == (case not in IMAGES)
    for agent in AGENTS:
        (line,) = [x for x in lines if x.startswith(f"{agent}: ") and " updates (" in x]
        # discrete actions: how often the mode is the expert's; continuous: its mean abs error
        held_out = "error" if case == "vector-continuous" else "accuracy"
        assert f"held-out action {held_out}" in line, line
        assert ("L_d" in line) == (agent != "bc"), line
        assert ("imagined reward" in line) == (agent in ("ditto", "dgail")), line


def test_true_env_returns_reach_each_agents_tensorboard(run_all):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    import tensorflow as tf

    logdir, _, _ = run_all
    for agent in AGENTS:
        cached = {json.loads(p.read_text())["step"]: json.loads(p.read_text())["returns"]
                  for p in RunDir(logdir).eval_cache(agent).glob("ckpt-*.json")}
        events = EventAccumulator(str(RunDir(logdir).phase_dir(agent)))
        events.Reload()
        points = {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("eval/return")}
        assert set(points) == set(cached), agent
        for step, returns in cached.items():
            assert points[step] == pytest.approx(sum(returns) / len(returns), rel=1e-5)
        assert "eval/return_se" in events.Tags()["tensors"]
        assert "train/updates_per_second" in events.Tags()["tensors"]


def test_second_call_resumes_without_retraining(run_all, capsys):
    logdir, _, case = run_all
    before = {a: (RunDir(logdir).checkpoints(a) / "checkpoint").read_text() for a in AGENTS}
    config_before = RunDir(logdir).config_path.read_text()
    with _cwd(logdir.parent.parent):
        assert train.main(["--configs", *CASES[case][0], "--logdir", str(RELATIVE), *_flags(case)]) == 0
    out = capsys.readouterr().out
    for agent in AGENTS:
        assert (RunDir(logdir).checkpoints(agent) / "checkpoint").read_text() == before[agent]
        assert f"{agent}: already trained" in out
    assert "| env | agent |" in out
    assert RunDir(logdir).config_path.read_text() == config_before  # nothing changed, nothing logged
    assert not (logdir / "config_changes.jsonl").exists()


def test_evaluate_cli_with_a_relative_path_from_another_directory(run_all, tmp_path):
    """A new process, as a user runs it: no TensorFlow start-up noise, the table printed."""
    logdir, _, case = run_all
    if case != "pixels":
        pytest.skip("one case is enough for the command line")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    relative = os.path.relpath(logdir, elsewhere)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "evaluate.py"), relative, "--quiet"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "| env | agent |" in done.stdout
    for noise in ("cuInit", "cudart_stub", "cpu_feature_guard", "absl::InitializeLog"):
        assert noise not in done.stderr, done.stderr
    assert not list(elsewhere.iterdir())  # everything went into the run directory
