"""Real ALE games and gymnasium envs observed as pixels (ditto_tf/envs.py)."""

from __future__ import annotations

import cv2
import gymnasium as gym
import numpy as np
import pytest

from ditto_tf.config import load_config
from ditto_tf.envs import Atari, GymPixels, VecEnv, make_env, parse_task
from ditto_tf.errors import UserError

KEYS = {"image", "reward", "is_first", "is_last", "is_terminal"}


def check_obs(obs: dict, shape: tuple[int, ...], first: bool, vector: int = 0) -> None:
    """`vector`: the size of the `vector` key a gymnasium env with a 1-D Box state offers."""
    assert set(obs) == (KEYS | {"vector"} if vector else KEYS)
    if vector:
        assert obs["vector"].shape == (vector,) and obs["vector"].dtype == np.float32
    assert obs["image"].shape == shape and obs["image"].dtype == np.uint8
    assert obs["is_first"] is first
    assert isinstance(obs["is_last"], bool) and isinstance(obs["is_terminal"], bool)
    assert np.asarray(obs["reward"]).dtype == np.float32


def play(env, actions_rng: np.random.Generator, limit: int = 100_000) -> tuple[list[dict], float]:
    """Random actions until is_last; returns the observations and the summed reward."""
    obs, total = [], 0.0
    for _ in range(limit):
        o = env.step(int(actions_rng.integers(env.act_space.n)))
        obs.append(o)
        total += float(o["reward"])
        if o["is_last"]:
            break
    return obs, total


@pytest.mark.parametrize("names, actions", [(["atari", "pong"], 6), (["atari", "beamrider"], 9)])
def test_atari_obs_shapes_and_minimal_actions(names, actions):
    env = make_env(load_config(names), seed=0)
    assert env.env_id.startswith("ALE/") and env.act_space == gym.spaces.Discrete(actions)
    check_obs(env.reset(), (64, 64, 1), first=True)
    assert env.native_obs.shape == (210, 160, 3) and env.native_obs.dtype == np.uint8
    assert "lives" in env.info
    for step in range(20):
        check_obs(env.step(step % actions), (64, 64, 1), first=False)
    assert env.native_obs.shape == (210, 160, 3)


def test_atari_rgb_size_and_full_action_set():
    config = load_config(["atari", "pong"], ["--env.size", "48,40", "--env.grayscale", "false",
                                             "--env.all_actions", "true"])
    env = make_env(config, seed=0)
    assert env.act_space.n == 18 and env.action_meanings[0] == "NOOP"
    check_obs(env.reset(), (48, 40, 3), first=True)
    check_obs(env.step(17), (48, 40, 3), first=False)


