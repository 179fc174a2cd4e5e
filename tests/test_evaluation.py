"""Evaluation: protocol arithmetic, rollouts in real envs, tables and plots from a real tiny run,
caching, one-line errors for missing or broken checkpoints, and the sweep's plan and layout.

The session fixture trains every phase on pixel CartPole with the `debug` config (real env, real
zoo expert when present, else the random expert; real world model and agents), then evaluates.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

import evaluate
import train
from conftest import ZOO_DIR
from ditto_tf import sweep
from ditto_tf.config import load_config
from ditto_tf.envs import make_env
from ditto_tf.evaluation import Protocol, plan, report
from ditto_tf.plots import at_least, comparison_table, comparisons
from ditto_tf.driver import RandomActor, drive, quotas
from ditto_tf.scores import Score, normalize, summarize
from ditto_tf.data.episodes import list_episodes
from ditto_tf.runs import AGENTS, find_runs
from ditto_tf.rundir import RunDir

PROTOCOL = Protocol(checkpoints=2, episodes=3, envs=2, reference_episodes=4)


def _flags() -> list[str]:
    if ZOO_DIR is not None:
        return ["--expert.folder", str(ZOO_DIR)]
    return ["--expert.source", "random"]


# ----------------------------------------------------------------------------- arithmetic

def test_summarize_counts_and_standard_error():
    returns = [[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]]
    score = summarize(returns)
    assert score.checkpoints == 3 and score.episodes == 12
    assert score.mean == pytest.approx(30.0 / 12.0)
    # per-checkpoint means 2.5, 5, 0: sample std 2.5, SE 2.5 / sqrt(3)
    assert score.se == pytest.approx(2.5 / math.sqrt(3.0))
    flat = np.array(sum(returns, []))
    by_hand = math.sqrt(((flat - flat.mean()) ** 2).sum() / 11.0) / math.sqrt(12.0)
    assert score.se_rollouts == pytest.approx(by_hand)


def test_single_checkpoint_uses_the_rollouts_spread():
    score = summarize([[2.0, 4.0]])
    assert (score.checkpoints, score.episodes, score.mean) == (1, 2, 3.0)
    assert score.se == pytest.approx(math.sqrt(2.0) / math.sqrt(2.0))
    assert math.isnan(summarize([[7.0]]).se)
    with pytest.raises(ValueError):
        summarize([])


def test_expert_normalisation():
    assert normalize(60.0, random=10.0, expert=110.0) == pytest.approx(0.5)
    assert normalize(10.0, 10.0, 110.0) == 0.0 and normalize(110.0, 10.0, 110.0) == 1.0
    assert normalize(-21.0, random=-20.0, expert=0.0) == pytest.approx(-0.05)
    assert math.isnan(normalize(5.0, 3.0, 3.0))
    score = Score(mean=60.0, se=5.0, se_rollouts=1.0, checkpoints=10, episodes=200)
    assert score.normalized(10.0, 110.0) == (pytest.approx(0.5), pytest.approx(0.05))


def test_comparison_rule_one_se_of_the_difference():
    """DITTO vs a baseline: a loss only when more than one SE of the difference (SEs in
    quadrature) below; D-GAIL is compared at DITTO's horizon only."""
    def row(agent, mean, se, n=4, horizon=15):
        return {"env": "e", "agent": agent, "n_expert": n, "return_mean": mean, "return_se": se,
                "horizon": horizon if agent in ("ditto", "dgail") else ""}

    rows = [row("ditto", 10.0, 3.0), row("dbc", 14.9, 4.0), row("bc", 15.1, 4.0),
            row("dgail", 4.0, 0.0), row("dgail", 99.0, 0.0, horizon=5), row("bc", 0.0, 0.0, n=1)]
    found = {c["baseline"]: c for c in comparisons(rows)}
    assert len(comparisons(rows)) == 3  # not the H 5 D-GAIL, not N_E 1's BC
    assert found["dbc"]["se"] == pytest.approx(5.0) and found["dbc"]["verdict"] == "tie"
    assert found["bc"]["difference"] == pytest.approx(-5.1) and found["bc"]["verdict"] == "loss"
    assert found["dgail"]["verdict"] == "win"
    assert at_least(row("a", 1.0, 0.0), row("b", 1.0, 0.0))
    table = comparison_table(rows).splitlines()
    assert table[2] == "| e | 4 | 15 | +6.00 (2.0 SE): win | -4.90 (1.0 SE): tie | -5.10 (1.0 SE): loss |"
    assert comparison_table([row("bc", 1.0, 0.0)]) == ""


