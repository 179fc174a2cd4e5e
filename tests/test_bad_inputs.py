"""Bad input the other test files do not cover yet: a one-line error, exit 2, nothing half-written.

README's "Bad input" table lists every case with its error and the test that covers it. Each
case here runs the real CLI (`train.main` / `evaluate.main`) on a copy of one small real run
(pixel CartPole, `debug`, random-policy data): the error must be a single `error: ...` line
naming the culprit, and no file of the run may appear or change except `config.yaml` (train.py
writes the effective config of every invocation) and the dataset's own read caches.
"""

from __future__ import annotations

import pathlib
import shutil

import pytest

import evaluate
import train
from ditto_tf.rundir import RunDir

FLAGS = ["--configs", "cartpole", "debug", "--expert.source", "random", "--precision", "float32",
         "--data.wm_policy", "random", "--data.wm_episodes", "3", "--data.expert_train", "2",
         "--data.expert_val", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> pathlib.Path:
    """Collected data, a world model and a BC agent (10 updates each)."""
    logdir = tmp_path_factory.mktemp("bad_input") / "run"
    for phase in ("collect", "world_model", "bc"):
        assert train.main([*FLAGS, "--logdir", str(logdir), "--phase", phase]) == 0
    return logdir


def copy(run: pathlib.Path, target: pathlib.Path, *parts: str, config: bool = True) -> pathlib.Path:
    """`parts` of the run copied into `target`; without its config.yaml (`config=False`) the copy
    is a new run directory holding foreign files, which the phases' own checks must catch (in
    the run itself, config pinning refuses the change first: tests/test_rundir.py)."""
    target.mkdir(parents=True)
    if config:
        shutil.copy(RunDir(run).config_path, RunDir(target).config_path)
    for part in parts:
        shutil.copytree(run / part, target / part, symlinks=True)
    return target


def snapshot(logdir: pathlib.Path) -> dict[str, tuple[int, int]]:
    """Every file except the ones a failed run may legitimately rewrite."""
    return {p.relative_to(logdir).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in logdir.rglob("*") if p.is_file()
            and p.name not in ("config.yaml", ".collect.lock")
            and ".cache" not in p.relative_to(logdir).parts}


def one_line_error(capsys, main, argv: list[str], logdir: pathlib.Path, *culprits: str) -> str:
    """Run the CLI: exit 2, exactly one `error:` line naming every culprit, no file written."""
    before = snapshot(logdir) if logdir.exists() else {}
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: "), err
    assert "Traceback" not in err
    for culprit in culprits:
        assert str(culprit) in errors[0], errors[0]
    after = snapshot(logdir) if logdir.exists() else {}
    assert after == before, sorted(set(after.items()) ^ set(before.items()))
    assert not [p for p in logdir.rglob("*") if p.name.endswith(".tmp") or "_temp" in p.name]
    print(errors[0])
    return errors[0]


def train_error(capsys, logdir: pathlib.Path, *flags: str, culprits: tuple = ()) -> str:
    return one_line_error(capsys, train.main, [*FLAGS, "--logdir", str(logdir), *flags], logdir,
                          *culprits)


# ---------------------------------------------------------------- missing inputs of a phase

def test_world_model_phase_without_data(tmp_path, capsys) -> None:
    logdir = tmp_path / "run"
    train_error(capsys, logdir, "--phase", "world_model", culprits=(RunDir(logdir).wm_episodes, "--phase collect"))
    assert not RunDir(logdir).world_model.exists()


def test_bc_phase_without_expert_data(tmp_path, capsys) -> None:
    logdir = tmp_path / "run"
    train_error(capsys, logdir, "--phase", "bc", culprits=(RunDir(logdir).expert_episodes("train"),))
    assert not (logdir / "bc").exists()


@pytest.mark.parametrize("agent", ["ditto", "dgail", "dbc"])
def test_latent_agent_without_world_model(run, tmp_path, capsys, agent) -> None:
    logdir = copy(run, tmp_path / "run", "data")
    train_error(capsys, logdir, "--phase", agent,
                culprits=(RunDir(logdir).wm_checkpoints, "--phase world_model"))
    assert not RunDir(logdir).phase_dir(agent).exists()


# ---------------------------------------------------------------- damaged or mismatched data

def test_corrupt_episode_file_stops_the_world_model(run, tmp_path, capsys) -> None:
    logdir = copy(run, tmp_path / "run", "data")
    victim = sorted(RunDir(logdir).wm_episodes.glob("*.npz"))[1]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated, as by a full disk
    train_error(capsys, logdir, "--phase", "world_model", culprits=(victim.name,))
    assert not RunDir(logdir).wm_checkpoints.exists()


def test_episodes_of_another_image_size(run, tmp_path, capsys) -> None:
    logdir = copy(run, tmp_path / "run", "data", config=False)
    train_error(capsys, logdir, "--phase", "world_model", "--env.size", "16,16",
                culprits=(RunDir(logdir).wm_episodes, "(32, 32, 1)", "(16, 16, 1)"))
    # Topping up the data with other image settings is refused too, before any episode is added.
    train_error(capsys, logdir, "--phase", "collect", "--env.size", "16,16", "--data.wm_episodes", "5",
                culprits=("data/wm/", "(32, 32, 1)", "(16, 16, 1)"))


def test_corrupt_manifest_line(run, tmp_path, capsys) -> None:
    logdir = copy(run, tmp_path / "run", "data")
    manifest = RunDir(logdir).manifest
    manifest.write_text(manifest.read_text() + "{not json\n")
    train_error(capsys, logdir, "--phase", "collect", "--data.wm_episodes", "5",
                culprits=(f"{manifest}:7",))


# ---------------------------------------------------------------- checkpoints that do not fit

def test_world_model_checkpoint_of_another_config(run, tmp_path, capsys) -> None:
    logdir = copy(run, tmp_path / "run", "data", "world_model", config=False)
    train_error(capsys, logdir, "--phase", "dbc", "--world_model.rssm.deter", "64",
                culprits=(RunDir(logdir).wm_checkpoints / "ckpt-10",))
    assert not (logdir / "dbc").exists()


def test_truncated_world_model_checkpoint(run, tmp_path, capsys) -> None:
    logdir = copy(run, tmp_path / "run", "data", "world_model")
    data = next(RunDir(logdir).wm_checkpoints.glob("ckpt-10.data-*"))
    data.write_bytes(data.read_bytes()[:64])
    train_error(capsys, logdir, "--phase", "dbc", culprits=(RunDir(logdir).wm_checkpoints / "ckpt-10",))
    assert not (logdir / "dbc").exists()


def test_agent_checkpoint_of_another_config_on_resume(run, tmp_path, capsys) -> None:
    logdir = copy(run, tmp_path / "run", "data", "bc", config=False)
    train_error(capsys, logdir, "--phase", "bc", "--bc.steps", "20", "--bc.mlp.units", "16",
                culprits=(RunDir(logdir).checkpoints("bc") / "ckpt-10",))


def test_truncated_agent_checkpoint_on_resume(run, tmp_path, capsys) -> None:
    logdir = copy(run, tmp_path / "run", "data", "bc")
    data = next(RunDir(logdir).checkpoints("bc").glob("ckpt-10.data-*"))
    data.write_bytes(data.read_bytes()[:64])
    train_error(capsys, logdir, "--phase", "bc", "--bc.steps", "20",
                culprits=(RunDir(logdir).checkpoints("bc") / "ckpt-10",))


# ---------------------------------------------------------------- evaluate.py

def test_evaluate_counts_must_be_positive(run, tmp_path, capsys) -> None:
    logdir = copy(run, tmp_path / "run", "bc")
    one_line_error(capsys, evaluate.main, [str(logdir), "--episodes", "0"], logdir, "--episodes", "0")


def test_evaluate_a_run_without_trained_agents(run, tmp_path, capsys) -> None:
    logdir = copy(run, tmp_path / "run", "data")
    one_line_error(capsys, evaluate.main, [str(logdir)], logdir, logdir, "no trained agent")
