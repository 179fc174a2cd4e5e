"""Agent building blocks: eq. 8 reward, lambda-returns, target critic copies, D-GAIL reward and
discriminator, D-BC fitting a known map, and checkpoint round trips of every agent's state.

World models here are real `WorldModel`s of the `debug` size with fresh weights (the pieces
under test do not depend on training); trained-model behaviour is in test_agent_phases.py.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from ditto_tf.agents.actor_critic import ActorCritic, action_dist, lambda_return
from ditto_tf.agents.bc import BC, FrameData
from ditto_tf.agents.dbc import DBC
from ditto_tf.agents.dgail import GailReward, gail_reward
from ditto_tf.agents.ditto import DittoReward, ditto_reward, latent_reward
from ditto_tf.agents.latents import ExpertLatents, to_state
from ditto_tf.agents.runner import LatentSetup, train_agent
from ditto_tf.checkpoints import Checkpointer
from ditto_tf.config import Config, load_config
from ditto_tf.errors import UserError
from ditto_tf.world_model import WorldModel
from ditto_tf.rundir import RunDir

ACTIONS = 2


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(["debug"], ["--precision", "float32", "--agent.target_every", "3"])


@pytest.fixture(scope="module")
def wm(config: Config) -> WorldModel:
    return WorldModel(config, ACTIONS)


def random_windows(config: Config, wm: WorldModel, batch: int, length: int, seed: int) -> dict:
    rssm = config.world_model.rssm
    rng = np.random.default_rng(seed)
    deter = rng.normal(size=(batch, length, rssm.deter)).astype(np.float32)
    stoch = rng.integers(rssm.discrete, size=(batch, length, rssm.stoch))
    return to_state(wm.rssm, tf.constant(deter), tf.constant(stoch), rssm.discrete)


# ----------------------------------------------------------------------------- DITTO reward

def test_ditto_reward_identical_symmetric_bounded() -> None:
    rng = np.random.default_rng(0)
    a = tf.constant(rng.normal(size=(1000, 16)), tf.float32)
    b = tf.constant(rng.normal(size=(1000, 16)) * rng.uniform(0.1, 10, size=(1000, 1)), tf.float32)
    np.testing.assert_allclose(ditto_reward(a, a).numpy(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(ditto_reward(a, b).numpy(), ditto_reward(b, a).numpy(), rtol=1e-6)
    r = ditto_reward(a, b).numpy()
    assert np.all(r <= 1.0 + 1e-6) and np.all(r >= -1.0 - 1e-6)
    np.testing.assert_allclose(ditto_reward(a, -a).numpy(), -1.0, rtol=1e-6)
    # Against the formula by hand for one pair.
    x, y = np.array([1.0, 2.0, 2.0]), np.array([0.0, 3.0, 4.0])
    expected = (x @ y) / max(np.linalg.norm(x), np.linalg.norm(y)) ** 2  # 14 / 25
    assert float(ditto_reward(tf.constant(x, tf.float32), tf.constant(y, tf.float32))) == pytest.approx(expected)


@pytest.mark.parametrize("scale", [0.25, 0.5, 2.0, 4.0])
def test_ditto_reward_scaling(scale: float) -> None:
    """r(z, c z) = c / max(1, c)^2: c for c < 1, 1/c for c > 1 (not scale invariant, unlike cosine)."""
    z = tf.constant(np.random.default_rng(1).normal(size=(50, 8)), tf.float32)
    expected = scale / max(1.0, scale) ** 2
    np.testing.assert_allclose(ditto_reward(z, scale * z).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(ditto_reward(scale * z, z).numpy(), expected, rtol=1e-5)


def test_ditto_reward_on_onehot_latents_is_fraction_of_matching_categoricals(config, wm) -> None:
    states = random_windows(config, wm, 4, 3, seed=2)
    other = dict(states)
    stoch = states["stoch"].numpy().copy()
    stoch[:, 1:, 0] = np.roll(stoch[:, 1:, 0], 1, axis=-1)  # change the first categorical only
    other["stoch"] = tf.constant(stoch)
    rewards = latent_reward(other, states, "stoch").numpy()
    assert rewards.shape == (4, 2)  # H = length - 1 rewards, for steps 1..H
    np.testing.assert_allclose(rewards, 1.0 - 1.0 / config.world_model.rssm.stoch, rtol=1e-6)
    np.testing.assert_allclose(latent_reward(other, states, "deter").numpy(), 1.0, rtol=1e-6)
    with pytest.raises(UserError, match="reward_latent"):
        DittoReward("pixels")


# ----------------------------------------------------------------------------- lambda-returns

def test_lambda_return_matches_hand_computation() -> None:
    rewards = np.array([[1.0, 0.0, 2.0]], np.float32)
    values = np.array([[0.5, 1.0, -1.0, 3.0]], np.float32)
    gamma, lam = 0.9, 0.8
    v3 = 3.0  # V_H = v(s_H)
    v2 = 2.0 + gamma * ((1 - lam) * 3.0 + lam * v3)
    v1 = 0.0 + gamma * ((1 - lam) * -1.0 + lam * v2)
    v0 = 1.0 + gamma * ((1 - lam) * 1.0 + lam * v1)
    out = lambda_return(tf.constant(rewards), tf.constant(values), gamma, lam).numpy()
    np.testing.assert_allclose(out, [[v0, v1, v2]], rtol=1e-6)
    # lambda = 0: one-step TD targets; lambda = 1: discounted Monte Carlo with the bootstrap.
    td = lambda_return(tf.constant(rewards), tf.constant(values), gamma, 0.0).numpy()
    np.testing.assert_allclose(td, rewards + gamma * values[:, 1:], rtol=1e-6)
    mc = lambda_return(tf.constant(rewards), tf.constant(values), gamma, 1.0).numpy()
    assert mc[0, 0] == pytest.approx(1.0 + gamma * 0.0 + gamma**2 * 2.0 + gamma**3 * 3.0)


# ----------------------------------------------------------------------------- actor-critic

def _weights(net) -> list[np.ndarray]:
    return [w.numpy() for w in net.weights]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_target_critic_copied_every_target_every_updates(config, wm) -> None:
    agent = ActorCritic(config, wm, ACTIONS, True, DittoReward("stoch"))
    expert = random_windows(config, wm, config.agent.batch, config.agent.horizon + 1, seed=3)
    every = config.agent.target_every
    for step in range(2 * every + 1):
        critic_before = _weights(agent.critic)
        target_before = _weights(agent.target)
        metrics = agent.update(expert, step)
        assert all(math.isfinite(float(v)) for v in metrics.values())
        if step % every == 0:  # copied right before this update: equals the critic it started from
            assert _same(_weights(agent.target), critic_before)
        else:  # untouched between copies
            assert _same(_weights(agent.target), target_before)
        assert not _same(_weights(agent.target), _weights(agent.critic))  # critic moved on


def test_continuous_actions_update_and_distribution(config, wm) -> None:
    agent = ActorCritic(config, wm, ACTIONS, False, DittoReward("feat"))
    expert = random_windows(config, wm, config.agent.batch, config.agent.horizon + 1, seed=4)
    metrics = agent.update(expert, 0)
    assert math.isfinite(float(metrics["actor_loss"])) and float(metrics["actor_entropy"]) != 0.0
    dist = action_dist(tf.zeros([5, 2 * ACTIONS]), discrete=False)
    sample = dist.sample().numpy()
    assert sample.shape == (5, ACTIONS) and np.all(np.abs(sample) <= 1.0)


def test_mixed_precision_update_runs() -> None:
    """The mixed_float16 path (loss scaling inside the compiled update) runs and stays finite."""
    config = load_config(["debug"], ["--precision", "mixed"])
    wm = WorldModel(config, ACTIONS)
    agent = ActorCritic(config, wm, ACTIONS, True, GailReward(config))
    assert agent.actor.compute_dtype == "float16" and agent.actor_opt.mixed
    expert = random_windows(config, wm, config.agent.batch, config.agent.horizon + 1, seed=11)
    before = [w.numpy() for w in agent.actor.weights]
    for step in range(4):  # a float16 overflow only skips a step and lowers the loss scale
        metrics = agent.update(expert, step)
        assert all(math.isfinite(float(v)) for k, v in metrics.items() if k.endswith("loss"))
    assert not _same([w.numpy() for w in agent.actor.weights], before)


def test_gail_reward_forms_and_discriminator_learns(config, wm) -> None:
    logits = tf.constant([-3.0, 0.0, 3.0])
    np.testing.assert_allclose(gail_reward(logits, "neg_log_one_minus_d"),
                               -np.log(1 - 1 / (1 + np.exp(-logits.numpy()))), rtol=1e-5)
    np.testing.assert_allclose(gail_reward(logits, "sigmoid"), 1 / (1 + np.exp(-logits.numpy())), rtol=1e-6)
    with pytest.raises(UserError, match="dgail.reward"):
        gail_reward(logits, "exp")
    gail = GailReward(config)
    length = config.agent.horizon + 1
    expert = random_windows(config, wm, 16, length, seed=5)
    agent = random_windows(config, wm, 16, length, seed=6)
    agent["deter"] = agent["deter"] + 5.0  # separable: the discriminator must learn to tell them
    train = tf.function(gail.train)
    for _ in range(150):
        metrics = train(agent, expert)
    assert float(metrics["disc_expert_accuracy"]) > 0.9 and float(metrics["disc_agent_accuracy"]) > 0.9
    assert float(tf.reduce_mean(gail(expert, expert))) > float(tf.reduce_mean(gail(agent, expert)))


# ----------------------------------------------------------------------------- D-BC

def synthetic_latents(config: Config, episodes: int, length: int, seed: int) -> ExpertLatents:
    """Latents whose expert action is a known function of z: action = class of z[0] mod 2."""
    rssm = config.world_model.rssm
    rng = np.random.default_rng(seed)
    n = episodes * length
    stoch = rng.integers(rssm.discrete, size=(n, rssm.stoch)).astype(np.int16)
    action = np.eye(ACTIONS, dtype=np.float32)[stoch[:, 0] % ACTIONS]
    has_action = np.ones(n, bool)
    has_action[length - 1::length] = False
    deter = 0.1 * rng.normal(size=(n, rssm.deter)).astype(np.float32)  # h carries no information
    return ExpertLatents(deter, stoch, action,
                         has_action, np.arange(0, n + 1, length), rssm.discrete)


def test_dbc_fits_a_known_latent_to_action_map(config, wm) -> None:
    train = synthetic_latents(config, 10, 100, seed=7)
    setup = LatentSetup(wm, "", train, synthetic_latents(config, 1, 100, seed=8), ACTIONS, True)
    agent = DBC(config, setup)
    pairs = np.flatnonzero(train.has_action)
    rng = np.random.default_rng(0)
    for _ in range(300):
        index = pairs[rng.integers(len(pairs), size=64)]
        metrics = agent.update(tf.constant(train.deter[index]), tf.constant(train.stoch[index]),
                               tf.constant(train.action[index]))
    val = setup.val
    feat = wm.rssm.get_feat(to_state(wm.rssm, tf.constant(val.deter), tf.constant(val.stoch), val.classes))
    predicted = tf.argmax(action_dist(agent.actor(feat), True).mode(), -1).numpy()
    accuracy = np.mean(predicted == np.argmax(val.action, -1))
    assert accuracy > 0.95, f"held-out accuracy {accuracy:.2f}, train loss {float(metrics['dbc_loss']):.3f}"


def test_expert_action_alignment_uses_the_next_file_action(config) -> None:
    """In episode files action[t] led to image[t]: the action taken at step t is action[t + 1]."""
    episode = {"image": np.arange(4, dtype=np.uint8).reshape(4, 1, 1, 1).repeat(2, 1).repeat(2, 2),
               "action": np.eye(3, dtype=np.float32)[[0, 2, 1, 2]]}
    episode["action"][0] = 0
    data = FrameData([episode], frame_stack=2)
    assert list(data.pairs) == [0, 1, 2]  # the last frame has no action taken
    obs, actions = data.batch(np.array([0, 2]))
    frames = obs["image"]
    np.testing.assert_array_equal(np.argmax(actions, -1), [2, 2])
    np.testing.assert_array_equal(frames[0, 0, 0], [0, 0])  # episode start: first frame repeated
    np.testing.assert_array_equal(frames[1, 0, 0], [1, 2])  # oldest frame first


# ----------------------------------------------------------------------------- checkpoints

def _roundtrip(tmp_path: pathlib.Path, make, train_once) -> None:
    """Train one step, save, restore into freshly built objects: every variable is equal."""
    first = make()
    train_once(first)
    Checkpointer(tmp_path, 2, **first.trackables()).save(1)
    second = make()
    assert Checkpointer(tmp_path, 2, **second.trackables()).restore() == 1
    for name, obj in first.trackables().items():
        a, b = obj.variables, second.trackables()[name].variables
        assert len(a) == len(b) > 0, name
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=f"{name}: {x.path}")


def test_checkpoint_round_trip_actor_critic_and_discriminator(config, wm, tmp_path) -> None:
    expert = random_windows(config, wm, config.agent.batch, config.agent.horizon + 1, seed=9)

    class Both:  # the state a D-GAIL checkpoint holds
        def __init__(self):
            self.reward = GailReward(config)
            self.agent = ActorCritic(config, wm, ACTIONS, True, self.reward)

        def trackables(self):
            return {**self.agent.trackables(), **self.reward.trackables()}

    _roundtrip(tmp_path / "ac", Both, lambda b: (b.agent.update(expert, 0), b.agent.update(expert, 1)))


def test_checkpoint_round_trip_dbc_and_bc(config, wm, tmp_path) -> None:
    latents = synthetic_latents(config, 1, 20, seed=10)
    setup = LatentSetup(wm, "", latents, latents, ACTIONS, True)
    batch = (tf.constant(latents.deter[:8]), tf.constant(latents.stoch[:8]), tf.constant(latents.action[:8]))
    _roundtrip(tmp_path / "dbc", lambda: DBC(config, setup), lambda agent: agent.update(*batch))
    image = tf.zeros([4, *config.env.size, config.bc.frame_stack], tf.uint8)
    action = tf.one_hot([0, 1, 0, 1], ACTIONS)
    _roundtrip(tmp_path / "bc", lambda: BC(config, ACTIONS, True),
               lambda agent: agent.update({"image": image}, action))


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(config, tmp_path) -> None:
    weight = tf.Variable(1.0)

    def update(step: int) -> dict:
        weight.assign_add(1.0)
        return {"actor_loss": float("nan") if step == 7 else 1.0}

    with pytest.raises(UserError, match=r"actor_loss is nan at update 8.*ckpt-5"):
        train_agent(config, RunDir(tmp_path), "ditto", 20, {"weight": weight}, update)
    ckpt = Checkpointer(RunDir(tmp_path).checkpoints("ditto"), 10, weight=tf.Variable(0.0))
    assert ckpt.restore() == 5 and ckpt.checkpoints[-1].endswith("ckpt-5")
