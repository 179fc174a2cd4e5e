"""The agent phases end to end on real pixel CartPole episodes and a real (tiny) world model:
each phase trains, logs, checkpoints, resumes; its policy acts in the true env; the expert latent
cache follows the world-model checkpoint."""

from __future__ import annotations

import importlib
import json
import pathlib
from typing import Any, Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

from ditto_tf.agents.actor_critic import ActorCritic, action_dist
from ditto_tf.agents.ditto import DittoReward, latent_reward
from ditto_tf.agents.policy import load_policy
from ditto_tf.agents.runner import prepare_latent
from ditto_tf.checkpoints import Checkpointer
from ditto_tf.config import Config, load_config
from ditto_tf.envs import VecEnv
from ditto_tf.errors import UserError
from ditto_tf.wm_training import load_world_model
from ditto_tf.wm_training import run as train_world_model
from test_world_model import write_cartpole_episodes
from ditto_tf.rundir import RunDir

AGENTS = ("ditto", "dgail", "dbc", "bc")


def balancing_controller(epsilon: float) -> Callable[[Any], Any]:
    """A pole-balancing controller (push towards the side the pole falls to) with epsilon-random
    actions: an expert whose action follows the state. Returns `env -> actor`."""

    class Controller:
        def __init__(self, env: Any):
            self.env, self.rng = env, np.random.default_rng()

        def reset(self, index: int, seed: int | None = None) -> None:
            self.rng = np.random.default_rng(seed)

        def act(self, obs: Any) -> list[int]:
            _, _, angle, angular_velocity = self.env.native_obs
            action = int(angle + 0.5 * angular_velocity > 0)
            if self.rng.random() < epsilon:
                action = int(self.rng.integers(self.env.action_size))
            return [action]

    return Controller


