"""`--phase collect` with real envs and the real RL Zoo agents (ditto_tf/data/collect.py)."""

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

import train
from ditto_tf import envs
from ditto_tf.data import collect, episodes
from ditto_tf.driver import RandomActor
from ditto_tf.rundir import RunDir

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPERTS_DIR = REPO_ROOT.parent / "shared" / "experts"
PONG_EXPERT = EXPERTS_DIR / "ppo" / "PongNoFrameskip-v4_1" / "PongNoFrameskip-v4.zip"


def collect_cli(logdir: pathlib.Path, *flags: str, configs: tuple[str, ...] = ("cartpole", "debug")) -> int:
    return train.main(["--configs", *configs, "--logdir", str(logdir), "--phase", "collect", *flags])


def manifest(logdir: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in RunDir(logdir).manifest.read_text().splitlines()]


def check_set(logdir: pathlib.Path, name: str, count: int, image: tuple[int, ...], actions: int) -> list[dict]:
    """Every file of the set loads, is a whole episode, and matches its manifest line."""
    paths = episodes.list_episodes(RunDir(logdir).episodes(name))
    assert [episodes.parse_name(p)[0] for p in paths] == list(range(count))
    entries = {e["file"]: e for e in manifest(logdir) if e["set"] == name}
    assert len(entries) == count
    loaded = []
    for path in paths:
        episode = episodes.load_episode(path)
        assert episode["image"].shape[1:] == image and episode["action"].shape[1] == actions
        assert not episode["action"][0].any() and episode["is_first"][0] and episode["is_last"][-1]
        if actions > 1:  # discrete: one-hot after the first step
            np.testing.assert_array_equal(episode["action"][1:].sum(-1), 1.0)
        entry = entries[path.relative_to(RunDir(logdir).data).as_posix()]
        assert entry["length"] == len(episode["image"])
        assert entry["return"] == pytest.approx(float(episode["reward"].sum()))
        assert entry["seed"] == collect.episode_seed(0, name, entry["index"])
        loaded.append(entry)
    return loaded


def test_collect_cartpole_zoo_expert_and_top_up(zoo_dir, tmp_path, capsys):
    # wm data from the expert with every action replaced at random (epsilon 1): random play,
    # while the expert still sees every frame.
    flags = ["--expert.folder", str(zoo_dir), "--data.wm_policy", "epsilon", "--data.wm_epsilon",
             "1.0", "--data.wm_episodes", "2", "--data.expert_train", "2", "--data.expert_val", "1"]
    assert collect_cli(tmp_path, *flags) == 0
    out = capsys.readouterr().out
    wm = check_set(tmp_path, "wm", 2, (32, 32, 1), 2)
    train_set = check_set(tmp_path, "expert_train", 2, (32, 32, 1), 2)
    val = check_set(tmp_path, "expert_val", 1, (32, 32, 1), 2)
    assert all("epsilon 1 random" in e["agent"] for e in wm) and all(e["agent"].startswith("ppo:CartPole-v1") for e in val)
    summary = RunDir(tmp_path).collect_summary()
    expert_returns = [e["return"] for e in train_set + val]
    assert summary["expert"]["episodes"] == 3
    assert summary["expert"]["mean"] == pytest.approx(np.mean(expert_returns))
    assert summary["expert"]["std"] == pytest.approx(np.std(expert_returns))
    assert f"{summary['expert']['mean']:.2f} +- {summary['expert']['std']:.2f}" in out
    assert summary["expert"]["mean"] > 2 * summary["wm"]["mean"]  # the zoo PPO agent beats random
    assert len({e["seed"] for e in manifest(tmp_path)}) == 5  # every episode its own seed

    before = {p: p.stat().st_mtime_ns for p in RunDir(tmp_path).data.rglob("*.npz")}
    flags[flags.index("--data.expert_train") + 1] = "3"
    assert collect_cli(tmp_path, *flags) == 0
    after = {p: p.stat().st_mtime_ns for p in RunDir(tmp_path).data.rglob("*.npz")}
    assert all(after[p] == t for p, t in before.items())  # nothing redone
    assert len(after) == len(before) + 1
    check_set(tmp_path, "expert_train", 3, (32, 32, 1), 2)
    assert RunDir(tmp_path).collect_summary()["expert"]["episodes"] == 4


