"""`--phase world_model`: trains on real pixel CartPole episodes, logs, checkpoints, resumes
after SIGKILL, stops on a non-finite loss, and `load_world_model` restores what it saved."""

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

from ditto_tf.checkpoints import Checkpointer
from ditto_tf.config import Config, load_config
from ditto_tf.errors import UserError
from ditto_tf.margin import ROWS, last_margins
from ditto_tf.wm_training import load_world_model, run
from ditto_tf.world_model import WorldModel, WorldModelTrainer
from test_world_model import write_cartpole_episodes
from ditto_tf.rundir import RunDir

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data_logdir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A logdir holding real pixel CartPole episodes in the collect phase's layout."""
    logdir = tmp_path_factory.mktemp("logdir")
    config = load_config(["debug"])
    write_cartpole_episodes(config, RunDir(logdir).wm_episodes, count=3, seed=1)
    write_cartpole_episodes(config, RunDir(logdir).expert_episodes("train"), count=2, seed=2)
    write_cartpole_episodes(config, RunDir(logdir).expert_episodes("val"), count=2, seed=3)
    return logdir


def _copy_data(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    for path in RunDir(source).data.rglob("*.npz"):
        if ".cache" in path.parts:
            continue
        dest = target / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())
    return target


def _steps_logged(logdir: pathlib.Path) -> list[int]:
    lines = RunDir(logdir).metrics("world_model").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


def test_phase_resumes_after_kill(data_logdir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    logdir = _copy_data(data_logdir, tmp_path / "run")
    flags = ["--configs", "debug", "--logdir", str(logdir), "--phase", "world_model",
             "--precision", "float32", "--world_model.steps", "100000", "--checkpoint_every", "5"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *flags], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = RunDir(logdir).wm_checkpoints
    deadline = time.time() + 240
    try:
        while tf.train.latest_checkpoint(str(checkpoints)) is None:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
    saved = int(tf.train.latest_checkpoint(str(checkpoints)).rsplit("-", 1)[1])
    assert saved > 0 and saved % 5 == 0

    config = load_config(["debug"], ["--precision", "float32",
                                     "--world_model.steps", str(saved + 5), "--checkpoint_every", "5"])
    assert run(config, RunDir(logdir)) == saved + 5
    steps = _steps_logged(logdir)
    resumed = steps[steps.index(saved) + 1:] if saved in steps else steps
    assert resumed and resumed[0] > saved and resumed[-1] == saved + 5
    assert int(tf.train.latest_checkpoint(str(checkpoints)).rsplit("-", 1)[1]) == saved + 5
    record = json.loads(RunDir(logdir).metrics("world_model").read_text().splitlines()[-1])
    for key in ("train/model_loss", "train/image_loss", "train/kl_loss", "train/prior_ent",
                "train/post_ent", "train/model_grad_norm", "train/updates_per_second"):
        assert np.isfinite(record[key]), key
    assert list(RunDir(logdir).world_model.glob("events.out.tfevents.*"))
    # Already done: a second call trains nothing and returns the same step.
    assert run(config, RunDir(logdir)) == saved + 5


def test_phase_logs_openloop_video_and_loads(data_logdir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    logdir = _copy_data(data_logdir, tmp_path / "run")
    config = load_config(["debug"], ["--precision", "float32"])  # 10 steps, video at step 10
    assert run(config, RunDir(logdir)) == config.world_model.steps
    tags = set()
    for event_file in RunDir(logdir).world_model.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                tags.add(value.tag)
                if value.tag == "openl_image":
                    assert value.image.encoded_image_string[:6] == b"GIF89a"
                    # truth, model, error stacked: 3 x 32 high; 2 val episodes side by side
                    assert (value.image.height, value.image.width) == (96, 64)
    assert {"openl_image", "eval/openl_mse", "train/model_loss"} <= tags
    # DITTO's margin (ditto_tf.margin) at the video interval, and its latest values kept.
    assert {f"eval/ditto_margin_{row}" for row in ROWS} <= tags
    latest = last_margins(RunDir(logdir))
    assert latest["step"] == config.world_model.steps and set(latest["margins"]) == set(ROWS)

    model = load_world_model(config, RunDir(logdir))
    # Same weights as a full restore (model + optimizer + step), and not a fresh initialisation.
    full = WorldModel(config, action_size=2)
    step = Checkpointer(RunDir(logdir).wm_checkpoints, model=full,
                        optimizer=WorldModelTrainer(full, config).optimizer).restore()
    assert step == config.world_model.steps
    fresh = WorldModel(config, action_size=2)
    assert len(model.variables) == len(full.variables) == len(fresh.variables)
    for a, b in zip(model.variables, full.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert any(not np.array_equal(a.numpy(), c.numpy()) for a, c in zip(model.variables, fresh.variables))


def test_load_world_model_without_checkpoint_names_the_dir(tmp_path: pathlib.Path) -> None:
    with pytest.raises(UserError, match=str(RunDir(tmp_path).wm_checkpoints)):
        load_world_model(load_config(["debug"]), RunDir(tmp_path))


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(data_logdir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    logdir = _copy_data(data_logdir, tmp_path / "run")
    config: Config = load_config(["debug"], ["--precision", "float32", "--checkpoint_every", "1",
                                             "--world_model.lr", "1e30", "--world_model.steps", "50"])
    with pytest.raises(UserError, match="Last good checkpoint") as error:
        run(config, RunDir(logdir))
    latest = tf.train.latest_checkpoint(str(RunDir(logdir).wm_checkpoints))
    assert "loss is" in str(error.value)
    if latest is not None:  # the kept checkpoint holds finite weights
        reader = tf.train.load_checkpoint(latest)
        for name, _ in tf.train.list_variables(latest):
            if name.startswith("model/"):
                assert np.all(np.isfinite(reader.get_tensor(name))), name