def test_quotas_split_episodes_over_envs_up_front():
    assert quotas(20, 4) == [5, 5, 5, 5]
    assert quotas(5, 3) == [2, 2, 1]
    assert quotas(2, 4) == [1, 1]
    assert sum(quotas(200, 7)) == 200


def test_rollout_plays_full_episodes_in_a_real_env(tiny_config):
    config = load_config(["cartpole", "debug"])

    def play(count: int) -> tuple[list[float], list[int]]:
        envs = [make_env(config, 100 + i) for i in range(count)]
        played = drive(envs, RandomActor(envs[0].act_space, seed=3), quotas(5, count))
        return [e.score for e in played], [e.length for e in played]

    returns, lengths = play(3)
    assert len(returns) == len(lengths) == 5
    assert returns == [float(n) for n in lengths]  # CartPole: +1 per step, episodes run to the end
    assert all(1 <= n <= config.env.time_limit for n in lengths)
    assert play(3) == (returns, lengths)  # a function of the env seeds and the actor's seed


# ----------------------------------------------------------------------------- a real tiny run

@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> pathlib.Path:
    """Every phase on pixel CartPole `debug`, then the evaluation report."""
    logdir = tmp_path_factory.mktemp("eval") / "run"
    for phase in train.PIPELINE:
        code = train.main(["--configs", "cartpole", "debug", "--logdir", str(logdir),
                           "--phase", phase, *_flags()])
        assert code == 0, f"phase {phase} failed"
    return logdir


@pytest.fixture(scope="session")
def reported(trained_run) -> dict:
    out = trained_run / "results"
    return report([trained_run], out, PROTOCOL, progress=False, echo=lambda text: None)


def test_report_table_matches_the_cached_rollouts(trained_run, reported):
    rows = reported["rows"]
    assert [r["agent"] for r in rows] == list(AGENTS)
    reference = json.loads(RunDir(trained_run).reference_scores.read_text())
    random = np.mean(reference["random"]["returns"])
    expert = np.mean(reference["expert"]["returns"])
    assert len(reference["random"]["returns"]) == len(reference["expert"]["returns"]) == 4
    for row in rows:
        caches = sorted(RunDir(trained_run).eval_cache(row["agent"]).glob("ckpt-*.json"))
        assert len(caches) == PROTOCOL.checkpoints == row["checkpoints"]
        returns = [json.loads(p.read_text())["returns"] for p in caches]
        assert all(len(r) == PROTOCOL.episodes for r in returns)
        assert row["episodes"] == PROTOCOL.checkpoints * PROTOCOL.episodes
        assert row["return_mean"] == pytest.approx(np.mean(returns))
        assert row["return_se"] == pytest.approx(
            np.std([np.mean(r) for r in returns], ddof=1) / math.sqrt(len(returns)))
        assert (row["random"], row["expert"]) == (pytest.approx(random), pytest.approx(expert))
        assert row["normalized"] == pytest.approx((row["return_mean"] - random) / (expert - random))
        assert row["n_expert"] == 2 and row["seeds"] == 1
        assert 0.0 <= row["action_accuracy"] <= 1.0
        if row["agent"] == "bc":
            assert math.isnan(row["latent_distance"]) and row["horizon"] == ""
        else:
            assert 0.0 <= row["latent_distance"] <= 2.0


