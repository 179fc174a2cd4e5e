"""Experts: real RL Zoo agents (../shared/zoo or DITTO_ZOO) acting on real envs, the zoo's
Atari pipeline checked frame for frame against SB3's own AtariWrapper, rl-zoo3 training, and
the one-line errors for bad input."""

from __future__ import annotations

import os
import json
import pathlib
import subprocess
import sys
import tempfile
import time
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import yaml

from ditto_tf import experts, zoo
from ditto_tf.config import load_config
from ditto_tf.envs import make_env
from ditto_tf.errors import UserError

REPO = pathlib.Path(__file__).resolve().parent.parent
PONG = REPO.parent / "shared" / "experts"
requires_pong = pytest.mark.skipif(
    not (PONG / "ppo" / "PongNoFrameskip-v4_1" / "PongNoFrameskip-v4.zip").is_file(),
    reason="real Pong PPO expert not found at ../shared/experts/ppo/PongNoFrameskip-v4_1")


def zoo_config(zoo: pathlib.Path, names: list[str], *flags: str):
    return load_config(["debug", *names], ["--expert.folder", str(zoo), *flags])


def play(expert: experts.Expert, env, steps: int = 10_000) -> tuple[float, int]:
    obs, total, count = env.reset(), 0.0, 0
    expert.reset()
    while not obs["is_last"] and count < steps:
        obs = env.step(expert.act(env))
        total, count = total + float(obs["reward"]), count + 1
    return total, count


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
@pytest.mark.parametrize("names", [["cartpole"], ["lunarlander"], ["bipedalwalker"]])
def test_zoo_agents_load_and_act(zoo_dir, names, algo):
    config = zoo_config(zoo_dir, names)
    env = make_env(config, seed=0)
    expert = experts.load_expert(config, algo, env=env)
    assert expert.label == f"{algo}:{config.expert.env_id} (folder {zoo_dir})"
    env.reset()
    expert.reset()
    for _ in range(20):
        action = expert.act(env)
        assert env.act_space.contains(np.asarray(action, env.act_space.dtype))
        env.step(action)
    stats = expert.pipeline.normalize
    assert (stats is not None) == (names == ["bipedalwalker"])
    if stats is not None:  # the policy saw VecNormalize'd state vectors, not raw ones
        raw = np.asarray(env.native_obs, np.float64)
        expected = np.clip((raw - stats.obs_rms.mean) / np.sqrt(stats.obs_rms.var + stats.epsilon),
                           -stats.clip_obs, stats.clip_obs)
        expert.act(env)
        np.testing.assert_allclose(expert.last_obs[0], expected, rtol=1e-5, atol=1e-5)
        assert not np.allclose(expert.last_obs[0], raw)


def test_cartpole_ppo_scores_500(zoo_dir):
    config = zoo_config(zoo_dir, ["cartpole"], "--expert.deterministic", "true",
                        "--env.time_limit", "0")
    env = make_env(config, seed=1)
    expert = experts.load_expert(config, env=env)
    assert [play(expert, env)[0] for _ in range(2)] == [500.0, 500.0]


def test_batched_acting_matches_single(zoo_dir):
    config = zoo_config(zoo_dir, ["bipedalwalker"], "--expert.deterministic", "true")
    envs = [make_env(config, seed=s) for s in (3, 4)]
    batched = experts.load_expert(config, env=envs[0])
    single = experts.load_expert(config, env=envs[0])
    for env in envs:
        env.reset()
    for _ in range(5):
        actions = batched.act_batch(envs)
        np.testing.assert_allclose(actions[0], single.act(envs[0]), rtol=1e-5, atol=1e-6)
        for env, action in zip(envs, actions):
            env.step(action)


def test_random_expert(tiny_config):
    for names in (["cartpole"], ["bipedalwalker"]):
        config = load_config(["debug", *names], ["--expert.source", "random"])
        env = make_env(config, seed=0)
        expert = experts.load_expert(config, env=env)
        assert expert.label == experts.expert_label(config) == "random"
        env.reset()
        actions = [expert.act(env) for _ in range(50)]
        assert all(env.act_space.contains(np.asarray(a, env.act_space.dtype)) for a in actions)
        assert len({str(a) for a in actions}) > 1


# ---------------------------------------------------------------- bad input