def test_top_up_and_rebuild_lost_manifest_lines(tmp_path):
    flags = ["--data.wm_policy", "random", "--data.expert_train", "0", "--data.expert_val", "0"]
    assert collect_cli(tmp_path, *flags, "--data.wm_episodes", "3") == 0
    first = check_set(tmp_path, "wm", 3, (32, 32, 1), 2)
    # A kill between an episode write and the manifest write: the line must come back.
    path = RunDir(tmp_path).manifest
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines()[:-1]))
    assert collect_cli(tmp_path, *flags, "--data.wm_episodes", "5") == 0
    second = check_set(tmp_path, "wm", 5, (32, 32, 1), 2)
    assert second[:3] == first
    # Same seed and index: the same episode, so a fresh logdir reproduces it.
    other = tmp_path / "other"
    assert collect_cli(other, *flags, "--data.wm_episodes", "5") == 0
    assert [e["return"] for e in check_set(other, "wm", 5, (32, 32, 1), 2)] == [e["return"] for e in second]


def test_vector_config_collects_states_without_images(tmp_path, capsys):
    """With the `vector` block no cnn key matches: episodes hold the float32 state and no image
    (nothing is rendered), and topping up a pixel logdir with it is a one-line error."""
    flags = ["--data.wm_policy", "random", "--data.expert_train", "0", "--data.expert_val", "0",
             "--data.wm_episodes", "2"]
    assert collect_cli(tmp_path / "vec", *flags, configs=("cartpole", "vector", "debug")) == 0
    paths = episodes.list_episodes(RunDir(tmp_path / "vec").wm_episodes)
    assert len(paths) == 2
    for path in paths:
        episode = episodes.load_episode(path)
        assert "image" not in episode
        assert episode["vector"].dtype == np.float32 and episode["vector"].shape[1:] == (4,)
        assert len(episode["vector"]) == len(episode["action"]) == episodes.parse_name(path)[1]
        assert np.abs(episode["vector"][:, 2]).max() > 0.0  # the pole angle, really recorded
    # the default (pixel) config stores no vector: files stay as they were
    assert collect_cli(tmp_path / "pix", *flags) == 0
    pixel = episodes.load_episode(episodes.list_episodes(RunDir(tmp_path / "pix").wm_episodes)[0])
    assert "vector" not in pixel and pixel["image"].shape[1:] == (32, 32, 1)
    capsys.readouterr()
    top_up = [*flags[:-2], "--data.wm_episodes", "3"]
    assert collect_cli(tmp_path / "pix", *top_up, configs=("cartpole", "vector", "debug")) == 2
    err = capsys.readouterr().err.strip()  # the run directory's pinned config refuses first
    assert "world_model.encoder.mlp_keys" in err and "\n" not in err
    # the same episodes in a directory without their config: collect's own check names the file
    RunDir(tmp_path / "pix").config_path.unlink()
    assert collect_cli(tmp_path / "pix", *top_up, configs=("cartpole", "vector", "debug")) == 2
    err = capsys.readouterr().err.strip()
    assert "000001-" in err and "['image']" in err and "['vector']" in err and "\n" not in err


