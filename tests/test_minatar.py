"""MinAtar tasks (ditto_tf/minatar_env.py) and their shipped PPO experts (experts/ppo/)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from ditto_tf import experts, zoo
from ditto_tf.config import load_config
from ditto_tf.envs import make_env, minatar_games, parse_task
from ditto_tf.errors import UserError
from ditto_tf.minatar_env import palette, render_grid

GAMES = list(minatar_games())  # asterix, breakout, freeway, seaquest, space_invaders
SHIPPED = sorted((zoo.PROJECT_ZOO / "ppo").glob("MinAtar-*_1"))


def config(game: str, *flags: str):
    return load_config(["minatar", "minatar_" + game.replace("_", "")], list(flags))


@pytest.mark.parametrize("game", GAMES)
def test_every_game_offers_image_and_grid_with_minatars_defaults(game):
    env = make_env(config(game), seed=0)
    obs = env.reset()
    channels = env.native_space.shape[-1]
    assert env.env_id.startswith("MinAtar/") and env.env_id.endswith("-v0")
    assert env.act_space == gym.spaces.Discrete(6)  # the full set, as the published results
    assert env.native_obs.shape == (10, 10, channels) and env.native_obs.dtype == bool
    assert obs["image"].shape == (64, 64, 1) and obs["image"].dtype == np.uint8
    np.testing.assert_array_equal(obs["vector"], env.native_obs.reshape(-1).astype(np.float32))
    assert env.game.sticky_action_prob == 0.1
    if hasattr(env.game.env, "ramping"):  # Breakout and Freeway do not ramp
        assert env.game.env.ramping is True


@pytest.mark.parametrize("game", GAMES)
def test_minimal_action_sets_are_the_v1_ids(game):
    env = make_env(config(game, "--env.all_actions", "false"), seed=0)
    assert env.env_id.endswith("-v1")
    zoo.register_suites(env.env_id)
    assert env.act_space == gym.make(env.env_id).action_space


@pytest.mark.parametrize("game", ["breakout", "space_invaders"])
def test_same_dynamics_as_the_gymnasium_id_the_experts_trained_on(game):
    """Seeded alike and given the same actions, our env and MinAtar's gymnasium env agree on
    every grid, reward and ending (sticky actions included)."""
    ours = make_env(config(game), seed=3)
    zoo.register_suites(ours.env_id)
    theirs = gym.make(ours.env_id)
    ours.reset()
    grid, _ = theirs.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(300):
        action = int(rng.integers(6))
        obs = ours.step(action)
        grid, reward, terminal, _, _ = theirs.step(action)
        np.testing.assert_array_equal(ours.native_obs, grid)
        assert float(obs["reward"]) == reward and obs["is_terminal"] == terminal
        if terminal:
            break


def test_every_object_type_keeps_its_own_level_in_flat_cells():
    for grayscale in (True, False):
        for channels in (4, 6, 7, 10):
            colours = palette(channels, grayscale)
            assert len({tuple(c) for c in colours}) == channels + 1  # background + one per channel
            state = np.zeros((10, 10, channels), bool)
            for k in range(channels):
                state[k, k, k] = True  # channel k alone in cell (k, k)
            image = render_grid(state, colours, (64, 64))
            assert image.shape == (64, 64, 1 if grayscale else 3)
            rows = np.arange(64) * 10 // 64
            for k in range(channels):
                block = image[rows == k][:, rows == k]
                assert block.shape[:2] in ((6, 6), (7, 7)) and (block == colours[k + 1]).all()
    # overlapping objects show the higher channel, as MinAtar's own display
    state = np.zeros((10, 10, 4), bool)
    state[0, 0, [1, 3]] = True
    assert render_grid(state, palette(4, True), (64, 64))[0, 0, 0] == palette(4, True)[4, 0]


def test_seeds_reproduce_and_time_limit_truncates():
    runs = []
    for _ in range(2):
        env = make_env(config("freeway", "--env.time_limit", "7"), seed=5)  # no early end
        env.reset()
        runs.append([env.step(i % 6) for i in range(7)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a["image"], b["image"])
    last = runs[0][-1]
    assert last["is_last"] and not last["is_terminal"]


def test_task_names_and_errors():
    assert parse_task("minatar_space_invaders") == ("minatar", "space_invaders")
    assert parse_task("minatar_spaceinvaders") == ("minatar", "space_invaders")
    with pytest.raises(UserError, match=r"^task 'minatar_pong': unknown MinAtar game 'pong'; choose from"):
        parse_task("minatar_pong")
    with pytest.raises(UserError, match=r"'breakot'; closest: minatar_breakout$"):
        parse_task("minatar_breakot")


def test_project_hyperparameters_come_first():
    assert zoo.hyperparams_file("ppo", "MinAtar/Breakout-v0").is_relative_to(zoo.PROJECT_ZOO)
    assert "MinAtarCNN" in zoo.zoo_hyperparams("ppo", "MinAtar/Freeway-v1")["policy_kwargs"]
    assert not zoo.hyperparams_file("ppo", "CartPole-v1").is_relative_to(zoo.PROJECT_ZOO)
    assert zoo.file_name("MinAtar/Breakout-v0") == "MinAtar-Breakout-v0"


@pytest.mark.skipif(not SHIPPED, reason="no shipped MinAtar expert in experts/ppo")
@pytest.mark.parametrize("run", SHIPPED, ids=[r.name for r in SHIPPED])
def test_shipped_experts_are_small_and_act_from_any_directory(run, tmp_path, monkeypatch):
    name = run.name[:-2]
    assert (run / f"{name}.zip").stat().st_size <= 2_000_000
    game = {g.title().replace("_", ""): g for g in GAMES}[name.split("-")[1]]
    monkeypatch.chdir(tmp_path)  # `expert.folder: experts` is found in the project
    from ditto_tf.rundir import absolute_paths

    cfg = absolute_paths(config(game))
    expert = experts.load_expert(cfg)
    env = make_env(cfg, seed=0)
    env.reset()
    for _ in range(5):
        action = expert.act(env)
        assert env.act_space.contains(action)
        env.step(action)


@pytest.mark.parametrize("game", ["breakout", "freeway"])
def test_action_effects_group_the_actions_a_game_ignores_with_the_noop(game):
    """Stepped from the same seed, an action and its `action_effects` representative give the same
    grids (sticky actions included); the minimal set of -v1 maps to itself."""
    env = make_env(config(game), seed=5)
    effects = env.action_effects()
    assert len(set(effects.tolist())) == len(env.game.minimal_action_set()) < 6
    rng = np.random.default_rng(1)
    actions = rng.integers(6, size=200)
    grids = []
    for plan in (actions, effects[actions], np.zeros_like(actions)):
        env.reset(seed=5)
        grids.append([])
        for action in plan:  # one episode, at most 200 steps
            last = env.step(int(action))["is_last"]
            grids[-1].append(env.native_obs.copy())
            if last:
                break
    np.testing.assert_array_equal(np.array(grids[0]), np.array(grids[1]))
    assert len(grids[0]) != len(grids[2]) or not np.array_equal(grids[0], grids[2])  # the moves the map keeps do matter
    v1 = make_env(config(game, "--env.all_actions", "false"), seed=0)
    np.testing.assert_array_equal(v1.action_effects(), np.arange(v1.act_space.n))
