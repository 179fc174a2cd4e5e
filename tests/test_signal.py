"""DITTO's learning signal: eq. 8's reward forms, the margin measurement, and `agent.actor_grad`.

Reward forms are checked on hand-built distributions with exact expected numbers; the margin on
real (tiny, untrained) world models whose imagination does or does not depend on the action;
`dynamics` on real components at tiny sizes.
"""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from ditto_tf.agents.actor_critic import ActorCritic, action_dist
from ditto_tf.agents.ditto import DittoReward
from ditto_tf.agents.eq8 import eq8, latent_reward
from ditto_tf.agents.latents import encode_episodes, to_state
from ditto_tf.config import Config, load_config
from ditto_tf.errors import UserError
from ditto_tf.margin import EXPERT, RANDOM, ROWS, measure
from ditto_tf.world_model import WorldModel

ACTIONS = 2
# Two categoricals of three classes, agent (prior) and expert (posterior) probabilities.
P_AGENT = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
Q_EXPERT = np.array([[0.2, 0.2, 0.6], [0.1, 0.8, 0.1]])
H_AGENT, H_EXPERT = np.array([1.0, 0.0]), np.array([1.0, 1.0])


def state(stoch: list[int], probs: np.ndarray, deter: np.ndarray) -> dict[str, tf.Tensor]:
    return {"stoch": tf.constant(np.eye(3)[stoch], tf.float32),
            "logit": tf.constant(np.log(probs), tf.float32),
            "deter": tf.constant(deter, tf.float32)}


def test_reward_forms_on_hand_built_distributions() -> None:
    agent = state([0, 1], P_AGENT, H_AGENT)
    expert = state([0, 2], Q_EXPERT, H_EXPERT)  # its cached sample; its posterior mode is [2, 1]
    value = lambda latent, form: float(eq8(agent, expert, latent, form))  # noqa: E731
    # sample: categorical 0 agrees, 1 does not.
    assert value("stoch", "sample") == pytest.approx(0.5)
    # probs: mean over s of sum_k p q = ((.1 + .06 + .12) + (.01 + .48 + .03)) / 2.
    assert value("stoch", "probs") == pytest.approx(0.40, abs=1e-6)
    # mode: the agent's [0, 1] against the expert's posterior mode [2, 1].
    assert value("stoch", "mode") == pytest.approx(0.5)
    assert float(eq8(state([2, 1], P_AGENT, H_AGENT), expert, "stoch", "mode")) == pytest.approx(1.0)
    assert float(eq8(state([2, 1], P_AGENT, H_AGENT), expert, "stoch", "sample")) == pytest.approx(0.0)
    # h enters as is whatever the form: 1 / max(1, 2).
    for form in ("sample", "probs", "mode"):
        assert value("deter", form) == pytest.approx(0.5)
    # feat: (z dot + h dot) / max(S + |h_a|^2, S + |h_e|^2) = (z dot + 1) / 4.
    assert value("feat", "sample") == pytest.approx((1 + 1) / 4)
    assert value("feat", "probs") == pytest.approx((0.8 + 1) / 4, abs=1e-6)
    assert value("feat", "mode") == pytest.approx((1 + 1) / 4)
    with pytest.raises(UserError, match="ditto.reward_form"):
        eq8(agent, expert, "stoch", "average")
    with pytest.raises(UserError, match="ditto.reward_form"):
        DittoReward("stoch", "average")


@pytest.mark.parametrize("latent", ["stoch", "feat"])
def test_probs_is_the_exact_expectation_of_sample(latent: str) -> None:
    """Enumerate every pair of one-hot samples (agent's prior, expert's posterior) with its
    probability: the expected `sample` reward equals `probs`."""
    agent = state([0, 0], P_AGENT, H_AGENT)
    expert = state([0, 0], Q_EXPERT, H_EXPERT)
    expected = 0.0
    for za, ze in itertools.product(itertools.product(range(3), repeat=2), repeat=2):
        weight = np.prod(P_AGENT[[0, 1], za]) * np.prod(Q_EXPERT[[0, 1], ze])
        reward = eq8(state(list(za), P_AGENT, H_AGENT), state(list(ze), Q_EXPERT, H_EXPERT),
                     latent, "sample")
        expected += weight * float(reward)
    assert float(eq8(agent, expert, latent, "probs")) == pytest.approx(expected, abs=1e-6)