def agent_config(steps: int, *extra: str) -> Config:
    return load_config(["cartpole", "debug"], [
        "--precision", "float32", "--log_every", "2", "--checkpoint_every", "2",
        "--agent.steps", str(steps), "--dbc.steps", str(steps), "--bc.steps", str(steps), *extra])


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Real CartPole episodes in the collect layout and a world model trained on them."""
    logdir = tmp_path_factory.mktemp("agents")
    config = agent_config(0)
    write_cartpole_episodes(config, RunDir(logdir).wm_episodes, count=3, seed=1)
    write_cartpole_episodes(config, RunDir(logdir).wm_episodes, count=2, seed=4,
                            actor=balancing_controller(0.2), first_index=3)
    write_cartpole_episodes(config, RunDir(logdir).expert_episodes("train"), count=2, seed=2,
                            actor=balancing_controller(0.0))
    write_cartpole_episodes(config, RunDir(logdir).expert_episodes("val"), count=2, seed=3,
                            actor=balancing_controller(0.0))
    train_world_model(config, RunDir(logdir))
    return logdir


def logged_steps(path: pathlib.Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("agent", AGENTS)
def test_phase_trains_logs_checkpoints_resumes_and_acts(logdir: pathlib.Path, agent: str) -> None:
    phase = importlib.import_module(f"ditto_tf.agents.{agent}").run
    phase(agent_config(4), RunDir(logdir))
    run = RunDir(logdir)
    assert logged_steps(run.metrics(agent)) == [2, 4]
    phase(agent_config(6), RunDir(logdir))  # a new process would do the same: resume from ckpt-4
    assert logged_steps(run.metrics(agent)) == [2, 4, 6]
    rows = [json.loads(line) for line in run.metrics(agent).read_text().splitlines()]
    assert "val/action_accuracy" in rows[-1] and 0.0 <= rows[-1]["val/action_accuracy"] <= 1.0
    if agent != "bc":
        assert 0.0 <= rows[-1]["val/latent_distance"] <= 2.0
    if agent in ("ditto", "dgail"):
        assert {"train/reward_mean", "train/return_mean", "train/actor_entropy",
                "train/critic_loss", "train/actor_grad_norm"} <= rows[-1].keys()
    if agent == "dgail":
        assert {"train/disc_expert_accuracy", "train/disc_agent_accuracy"} <= rows[-1].keys()
    assert list(run.phase_dir(agent).glob("events.out.tfevents.*"))
    kept = Checkpointer(run.checkpoints(agent)).checkpoints
    assert [pathlib.Path(p).name for p in kept] == ["ckpt-2", "ckpt-4", "ckpt-6"]

    # The policy of a given checkpoint acts in the true env, batched over envs.
    config = agent_config(6)
    policy = load_policy(config, RunDir(logdir), agent, kept[0])
    envs = VecEnv.make(config, 2, seed=5)
    obs = VecEnv.stack(envs.reset())
    for _ in range(5):
        actions = policy.act(obs)
        assert actions.shape == (2, 2) and np.all(actions.sum(-1) == 1.0)
        obs = VecEnv.stack(envs.step(list(actions)))
    envs.close()
    with pytest.raises(UserError, match="not found"):
        policy.load(str(run.checkpoints(agent) / "ckpt-99"))


def test_latent_policy_filters_with_the_actions_really_taken(logdir: pathlib.Path) -> None:
    """When another actor drives (the expert in benchmarks/onpolicy_agreement.py), the policy's
    filter must condition on the action taken, not on its own choice (`record_actions`)."""
    config = agent_config(2)
    importlib.import_module("ditto_tf.agents.dbc").run(config, RunDir(logdir))
    envs = VecEnv.make(config, 1, seed=7)
    first = VecEnv.stack(envs.reset())
    second = VecEnv.stack(envs.step([np.array([1.0, 0.0], np.float32)]))
    envs.close()
    policy = load_policy(config, RunDir(logdir), "dbc")
    policy.act(first)
    start = dict(policy.state)
    deter = {}
    for name, taken in (("left", 0), ("right", 1), ("right again", 1)):
        policy.state = dict(start)
        policy.record_actions(np.eye(2, dtype=np.float32)[[taken]])
        policy.act(second)
        deter[name] = policy.state["deter"].numpy()  # h is deterministic given state and action
    np.testing.assert_array_equal(deter["right"], deter["right again"])
    assert np.abs(deter["left"] - deter["right"]).max() > 1e-4


def test_ditto_imagined_reward_rises(logdir: pathlib.Path) -> None:
    """DITTO's mean imagined reward (eq. 8 on h, the authors' code's latent) rises with training.

    The expert is a pole-balancing controller, so its next latent follows from its state. The
    reward is measured with little noise: 16 rollouts from every expert start window, actions
    sampled from the actor. In this tiny world model (10 updates) an action changes the next
    latent only a little, so the rise is small and varies with the actor's seed: the test
    averages the rise over three independently trained actors.
    """
    config = agent_config(0, "--agent.batch", "64", "--agent.horizon", "10",
                          "--ditto.reward_latent", "deter")
    setup = prepare_latent(config, RunDir(logdir))
    horizon = config.agent.horizon
    valid = setup.train.window_starts(horizon + 1)
    windows = setup.states(setup.train.windows(valid, horizon + 1))
    expert = {k: tf.concat([v] * 16, 0) for k, v in windows.items()}  # 16 draws per window
    rises = []
    for seed in range(3):
        keras.utils.set_random_seed(seed)
        agent = ActorCritic(config, setup.wm, setup.act_dim, setup.discrete, DittoReward("deter"))

        @tf.function
        def mean_reward() -> tf.Tensor:
            state = {k: v[:, 0] for k, v in expert.items()}
            states = [state]
            for _ in range(horizon):
                action = action_dist(agent.actor(setup.wm.rssm.get_feat(state)), True).sample()
                state = setup.wm.rssm.img_step(state, action)
                states.append(state)
            seq = {k: tf.stack([s[k] for s in states], 1) for k in state}
            return tf.reduce_mean(latent_reward(seq, expert, "deter"))

        before = float(mean_reward())
        after = []
        for step in range(150):
            batch = setup.train.sample_windows(valid, 64, horizon + 1, seed, step)
            agent.update(setup.states(batch), step)
            if step >= 100 and step % 10 == 9:
                after.append(float(mean_reward()))
        rises.append(float(np.mean(after)) - before)
    assert np.mean(rises) > 0, f"reward changes over training per actor: {rises}"


def test_latent_cache_follows_the_world_model_checkpoint(logdir: pathlib.Path) -> None:
    config = agent_config(2)
    first = prepare_latent(config, RunDir(logdir))
    keys = [p.name for p in RunDir(logdir).latents.iterdir()]
    assert len(keys) == 1 and len(list((RunDir(logdir).latents / keys[0]).glob("*.npz"))) == 4
    assert first.train.num_episodes == 2 and first.val.num_episodes == 2
    # the expert action at step t is the file's action[t + 1]; the last step has none
    from ditto_tf.data.episodes import load_episodes

    episode = load_episodes(RunDir(logdir).expert_episodes("train"), limit=1)[0]
    np.testing.assert_array_equal(first.train.action[: len(episode["action"]) - 1], episode["action"][1:])
    assert not first.train.has_action[len(episode["action"]) - 1]
    # A new world-model checkpoint: new cache key, the stale cache is removed.
    wm = load_world_model(config, RunDir(logdir))
    Checkpointer(RunDir(logdir).wm_checkpoints, config.keep_checkpoints, model=wm).save(1000)
    prepare_latent(config, RunDir(logdir))
    new_keys = [p.name for p in RunDir(logdir).latents.iterdir()]
    assert len(new_keys) == 1 and new_keys != keys and new_keys[0].startswith("ckpt-1000")


def test_missing_world_model_is_a_one_line_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(UserError, match="world_model/checkpoints"):
        importlib.import_module("ditto_tf.agents.ditto").run(agent_config(2), RunDir(tmp_path))
    with pytest.raises(UserError, match="expert/train"):
        importlib.import_module("ditto_tf.agents.bc").run(agent_config(2), RunDir(tmp_path))
