"""Reliability: SIGKILL at seeded random points in every phase, then resume; non-finite losses.

Real runs of `train.py` on pixel CartPole (`cartpole debug`, random-policy data so no zoo folder
is needed). Each phase is started as its own process, killed with SIGKILL at a point drawn from a
seeded generator (after a random amount of progress plus a random delay, so the kill can land in
set-up, in an update, in a log write or in a checkpoint save), checked for half-written files,
and resumed with the same command. The resumed run must finish with exactly the planned number of
episodes / updates, and every file must load: episodes, manifest, every kept checkpoint
(restored into the real models), metrics.jsonl.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import train
from ditto_tf.agents.policy import load_policy
from ditto_tf.config import load_config
from ditto_tf.data import collect, episodes
from ditto_tf.runs import check_readable, read_metrics
from ditto_tf.wm_training import load_world_model
from ditto_tf.rundir import RunDir

REPO = pathlib.Path(__file__).resolve().parent.parent
SEED = 20261125                         # the kill points are a pure function of this
PHASES = ("collect", "world_model", "ditto", "dgail", "dbc", "bc")
COUNTS = {"wm": 80, "expert_train": 4, "expert_val": 2}
STEPS = 60                              # updates planned for the world model and every agent
EVERY = 5                               # log and checkpoint interval
FLAGS = ["--configs", "cartpole", "debug", "--expert.source", "random", "--precision", "float32",
         "--data.wm_policy", "random", "--data.wm_episodes", str(COUNTS["wm"]),
         "--data.expert_train", str(COUNTS["expert_train"]),
         "--data.expert_val", str(COUNTS["expert_val"]),
         "--world_model.steps", str(STEPS), "--agent.steps", str(STEPS), "--dbc.steps", str(STEPS),
         "--bc.steps", str(STEPS), "--checkpoint_every", str(EVERY), "--log_every", str(EVERY)]


def error_line(stderr: str) -> str:
    """The one `error: ...` line of a failed run; progress bars may precede it, on their own lines."""
    lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    return lines[0]


def config():
    return load_config(["cartpole", "debug"], FLAGS[3:])


def episode_files(logdir: pathlib.Path) -> list[pathlib.Path]:
    return [p for name in collect.SETS for p in episodes.list_episodes(RunDir(logdir).episodes(name))]


def metric_lines(path: pathlib.Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def progress(logdir: pathlib.Path, phase: str) -> int:
    """How far a running phase got: episode files for collect, log lines for the others."""
    if phase == "collect":
        return len(list(RunDir(logdir).data.rglob("[0-9]*.npz")))
    return metric_lines(RunDir(logdir).metrics(phase))


def kill_at_random_point(logdir: pathlib.Path, phase: str, rng: np.random.Generator) -> dict:
    """Start the phase, SIGKILL it after a seeded random amount of progress and delay."""
    if phase == "collect":
        target = int(rng.integers(1, 46))    # episode files written so far
        delay = float(rng.uniform(0.0, 0.05))
    else:  # log lines written so far; 0: during set-up (datasets, caches, latent encoding, tracing)
        target = int(rng.integers(0, 5))     # at most 4 of the 12 log points: the kill lands mid-run
        delay = float(rng.uniform(0.0, 0.15))  # up to about two log intervals here
    command = [sys.executable, str(REPO / "train.py"), *FLAGS, "--logdir", str(logdir), "--phase", phase]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    started = RunDir(logdir).phase_dir(phase) if phase != "collect" else RunDir(logdir).data
    deadline = time.time() + 180
    try:
        while not started.exists() or progress(logdir, phase) < target:
            assert process.poll() is None, f"{phase} ended before the kill: " + process.stderr.read().decode()[-1500:]
            assert time.time() < deadline, f"{phase}: no progress to {target} within 180 s"
            time.sleep(0.01)
        time.sleep(delay)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL, f"{phase} finished before the kill landed"
    return {"target": target, "delay": delay, "progress": progress(logdir, phase)}


def check_episodes(logdir: pathlib.Path) -> None:
    """Every episode under a final name loads and the manifest lists exactly the files on disk."""
    for path in episode_files(logdir):
        episodes.load_episode(path)
    manifest = RunDir(logdir).manifest
    if manifest.exists():  # rewritten atomically: it parses at every moment
        listed = {json.loads(line)["file"] for line in manifest.read_text().splitlines()}
        assert listed <= {p.relative_to(RunDir(logdir).data).as_posix() for p in episode_files(logdir)}


def check_checkpoints(directory: pathlib.Path) -> list[str]:
    """Every checkpoint the manager lists has all its files and every tensor reads back."""
    state = tf.train.get_checkpoint_state(str(directory)) if directory.is_dir() else None
    prefixes = list(state.all_model_checkpoint_paths) if state else []
    for prefix in prefixes:
        check_readable(prefix)
    return prefixes


def check_metrics(path: pathlib.Path, final: bool) -> list[dict]:
    """Whole lines parse; right after a kill only the last line may be torn (no newline)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines()
    if not final and lines and not text.endswith("\n"):
        lines = lines[:-1]
    return [json.loads(line) for line in lines]