def test_bad_folders(zoo_dir, tmp_path):
    def error(folder, *flags) -> str:
        with pytest.raises(UserError) as info:
            experts.load_expert(zoo_config(folder, ["cartpole"], *flags))
        return str(info.value)

    assert "no such folder" in error(tmp_path / "missing")
    (tmp_path / "dqn").mkdir()
    message = error(tmp_path)
    assert "no ppo/ folder" in message and "dqn" in message
    run = tmp_path / "ppo" / "CartPole-v1_1"
    (run / "CartPole-v1").mkdir(parents=True)
    (tmp_path / "ppo" / "Acrobot-v1_1").mkdir()
    assert "Acrobot-v1_1" in error(tmp_path, "--expert.env_id", "Pendulum-v1")
    message = error(tmp_path)
    assert "no CartPole-v1.zip" in message and "found: CartPole-v1" in message
    assert "CartPole-v1_7 not found" in error(tmp_path, "--expert.run", "7")
    (run / "CartPole-v1.zip").write_text("not a zip")
    assert "not an SB3 model (not a zip file)" in error(tmp_path)
    with zipfile.ZipFile(run / "CartPole-v1.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    assert "not an SB3 model (no 'data'" in error(tmp_path)
    assert "'foo': not an rl-zoo3 algorithm" in error(zoo_dir, "--expert.algo", "foo")


def test_action_space_mismatch(zoo_dir):
    for names, flags, culprit in [
        (["lunarlander"], ["--expert.env_id", "CartPole-v1"], "Discrete(2) does not match"),
        (["cartpole"], ["--expert.env_id", "BipedalWalker-v3"], "Box(-1.0, 1.0, (4,)"),
    ]:
        with pytest.raises(UserError, match=culprit.replace("(", r"\(").replace(")", r"\)")):
            experts.load_expert(zoo_config(zoo_dir, names, *flags))


def test_zoo_yaml_is_read_without_running_code(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError, match="not a readable RL Zoo YAML"):
        zoo.read_zoo_yaml(path)


# ---------------------------------------------------------------- hub

@pytest.mark.parametrize("setting", [("HF_ENDPOINT", "http://127.0.0.1:9"), ("HF_HUB_OFFLINE", "1"),
                                     None])
def test_hub_offline_fails_fast(tmp_path, monkeypatch, setting):
    if setting:
        monkeypatch.setenv(*setting)
    config = load_config(["debug", "cartpole"], ["--expert.source", "hub",
                                                 "--expert.cache", str(tmp_path)])
    start = time.time()
    try:
        expert = experts.load_expert(config)
    except UserError as e:
        assert time.time() - start < 15
        assert "--expert.source folder --expert.folder PATH" in str(e) and "\n" not in str(e)
        assert not list((tmp_path / "hub" / "sb3").glob("*/*/*.zip"))
    else:  # this machine is online: the real download must have produced a working expert
        assert setting is None and expert.info["path"].startswith(str(tmp_path))


# ---------------------------------------------------------------- local training

def test_train_source_produces_zoo_layout(tmp_path, capsys):
    flags = ["--expert.source", "train", "--expert.cache", str(tmp_path), "--expert.train_steps", "2000"]
    config = load_config(["debug", "cartpole"], flags)
    sb3_logs = set(pathlib.Path(tempfile.gettempdir()).glob("SB3-*"))
    expert = experts.load_expert(config)
    # SB3's default logger makes a /tmp/SB3-<timestamp>/ folder per learn(): none may appear
    assert set(pathlib.Path(tempfile.gettempdir()).glob("SB3-*")) == sb3_logs
    out = capsys.readouterr().out
    assert "2,000 steps" in out and "under a minute" in out  # the estimate, before training
    run = tmp_path / "trained" / "2000steps_seed0" / "ppo" / "CartPole-v1_1"
    for name in ("CartPole-v1.zip", "CartPole-v1/config.yml", "CartPole-v1/args.yml"):
        assert (run / name).is_file(), name
    assert zoo.read_zoo_yaml(run / "CartPole-v1" / "config.yml")["n_envs"] == 8  # zoo's own
    provenance = json.loads((run / "training.json").read_text())
    assert provenance["steps"] >= 2000 and provenance["seconds"] >= 0
    assert provenance["hyperparameters"].endswith("rl_zoo3/hyperparams/ppo.yml")
    assert expert.info["trained_steps"] >= 2000
    assert not list(run.parent.glob(".*"))  # no work or staging folders left behind
    env = make_env(config, seed=0)
    env.reset()
    assert env.act_space.contains(expert.act(env))
    # the same request loads the finished run again without training
    again = experts.load_expert(config)
    assert "training" not in capsys.readouterr().out and again.info["path"] == str(run)
    # and it is a zoo folder like any other
    folder = load_config(["debug", "cartpole"], ["--expert.folder", str(run.parent.parent)])
    assert experts.load_expert(folder).info["path"] == str(run)


def test_train_source_resumes_after_kill(tmp_path):
    steps = 6_000  # a checkpoint every 600 steps (rounded up to 256-step rollouts)
    script = (f"from ditto_tf.config import load_config; from ditto_tf import experts; "
              f"experts.load_expert(load_config(['debug', 'cartpole'], ['--expert.source', 'train', "
              f"'--expert.cache', {str(tmp_path)!r}, '--expert.train_steps', '{steps}']))")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    work = tmp_path / "trained" / f"{steps}steps_seed0" / "ppo" / ".CartPole-v1_1.work"
    deadline = time.time() + 120
    while not (work / "checkpoint.zip").is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert (work / "checkpoint.zip").is_file(), "training wrote no checkpoint"
    done = zoo.load_model(work / "checkpoint.zip", "ppo").num_timesteps
    assert 0 < done < steps
    config = load_config(["debug", "cartpole"], ["--expert.source", "train", "--expert.cache",
                                                 str(tmp_path), "--expert.train_steps", str(steps)])
    expert = experts.load_expert(config)
    assert steps <= expert.info["trained_steps"] < steps + 256  # continued, not restarted
    assert expert.model.num_timesteps == expert.info["trained_steps"]


# ---------------------------------------------------------------- Atari

def _zoo_atari_run(folder: pathlib.Path, env_id: str, seed: int = 0) -> pathlib.Path:
    """An untrained CnnPolicy PPO agent saved in the zoo layout with the zoo's Atari config."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.atari_wrappers import AtariWrapper
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

    hyper = zoo.zoo_hyperparams("ppo", env_id)
    venv = VecTransposeImage(VecFrameStack(DummyVecEnv([lambda: AtariWrapper(gym.make(env_id))]), 4))
    model = PPO("CnnPolicy", venv, n_steps=16, batch_size=16, seed=seed, device="cpu")
    run = folder / "ppo" / f"{env_id}_1"
    (run / env_id).mkdir(parents=True)
    model.save(str(run / env_id))
    (run / env_id / "config.yml").write_text(yaml.safe_dump(hyper))
    venv.close()
    return run


@pytest.mark.parametrize("life_done", [False, True])
def test_atari_pipeline_matches_zoo_wrappers(tmp_path, life_done):
    """Our env + the expert's emulation see exactly what SB3's AtariWrapper + VecFrameStack give,
    frame for frame, through FIRE resets and life losses (Breakout: 5 lives, FIRE), whether our
    episodes run to game over or (env.life_done) end at each life loss."""
    from stable_baselines3.common.atari_wrappers import AtariWrapper
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

    env_id = "BreakoutNoFrameskip-v4"
    zoo.runnable_id(env_id)  # registers the ALE envs
    _zoo_atari_run(tmp_path, env_id)
    config = load_config(["debug", "atari", "breakout"], [
        "--expert.folder", str(tmp_path), "--env.noops", "0", "--env.time_limit", "0",
        "--env.life_done", str(life_done)])
    env = make_env(config, seed=5)
    expert = experts.load_expert(config, env=env)
    wrapped = VecTransposeImage(VecFrameStack(DummyVecEnv(
        [lambda: AtariWrapper(gym.make(env_id), noop_max=0)]), 4))
    wrapped.seed(5)
    zoo_obs = wrapped.reset()
    env.reset()
    expert.reset()
    forced, compared, lives_lost = [], 0, 0
    while True:
        lives = env.info["lives"]
        action = expert.act(env)
        if expert.last_obs is None:  # a reset action the zoo's wrappers take by themselves
            forced.append(action)
            obs = env.step(action)
        else:
            np.testing.assert_array_equal(expert.last_obs[0], zoo_obs[0])
            compared += 1
            obs = env.step(action)
            zoo_obs, _, _, _ = wrapped.step(np.array([action]))
        lives_lost += env.info["lives"] < lives
        expert.last_obs = None
        if obs["is_last"] and env.info["game_over"]:
            break
        if obs["is_last"]:  # life_done: the next episode continues the same game
            env.reset()
            expert.reset()
    assert compared > 50 and lives_lost == 5
    assert forced == [1, 2] + [0, 1, 2] * 4  # FIRE reset at start; NOOP + FIRE reset per life lost


@requires_pong
def test_pong_expert_plays_real_pong():
    config = load_config(["debug", "atari", "pong"], ["--expert.folder", str(PONG),
                                                      "--env.time_limit", "0"])
    env = make_env(config, seed=0)
    expert = experts.load_expert(config, env=env)
    assert expert.action_space.n == env.act_space.n == 6 and not expert.deterministic
    assert expert.label == f"ppo:PongNoFrameskip-v4 (folder {PONG})"
    env.reset()
    expert.reset()
    assert [expert.act(env) for _ in range(2)] == [1, 2]  # FIRE reset, as in training
    total, steps = play(expert, env)
    assert expert.last_obs.shape == (1, 4, 84, 84) and expert.last_obs.dtype == np.uint8
    assert total > -15 and steps > 500  # a random agent loses 21:0 or 21:1


@requires_pong
def test_pong_expert_rejects_full_action_set():
    config = load_config(["debug", "atari", "pong"], ["--expert.folder", str(PONG),
                                                      "--env.all_actions", "true"])
    with pytest.raises(UserError, match=r"Discrete\(6\) does not match env ALE/Pong-v5's Discrete\(18\)"):
        experts.load_expert(config)