def test_killed_collect_leaves_no_partial_file_and_resumes(tmp_path):
    command = [sys.executable, str(REPO_ROOT / "train.py"), "--configs", "cartpole",
               "--logdir", str(tmp_path), "--phase", "collect", "--data.wm_policy", "random",
               "--data.wm_episodes", "100000", "--data.expert_train", "0", "--data.expert_val", "0"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    wm_dir = RunDir(tmp_path).wm_episodes
    deadline = time.time() + 60
    while time.time() < deadline and len(list(wm_dir.glob("*.npz"))) < 5:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(list(wm_dir.glob("*.npz"))) >= 5, "collect wrote no episodes within 60 s"
    paths = episodes.list_episodes(wm_dir)
    for path in paths:  # every file under a final name is a complete, valid episode
        episodes.load_episode(path)
    count = len(paths)
    assert collect_cli(tmp_path, "--data.wm_policy", "random", "--data.wm_episodes", str(count + 2),
                       "--data.expert_train", "0", "--data.expert_val", "0",
                       configs=("cartpole",)) == 0
    check_set(tmp_path, "wm", count + 2, (64, 64, 1), 2)
    assert not list(wm_dir.glob(".*")), "temp files of the killed write were left behind"


@pytest.mark.parametrize("flags, culprit", [
    (["--task", "gym_CartPol-v1"], "CartPol-v1"),
    (["--expert.folder", "/nonexistent/zoo"], "/nonexistent/zoo"),
    (["--data.wm_policy", "epsilon", "--data.wm_epsilon", "2.0"], "wm_epsilon"),
    (["--expert.source", "hub", "--expert.cache", "{tmp}/cache"], "hub"),
])
def test_bad_input_is_one_line_and_writes_no_data(tmp_path, capsys, monkeypatch, flags, culprit):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed port: the hub is offline
    start = time.time()
    assert collect_cli(tmp_path, *[f.format(tmp=tmp_path) for f in flags]) == 2
    assert time.time() - start < 60  # the offline hub fails within seconds, not minutes
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and culprit in err
    assert not RunDir(tmp_path).data.exists()


def test_expert_action_space_mismatch_writes_no_data(zoo_dir, tmp_path, capsys):
    # The zoo's LunarLander agent has 4 actions; CartPole has 2.
    assert collect_cli(tmp_path, "--expert.folder", str(zoo_dir), "--expert.env_id",
                       "LunarLander-v2") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not RunDir(tmp_path).data.exists()


def test_zip_that_is_not_an_sb3_model_writes_no_data(tmp_path, capsys):
    folder = tmp_path / "zoo" / "ppo" / "CartPole-v1_1"
    (folder / "CartPole-v1").mkdir(parents=True)
    (folder / "CartPole-v1.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip archive
    logdir = tmp_path / "run"
    assert collect_cli(logdir, "--expert.folder", str(tmp_path / "zoo")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "CartPole-v1.zip" in err
    assert not RunDir(logdir).data.exists()


@pytest.mark.skipif(not PONG_EXPERT.exists(), reason=f"Atari Pong expert not found at {PONG_EXPERT}")
def test_collect_atari_pong_expert(tmp_path):
    assert collect_cli(tmp_path, "--expert.folder", str(EXPERTS_DIR), "--data.wm_episodes", "1",
                       "--data.expert_train", "1", "--data.expert_val", "0",
                       configs=("atari", "pong", "debug")) == 0
    (entry,) = check_set(tmp_path, "expert_train", 1, (32, 32, 1), 6)
    assert entry["length"] == 201  # debug time limit: 200 agent steps after the reset frame
    check_set(tmp_path, "wm", 1, (32, 32, 1), 6)


def test_atari_collect_records_full_games_even_with_life_done(tmp_path):
    flags = ["--data.wm_policy", "random", "--data.wm_episodes", "1", "--data.expert_train", "0",
             "--data.expert_val", "0", "--env.time_limit", "5000"]
    configs = ("atari", "beamrider", "debug")
    assert collect_cli(tmp_path, *flags, "--env.life_done", "true", configs=configs) == 0
    (entry,) = check_set(tmp_path, "wm", 1, (32, 32, 1), 9)
    episode = episodes.load_episode(RunDir(tmp_path).data / entry["file"])
    assert episode["is_terminal"][-1] and episode["is_last"].sum() == 1
    # The same seed with life_done off is the same game: BeamRider gives 3 lives, so a
    # life-loss episode would have ended much earlier.
    env = envs.Atari("BeamRider", size=(32, 32), time_limit=5000, seed=entry["seed"])
    obs, length, actor = env.reset(seed=entry["seed"]), 1, RandomActor(env.act_space)
    actor.reset(0, entry["seed"])
    while not obs["is_last"]:
        obs, length = env.step(actor.sample()), length + 1
    assert env.info["game_over"] and length == entry["length"]