def leftovers(logdir: pathlib.Path) -> list[pathlib.Path]:
    """Temp files of interrupted atomic writes and checkpoint saves."""
    return [p for p in logdir.rglob("*") if p.name.endswith(".tmp") or "_temp" in p.name]


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.mark.parametrize("index, phase", list(enumerate(PHASES)))
def test_sigkill_at_random_point_then_resume(logdir: pathlib.Path, index: int, phase: str) -> None:
    # Phases run in pipeline order on one logdir: each test needs the previous one's outputs.
    rng = np.random.default_rng([SEED, index])
    point = kill_at_random_point(logdir, phase, rng)
    print(f"{phase}: killed at {point}")
    # Right after the kill: nothing under a final name is half-written.
    check_episodes(logdir)
    if phase != "collect":
        check_checkpoints(RunDir(logdir).checkpoints(phase))
        check_metrics(RunDir(logdir).metrics(phase), final=False)

    assert train.main([*FLAGS, "--logdir", str(logdir), "--phase", phase]) == 0
    assert not leftovers(RunDir(logdir).data if phase == "collect" else RunDir(logdir).phase_dir(phase)), \
        "temp files left behind"
    if phase == "collect":
        check_episodes(logdir)
        for name, count in COUNTS.items():
            paths = episodes.list_episodes(RunDir(logdir).episodes(name))
            assert [episodes.parse_name(p)[0] for p in paths] == list(range(count)), name
        manifest = [json.loads(line) for line in RunDir(logdir).manifest.read_text().splitlines()]
        assert sorted(e["file"] for e in manifest) == sorted(
            p.relative_to(RunDir(logdir).data).as_posix() for p in episode_files(logdir))
        return

    prefixes = check_checkpoints(RunDir(logdir).checkpoints(phase))
    assert prefixes and prefixes[-1].endswith(f"ckpt-{STEPS}")
    cfg = config()
    if phase == "world_model":
        load_world_model(cfg, RunDir(logdir))  # restores into the real model (latest checkpoint)
    else:
        wm = load_world_model(cfg, RunDir(logdir)) if phase != "bc" else None
        for prefix in prefixes:  # every kept checkpoint restores into the real policy
            load_policy(cfg, RunDir(logdir), phase, checkpoint=prefix, wm=wm)
    rows = check_metrics(RunDir(logdir).metrics(phase), final=True)
    assert rows[-1]["step"] == STEPS
    # Each log point once: rows of updates redone after the kill replace the old ones.
    assert [r["step"] for r in rows] == list(range(EVERY, STEPS + 1, EVERY))
    assert all(np.isfinite(v) for row in rows for v in row.values())
    # A second run has nothing left to do and changes nothing.
    before = sorted(p.name for p in RunDir(logdir).checkpoints(phase).iterdir())
    assert train.main([*FLAGS, "--logdir", str(logdir), "--phase", phase]) == 0
    assert sorted(p.name for p in RunDir(logdir).checkpoints(phase).iterdir()) == before