def test_atari_max_pools_last_two_frames_of_each_action_repeat():
    """Step a bare ALE env frame by frame with the same seed and actions: our native frame is the
    max of the last two raw frames of each agent step and our image is it in gray at 64x64."""
    env = Atari("Pong", noops=0, seed=5)
    bare = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)
    env.reset()
    bare.reset(seed=5)
    rng = np.random.default_rng(0)
    pooled_differs = 0
    for _ in range(60):
        action = int(rng.integers(6))
        obs = env.step(action)
        frames = [bare.step(action)[0] for _ in range(4)]
        expected = np.maximum(frames[2], frames[3])
        np.testing.assert_array_equal(env.native_obs, expected)
        gray = cv2.resize(cv2.cvtColor(expected, cv2.COLOR_RGB2GRAY), (64, 64),
                          interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(obs["image"][..., 0], gray)
        pooled_differs += int(not np.array_equal(expected, frames[3]))
    assert pooled_differs > 0  # the ball moves: the pool really combines two frames


def test_one_hot_and_index_actions_agree():
    a, b = Atari("Pong", seed=1), Atari("Pong", seed=1)
    a.reset(), b.reset()
    rng = np.random.default_rng(0)
    for _ in range(30):
        index = int(rng.integers(6))
        np.testing.assert_array_equal(a.step(index)["image"], b.step(np.eye(6)[index])["image"])
    assert a.action_vector(3).tolist() == [0, 0, 0, 1, 0, 0]
    with pytest.raises(ValueError):
        a.step(np.ones(4))


def test_atari_full_game_vs_life_loss():
    rng = np.random.default_rng(0)
    full = Atari("BeamRider", seed=3)
    full.reset()
    start_lives = full.info["lives"]
    steps, total = play(full, rng)
    assert steps[-1]["is_terminal"] and full.info["game_over"] and full.info["lives"] == 0
    assert sum(o["is_last"] for o in steps) == 1  # life losses do not end the episode
    assert start_lives > 1
    assert max(float(o["reward"]) for o in steps) > 1  # unclipped score (BeamRider: 44 per kill)

    lives = Atari("BeamRider", life_done=True, seed=3)
    lives.reset()
    steps, _ = play(lives, rng)
    assert steps[-1]["is_terminal"] and lives.info["life_lost"] and not lives.info["game_over"]
    remaining = lives.info["lives"]
    frame = lives.info["episode_frame_number"]
    obs = lives.reset()  # continues the same game: no new game, no no-ops
    assert obs["is_first"] and lives.info["lives"] == remaining
    assert lives.info["episode_frame_number"] == frame
    assert not lives.step(0)["is_first"]


def test_noops_and_seeds():
    frames = set()
    for seed in range(6):
        env = Atari("Pong", noops=30, seed=seed)
        env.reset()
        frames.add(env.info["episode_frame_number"])
    assert len(frames) > 1 and all(1 <= f <= 30 for f in frames)
    env = Atari("Pong", noops=0, seed=0)
    env.reset()
    assert env.info["episode_frame_number"] == 0
    a, b = Atari("Pong", seed=7), Atari("Pong", seed=7)
    np.testing.assert_array_equal(a.reset()["image"], b.reset()["image"])
    np.testing.assert_array_equal(a.reset(seed=11)["image"], b.reset(seed=11)["image"])


def test_sticky_actions():
    """sticky=1 repeats the initial NOOP forever, so any actions play like all-NOOP; sticky=0.25
    makes the same seed and actions diverge from the non-sticky game."""
    def trajectory(sticky: float, actions: list[int]) -> np.ndarray:
        env = Atari("Pong", sticky=sticky, noops=0, seed=2)
        env.reset()
        return np.stack([env.step(a)["image"] for a in actions])

    rng = np.random.default_rng(0)
    actions = [int(a) for a in rng.integers(1, 6, size=150)]
    np.testing.assert_array_equal(trajectory(1.0, actions), trajectory(0.0, [0] * 150))
    assert not np.array_equal(trajectory(0.25, actions), trajectory(0.0, actions))
    np.testing.assert_array_equal(trajectory(0.0, actions), trajectory(0.0, actions))


def test_time_limit_truncates_without_terminal():
    env = Atari("Pong", time_limit=10, seed=0)
    env.reset()
    steps = [env.step(0) for _ in range(10)]
    assert [o["is_last"] for o in steps] == [False] * 9 + [True]
    assert not steps[-1]["is_terminal"]
    cart = GymPixels("CartPole-v1", time_limit=5, seed=0)
    cart.reset()
    steps = [cart.step(i % 2) for i in range(5)]  # alternating actions keep the pole up
    assert steps[-1]["is_last"] and not steps[-1]["is_terminal"]


def test_cartpole_rendered_to_pixels():
    env = make_env(load_config(["cartpole"]), seed=0)
    obs = env.reset()
    check_obs(obs, (64, 64, 1), first=True, vector=4)
    np.testing.assert_array_equal(obs["vector"], env.native_obs)
    assert env.native_obs.shape == (4,) and env.act_space == gym.spaces.Discrete(2)
    assert obs["image"].min() < obs["image"].max()  # a real frame: cart and pole on a background
    images = [obs["image"]]
    while not obs["is_last"]:
        obs = env.step(np.array([1.0, 0.0]))  # always push left: the pole falls
        images.append(obs["image"])
    assert obs["is_terminal"] and len(images) < 100
    assert not np.array_equal(images[0], images[-1])  # the cart moved
    rgb = make_env(load_config(["cartpole"], ["--env.grayscale", "false", "--env.size", "32,48"]), 0)
    check_obs(rgb.reset(), (32, 48, 3), first=True, vector=4)


def test_cartpole_crop_keeps_the_band_of_cart_and_pole():
    # The same state rendered whole and cropped to the cartpole block's band: the crop is the
    # band of the full render, resized, so the pole covers more of the 64x64 frame.
    whole = make_env(load_config(["cartpole"], ["--env.crop", "0,1,0,1"]), seed=3)
    band = make_env(load_config(["cartpole"]), seed=3)
    assert band.crop == (0.375, 0.825, 0.3, 0.7)
    whole_image, band_image = whole.reset()["image"], band.reset()["image"]
    np.testing.assert_array_equal(whole.native_obs, band.native_obs)
    frame = whole._env.render()
    expected = cv2.resize(cv2.cvtColor(frame[150:330, 180:420], cv2.COLOR_RGB2GRAY), (64, 64),
                          interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(band_image[..., 0], expected)
    dark = lambda image: int((image < 200).sum())  # noqa: E731  pixels of cart and pole
    assert dark(band_image) > 2 * dark(whole_image)
    with pytest.raises(UserError, match=r"env.crop \[0.5, 0.2, 0.0, 1.0\]"):
        make_env(load_config(["cartpole"], ["--env.crop", "0.5,0.2,0,1"]), seed=0)


def test_lunarlander_and_bipedalwalker_continuous():
    lander = make_env(load_config(["lunarlander"]), seed=0)
    assert lander.act_space == gym.spaces.Discrete(4) and lander.native_obs is None
    lander.reset()
    assert lander.native_obs.shape == (8,)
    continuous = GymPixels("LunarLanderContinuous-v3", seed=0)
    assert isinstance(continuous.act_space, gym.spaces.Box) and continuous.action_size == 2
    continuous.reset()
    check_obs(continuous.step(np.array([0.5, -0.5])), (64, 64, 1), first=False, vector=8)

    walker = make_env(load_config(["bipedalwalker"]), seed=0)
    assert isinstance(walker.act_space, gym.spaces.Box) and walker.action_size == 4
    check_obs(walker.reset(), (64, 64, 1), first=True, vector=24)
    assert walker.native_obs.shape == (24,)
    check_obs(walker.step(np.full(4, 3.0)), (64, 64, 1), first=False, vector=24)  # clipped into the Box
    np.testing.assert_array_equal(walker.action_vector(np.full(4, 3.0)), np.ones(4, np.float32))


def test_vector_config_offers_the_state_without_rendering():
    """With no cnn key matching `image` (the `vector` block), nothing is rendered: the obs holds
    the native state as `vector` and no `image`; Atari offers no vector, so it is an error."""
    env = make_env(load_config(["cartpole", "vector"]), seed=0)
    assert env._env.render_mode is None and "image" not in env.obs_space
    obs = env.reset()
    assert set(obs) == (KEYS - {"image"}) | {"vector"}
    np.testing.assert_array_equal(obs["vector"], env.native_obs.astype(np.float32))
    assert obs["vector"].dtype == np.float32
    for _ in range(3):
        obs = env.step(0)
    np.testing.assert_array_equal(obs["vector"], env.native_obs.astype(np.float32))
    from ditto_tf.obs_keys import env_shapes, select

    atari = make_env(load_config(["atari", "pong"]), seed=0)
    assert "vector" not in atari.reset()
    with pytest.raises(UserError, match=r"encoder.cnn_keys / mlp_keys match no observation key.*image"):
        select(load_config(["atari", "pong", "vector"]), env_shapes(atari))


@pytest.mark.parametrize("task, culprit, hint", [
    ("gym_CartPol-v1", "CartPol-v1", "gym_CartPole-v1"),
    ("atari_pongg", "pongg", "atari_pong"),
    ("atari_beam_rderr", "beam_rderr", "atari_beam_rider"),
    ("mujoco_Hopper", "mujoco_Hopper", "atari_<game>"),
])
def test_unknown_task_names_culprit_and_close_matches(task, culprit, hint):
    with pytest.raises(UserError) as error:
        make_env(load_config(["cartpole"], ["--task", task]), seed=0)
    assert culprit in str(error.value) and hint in str(error.value)
    assert "\n" not in str(error.value)


def test_task_names():
    assert parse_task("atari_beam_rider") == ("atari", "BeamRider")
    assert parse_task("atari_ms_pacman") == ("atari", "MsPacman")
    assert parse_task("atari_space_invaders") == ("atari", "SpaceInvaders")
    assert parse_task("gym_BipedalWalker-v3") == ("gym", "BipedalWalker-v3")


def test_vec_env_resets_finished_envs():
    config = load_config(["cartpole", "debug"])
    vec = VecEnv.make(config, count=2, seed=0)
    batch = VecEnv.stack(vec.reset())
    assert batch["image"].shape == (2, 32, 32, 1) and batch["is_first"].all()
    seen_reset = False
    for _ in range(60):  # always pushing left ends an episode within about 10-30 steps
        obs = vec.step([0, 0])
        if obs[0]["is_first"]:
            seen_reset = True
            break
    assert seen_reset
    vec.close()