def test_ditto_reward_applies_its_form_one_step_later() -> None:
    """Rewards (B, H) from states (B, H+1): step t compares the states at t + 1, in the form."""
    agent = {k: tf.stack([v, v], 0)[None] for k, v in state([0, 1], P_AGENT, H_AGENT).items()}
    expert = {k: tf.stack([v, v], 0)[None] for k, v in state([0, 2], Q_EXPERT, H_EXPERT).items()}
    for form, expected in (("sample", 0.5), ("probs", 0.4), ("mode", 0.5)):
        rewards = DittoReward("stoch", form)(agent, expert).numpy()
        assert rewards.shape == (1, 1)
        np.testing.assert_allclose(rewards, expected, rtol=1e-5)
    np.testing.assert_allclose(latent_reward(agent, expert, "stoch", "probs").numpy(), 0.4, rtol=1e-5)


# ----------------------------------------------------------------------------- the margin

@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(["debug"], ["--precision", "float32"])


def episodes(config: Config, count: int, length: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Episodes in the file format (random images and actions): enough to run the filter."""
    rng = np.random.default_rng(seed)
    height, width = config.env.size
    out = []
    for _ in range(count):
        action = np.eye(ACTIONS, dtype=np.float32)[rng.integers(ACTIONS, size=length)]
        action[0] = 0.0
        is_first = np.zeros(length, bool)
        is_first[0] = True
        out.append({"image": rng.integers(0, 255, (length, height, width, 1), dtype=np.uint8),
                    "action": action, "is_first": is_first})
    return out


def test_margin_of_a_model_where_actions_matter_and_where_they_do_not(config: Config) -> None:
    keras.utils.set_random_seed(0)
    wm = WorldModel(config, ACTIONS)
    latents = encode_episodes(wm, episodes(config, 3, 40, seed=1), config.world_model.rssm.discrete)
    assert latents.logit.shape == (120, config.world_model.rssm.stoch, config.world_model.rssm.discrete)
    # One step under the expert's own action reproduces the expert's next h exactly (the filter
    # computes h_t+1 from h_t, z_t, a_t like the prior does): h earns 1, random actions less.
    one = measure(wm.rssm, latents, horizon=1, count=64)
    assert set(one.rewards) == set(ROWS)
    assert one.rewards["h"][EXPERT] == pytest.approx(1.0, abs=1e-5)
    assert one.rewards["h"][RANDOM] < 0.999 and one.margins["h"] > 0.0
    assert {"always 0", "always 1", "expert, sampled"} <= one.rewards["h"].keys()
    # Cut the action's input to the dynamics: every plan earns the same, every margin is 0.
    kernel = wm.rssm.img_in.kernel
    cut = kernel.numpy()
    cut[-ACTIONS:] = 0.0  # img_in's input is concat([z flat, action])
    kernel.assign(cut)
    blind = measure(wm.rssm, latents, horizon=5, count=64)
    for row, rewards in blind.rewards.items():
        assert rewards[EXPERT] == pytest.approx(rewards[RANDOM], abs=1e-6), row
        assert blind.margins[row] == pytest.approx(0.0, abs=1e-5), row
    assert "z_probs" in blind.lines()[2] and "margin" in blind.lines()[0]


# ----------------------------------------------------------------------------- actor_grad

def _weights(variables) -> list[np.ndarray]:
    return [v.numpy().copy() for v in variables]


@pytest.mark.parametrize("grad", ["dynamics", "both"])
def test_dynamics_gradient_reaches_the_actor_and_not_the_world_model(config: Config, grad: str) -> None:
    keras.utils.set_random_seed(1)
    wm = WorldModel(config, ACTIONS)
    rssm = config.world_model.rssm
    dyn = config.update({"agent.actor_grad": grad, "agent.entropy": 0.0, "agent.actor_grad_mix": 1.0})
    agent = ActorCritic(dyn, wm, ACTIONS, True, DittoReward("feat"))
    rng = np.random.default_rng(0)
    length = config.agent.horizon + 1
    expert = to_state(wm.rssm, tf.constant(rng.normal(size=(8, length, rssm.deter)), tf.float32),
                      tf.constant(rng.integers(rssm.discrete, size=(8, length, rssm.stoch))),
                      rssm.discrete)
    world, actor = _weights(wm.variables), _weights(agent.actor.variables)
    metrics = agent.update(expert, 1)
    # Without entropy (and, for `both`, with all weight on dynamics), only the return's gradient
    # through the imagined states moves the actor.
    assert float(metrics["actor_grad_norm"]) > 0.0
    assert any(not np.array_equal(a, b) for a, b in zip(actor, _weights(agent.actor.variables)))
    for before, after in zip(world, _weights(wm.variables)):
        np.testing.assert_array_equal(before, after)
    with pytest.raises(UserError, match="agent.actor_grad:"):
        ActorCritic(config.update({"agent.actor_grad": "pathwise"}), wm, ACTIONS, True,
                    DittoReward("feat"))
    with pytest.raises(UserError, match="agent.actor_grad_mix"):
        ActorCritic(config.update({"agent.actor_grad_mix": 1.5}), wm, ACTIONS, True,
                    DittoReward("feat"))


def test_dynamics_finds_the_one_right_action(config: Config) -> None:
    """The expert always takes action 1 in a real (tiny, untrained) world model: its latents are
    the prior rolled under action 1 (modes). Rewarded by eq. 8 on h, `dynamics` must put >= 90%
    of the probability on action 1 in the expert's states within a few hundred updates.

    The action's input weights are scaled up (x10) so that the two actions lead to clearly
    different futures (eq. 8 of the wrong action's rollout: about 0.63 against 1.0), and the
    actor's learning rate is 1e-3: a small, well-posed task. (On it REINFORCE gets there
    faster: eq. 8 peaks where agent and expert match, so its straight-through gradient fades
    near the answer; BENCHMARKS.md, DITTO's learning signal.)"""
    keras.utils.set_random_seed(2)
    wm = WorldModel(config, ACTIONS)
    kernel = wm.rssm.img_in.kernel
    scaled = kernel.numpy()
    scaled[-ACTIONS:] *= 10.0  # img_in's input is concat([z flat, action])
    kernel.assign(scaled)
    rssm = config.world_model.rssm
    horizon, batch = config.agent.horizon, 64
    rng = np.random.default_rng(3)
    starts = to_state(wm.rssm, tf.constant(rng.normal(size=(batch, rssm.deter)), tf.float32),
                      tf.constant(rng.integers(rssm.discrete, size=(batch, rssm.stoch))), rssm.discrete)
    plan = tf.one_hot(tf.ones([batch, horizon], tf.int32), ACTIONS)
    rolled = wm.rssm.rollout(plan, starts, sample=False)
    expert = {k: tf.concat([starts[k][:, None], v], 1) for k, v in rolled.items()}
    dyn = config.update({"agent.actor_grad": "dynamics", "agent.actor_lr": 1e-3})
    agent = ActorCritic(dyn, wm, ACTIONS, True, DittoReward("deter"))
    feat = wm.rssm.get_feat(expert)
    right = lambda: float(tf.reduce_mean(action_dist(agent.actor(feat), True).probs[..., 1]))  # noqa: E731
    before = right()
    for step in range(400):
        agent.update(expert, step)
    assert right() >= 0.9, f"probability of the right action: {before:.3f} -> {right():.3f}"