def test_tables_and_plots_are_written(trained_run, reported):
    out = trained_run / "results"
    markdown = (out / "results.md").read_text().strip().splitlines()
    assert len(markdown) == 2 + len(AGENTS) and "DITTO" in markdown[2]
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["agent"] for r in table] == list(AGENTS)
    for written, row in zip(table, reported["rows"]):
        assert float(written["return_mean"]) == pytest.approx(row["return_mean"])
    names = {p.name for p in reported["files"] if p.suffix == ".png"}
    assert names == {"fig3_gym_CartPole-v1.png", "fig2_gym_CartPole-v1_ne2.png"}
    # DITTO against each baseline, from the rows just written: one line for (env, N_E 2, H)
    comparison = (out / "comparison.md").read_text().splitlines()
    by = {r["agent"]: r for r in reported["rows"]}
    for agent, cell in zip(["dgail", "dbc", "bc"], comparison[2].strip("| ").split(" | ")[3:]):
        difference = by["ditto"]["return_mean"] - by[agent]["return_mean"]
        se = math.hypot(by["ditto"]["return_se"], by[agent]["return_se"])
        assert cell.startswith(f"{difference:+.2f} ("), (agent, cell)
        verdict = "win" if difference > se else "loss" if -difference > se else "tie"
        assert cell.endswith(verdict), (agent, cell, verdict)
    assert len(comparison) == 5 and comparison[4].startswith("DITTO - baseline")
    for name in names:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200


def test_rerun_reads_the_caches(trained_run, reported):
    caches = sorted(RunDir(trained_run).eval_dir.rglob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in caches]
    plans = plan(find_runs([trained_run]), PROTOCOL)
    assert all(not p.todo for p in plans) and all(p.references.pending == 0 for p in plans)
    again = report([trained_run], trained_run / "results", PROTOCOL, progress=False,
                   echo=lambda text: None)
    assert [r["return_mean"] for r in again["rows"]] == [r["return_mean"] for r in reported["rows"]]
    assert [p.stat().st_mtime_ns for p in caches] == stamps
    # more episodes per checkpoint is a different protocol: those caches are not reused
    bigger = plan(find_runs([trained_run]), Protocol(2, 4, 2, 4))
    assert all(len(p.todo) == 2 for p in bigger)


def test_one_agent_updates_its_rows_and_keeps_the_others(trained_run, reported, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(trained_run / "results", out)
    lines = []
    again = report([trained_run], out, PROTOCOL, agents=["dbc"], progress=False, echo=lines.append)
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["agent"] for r in table] == list(AGENTS)
    for written, row in zip(table, reported["rows"]):
        assert float(written["return_mean"]) == pytest.approx(row["return_mean"])
        assert written["logdirs"] == row["logdirs"]
    assert [r["agent"] for r in again["rows"]] == list(AGENTS)
    assert any("kept the earlier rows of DITTO, D-GAIL, BC" in line for line in lines)
    assert len((out / "results.md").read_text().strip().splitlines()) == 2 + len(AGENTS)


def _copy_agent(run: pathlib.Path, dest: pathlib.Path, agent: str) -> pathlib.Path:
    dest.mkdir(parents=True)
    shutil.copy(RunDir(run).config_path, RunDir(dest).config_path)
    shutil.copytree(RunDir(run).phase_dir(agent), RunDir(dest).phase_dir(agent))
    return dest