def test_logger_cuts_a_torn_line_and_rows_of_redone_updates(tmp_path: pathlib.Path) -> None:
    # What a kill in the middle of Logger.write's append leaves: a last line without newline.
    from ditto_tf.logger import Logger

    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 5, "train/loss": 1.0}) + "\n" + '{"step": 10, "train/lo')
    assert [r["step"] for r in read_metrics(path)] == [5]  # readers skip the torn line
    logger = Logger(tmp_path)  # a resumed run
    logger.scalar("train/loss", 0.5)
    logger.write(10)
    rows = [json.loads(line) for line in path.read_text().splitlines()]  # every line parses
    assert rows == [{"step": 5, "train/loss": 1.0}, {"step": 10, "train/loss": 0.5}]
    # A run resuming from step 5 redoes step 10: its old row goes, the new one is appended.
    logger = Logger(tmp_path, resume_step=5)
    logger.scalar("train/loss", 0.25)
    logger.write(10)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"step": 5, "train/loss": 1.0}, {"step": 10, "train/loss": 0.25}]


# ---------------------------------------------------------------------------------------------
# Non-finite losses: a real overflow (learning rate 1e30), not an injected value.

NAN_FLAGS = ["--configs", "cartpole", "debug", "--expert.source", "random", "--precision", "float32",
             "--data.wm_policy", "random", "--data.wm_episodes", "3", "--data.expert_train", "2",
             "--data.expert_val", "1", "--checkpoint_every", "5", "--log_every", "5"]
STEP_FLAG = {"world_model": "--world_model.steps", "ditto": "--agent.steps", "bc": "--bc.steps"}
HUGE_LR = {"world_model": ["--world_model.lr", "1e30"],
           "ditto": ["--agent.actor_lr", "1e30", "--agent.critic_lr", "1e30"],
           "bc": ["--bc.lr", "1e30"]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> pathlib.Path:
    """Data, a world model and the agents, each trained to 10 updates with sane settings."""
    logdir = tmp_path_factory.mktemp("nonfinite")
    for phase in ("collect", "world_model", "ditto", "bc"):
        assert train.main([*NAN_FLAGS, "--logdir", str(logdir), "--phase", phase]) == 0
    return logdir


@pytest.mark.parametrize("phase", ["ditto", "bc", "world_model"])  # the world model last: agents use it
def test_nonfinite_loss_stops_with_one_line_and_keeps_last_good_checkpoint(
        trained: pathlib.Path, phase: str, capsys) -> None:
    directory = RunDir(trained).checkpoints(phase)
    good = tf.train.latest_checkpoint(str(directory))
    assert good.endswith("ckpt-10")
    capsys.readouterr()
    code = train.main([*NAN_FLAGS, "--logdir", str(trained), "--phase", phase,
                       STEP_FLAG[phase], "20", *HUGE_LR[phase]])
    err = error_line(capsys.readouterr().err)
    print(err)
    assert code == 2
    assert ("nan" in err or "inf" in err) and good in err, err
    # The last good checkpoint is still the newest, whole, with finite weights.
    assert tf.train.latest_checkpoint(str(directory)) == good
    check_readable(good)
    reader = tf.train.load_checkpoint(good)
    for name, _ in tf.train.list_variables(good):
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), name
    rows = read_metrics(RunDir(trained).metrics(phase))
    assert all(np.isfinite(v) for row in rows for v in row.values())  # no NaN was logged
    # Fixing the learning rate resumes from the kept checkpoint and finishes the planned updates.
    assert train.main([*NAN_FLAGS, "--logdir", str(trained), "--phase", phase, STEP_FLAG[phase], "20"]) == 0
    assert tf.train.latest_checkpoint(str(directory)).endswith("ckpt-20")