def _cli_error(capsys, argv: list[str]) -> str:
    code = evaluate.main([*argv, "--quiet", "--checkpoints", "2", "--episodes", "1", "--envs", "1",
                          "--reference-episodes", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_missing_checkpoint_is_a_one_line_error(trained_run, tmp_path, capsys):
    run = _copy_agent(trained_run, tmp_path / "run", "bc")
    shutil.rmtree(RunDir(run).checkpoints("bc"))
    assert str(RunDir(run).checkpoints("bc")) in _cli_error(capsys, [str(run)])
    assert str(tmp_path / "nothing") in _cli_error(capsys, [str(tmp_path / "nothing")])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert str(RunDir(empty).config_path) in _cli_error(capsys, [str(empty)])


def test_broken_checkpoint_is_a_one_line_error(trained_run, tmp_path, capsys):
    run = _copy_agent(trained_run, tmp_path / "run", "bc")
    newest = sorted(RunDir(run).checkpoints("bc").glob("ckpt-*.index"))[-1].with_suffix("")
    data = next(newest.parent.glob(newest.name + ".data-*"))
    data.write_bytes(data.read_bytes()[:20])  # truncated, as by a full disk
    assert str(newest) in _cli_error(capsys, [str(run)])
    data.unlink()
    assert str(newest) in _cli_error(capsys, [str(run)])


# ----------------------------------------------------------------------------- sweeps

def test_sweep_plan_and_shards():
    runs = sweep.plan(["cartpole"], list(AGENTS), [1, 4], [5, 15], [0, 1])
    # ditto and dgail for each H, dbc and bc once: 6 runs per (N_E, seed)
    assert len(runs) == 2 * 2 * 6
    assert len({r.name for r in runs}) == len(runs)
    assert {r.horizon for r in runs if r.agent in ("dbc", "bc")} == {None}
    shards = [sweep.shard(runs, f"{i}/3") for i in range(3)]
    assert sorted(sum(shards, []), key=runs.index) == runs
    assert all(abs(len(s) - len(runs) / 3) < 1 for s in shards)
    with pytest.raises(Exception, match="--shard"):
        sweep.shard(runs, "3/3")
    # a run folder's name gives back its run; other folders (shared, results, a knob name) none
    assert [sweep.SweepRun.from_name("cartpole", r.name) for r in runs] == runs
    for other in ("shared", "results", "paper-ne4-s0", "ditto-ne4-h015-s0", "bc-ne4-s0x"):
        assert sweep.SweepRun.from_name("cartpole", other) is None


def test_resumed_sweep_tops_up_the_expert_episodes(trained_run, tmp_path, capsys):
    """A finished shared stage resumed with a larger max(N_E): the world model is kept and the
    expert's train episodes are collected up to the new N_E."""
    shared = tmp_path / "sweep" / "cartpole" / "shared"
    shutil.copytree(trained_run / "data", shared / "data")
    shutil.copytree(trained_run / "world_model", shared / "world_model")
    shutil.copy(trained_run / "config.yaml", shared / "config.yaml")
    before = len(list_episodes(RunDir(shared).data / "expert" / "train"))
    argv = ["--envs", "cartpole", "--configs", "debug", "--out", str(tmp_path / "sweep"), "--agents",
            "dbc", "--experts", "1", str(before + 1), "--stage", "shared", "--", *_flags()]
    assert sweep.main(argv) == 0
    assert "world model done" in capsys.readouterr().out
    assert len(list_episodes(RunDir(shared).data / "expert" / "train")) == before + 1


def test_sweep_trains_runs_over_a_shared_world_model(trained_run, tmp_path, capsys):
    out = tmp_path / "sweep"
    shared = out / "cartpole" / "shared"
    shared.mkdir(parents=True)
    for name in ("config.yaml", "data", "world_model"):  # the shared stage of a finished sweep
        (shared / name).symlink_to(trained_run / name)
    argv = ["--envs", "cartpole", "--configs", "debug", "--out", str(out), "--agents", "dbc",
            "--experts", "1", "--stage", "runs", "--", *_flags()]
    assert sweep.main(argv) == 0
    printed = capsys.readouterr().out
    assert "--phase dbc --agent.expert_episodes 1" in printed
    logdir = out / "cartpole" / "dbc-ne1-s0"
    assert RunDir(logdir).data.resolve() == RunDir(trained_run).data.resolve()
    (result,) = find_runs([logdir])
    assert (result.agent, result.n_expert, result.horizon) == ("dbc", 1, None)
    assert RunDir(logdir).latest_step("dbc") == load_config(["debug"]).dbc.steps
    assert sweep.main(argv) == 0  # finished runs are skipped, not retrained
    assert "skipped" in capsys.readouterr().out
    # evaluated together with the four-agent run: one table over N_E, the references measured once
    both = report([trained_run, logdir], out / "results", PROTOCOL, progress=False,
                  echo=lambda text: None)
    keys = [(r["agent"], r["n_expert"]) for r in both["rows"]]
    assert keys == [("ditto", 2), ("dgail", 2), ("dbc", 1), ("dbc", 2), ("bc", 2)]
    assert (json.loads(RunDir(logdir).reference_scores.read_text())
            == json.loads(RunDir(trained_run).reference_scores.read_text()))
    assert (out / "results" / "fig3_gym_CartPole-v1.png").is_file()
