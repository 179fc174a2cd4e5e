"""Atari end to end: every phase on real ALE Pong frames, then evaluation of one full game each.

    train.py --configs atari pong debug --phase all ...   then   evaluate.py LOGDIR

The expert is a real PPO CnnPolicy agent in the RL Zoo folder layout: the Pong expert under
DITTO_EXPERTS (default `../shared/experts` beside the repository) when present, else a tiny
untrained CnnPolicy agent this test builds and saves in the same layout (the plumbing is the same;
only the expert's score assertion needs the trained agent).

Sizes stay tiny (`debug`), with three overrides that keep the Atari path real:
- `env.time_limit 27000`: the `atari` block's own cap (DreamerV2's 108k frames), which `debug`
  lowers to 200. Every episode here (collected and evaluated) therefore ends at the real game
  over (one side reaches 21), not at a time limit; Pong games are 800-5000 agent steps.
- `env.size 64,64` with the encoder/decoder kernels of the `defaults` block: the world model sees
  the paper's 64x64 frames while the expert sees its own 84x84x4 AtariWrapper stack.
- wm episodes from the random policy (one game), one expert game for training, one held out.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest

import evaluate
import train
from ditto_tf.data import episodes
from ditto_tf.rundir import RunDir

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
ENV_ID = "PongNoFrameskip-v4"
AGENTS = ("ditto", "dgail", "dbc", "bc")
PONG_ACTIONS = 6          # ALE Pong's minimal action set, which the zoo expert was trained on
TIME_LIMIT = 27000


def shared_experts() -> pathlib.Path | None:
    """The folder holding ppo/PongNoFrameskip-v4_<n>/ (DITTO_EXPERTS, else ../shared/experts)."""
    candidate = os.environ.get("DITTO_EXPERTS")
    folder = pathlib.Path(candidate).expanduser() if candidate else REPO_ROOT.parent / "shared" / "experts"
    return folder if (folder / "ppo" / f"{ENV_ID}_1" / f"{ENV_ID}.zip").is_file() else None


ZOO_CONFIG = """\
!!python/object/apply:collections.OrderedDict
- - - env_wrapper
    - - stable_baselines3.common.atari_wrappers.AtariWrapper
  - - frame_stack
    - 4
  - - n_envs
    - 1
  - - n_timesteps
    - 0
  - - policy
    - CnnPolicy
"""


def build_tiny_expert(folder: pathlib.Path) -> pathlib.Path:
    """An untrained SB3 PPO CnnPolicy on the zoo's Atari pipeline, saved in the zoo layout."""
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    run = folder / "ppo" / f"{ENV_ID}_1"
    (run / ENV_ID).mkdir(parents=True)
    env = VecFrameStack(make_atari_env(ENV_ID, n_envs=1, seed=0), n_stack=4)
    PPO("CnnPolicy", env, n_steps=16, batch_size=16, seed=0, device="cpu").save(run / f"{ENV_ID}.zip")
    env.close()
    (run / ENV_ID / "config.yml").write_text(ZOO_CONFIG)
    return folder


def flags(expert_folder: pathlib.Path) -> list[str]:
    return ["--configs", "atari", "pong", "debug", "--expert.folder", str(expert_folder),
            "--env.time_limit", str(TIME_LIMIT), "--env.size", "64,64",
            "--world_model.encoder.kernels", "4,4,4,4", "--world_model.decoder.kernels", "5,5,6,6",
            "--data.wm_policy", "random", "--data.wm_episodes", "1",
            "--data.expert_train", "1", "--data.expert_val", "1"]


@pytest.fixture(scope="module")
def pong_run(tmp_path_factory) -> dict:
    """Run every phase once, then evaluate one full game per agent and per reference."""
    root = tmp_path_factory.mktemp("pong")
    folder = shared_experts()
    trained = folder is not None
    if folder is None:
        folder = build_tiny_expert(root / "experts")
    logdir = root / "run"
    assert train.main([*flags(folder), "--logdir", str(logdir), "--phase", "all"]) == 0
    assert evaluate.main([str(logdir), "--checkpoints", "1", "--episodes", "1", "--envs", "1",
                          "--quiet"]) == 0
    return {"logdir": logdir, "trained_expert": trained}


def pong_points(episode: dict) -> tuple[int, int]:
    """(agent points, opponent points) of a Pong game from its unclipped rewards."""
    reward = episode["reward"]
    return int(np.sum(reward == 1)), int(np.sum(reward == -1))


def test_collect_records_full_pong_games_as_64x64_frames(pong_run) -> None:
    logdir = pong_run["logdir"]
    manifest = [json.loads(line) for line in RunDir(logdir).manifest.read_text().splitlines()]
    assert sorted(e["set"] for e in manifest) == ["expert_train", "expert_val", "wm"]
    games = {}
    for entry in manifest:
        episode = episodes.load_episode(RunDir(logdir).data / entry["file"])
        image, action = episode["image"], episode["action"]
        assert image.dtype == np.uint8 and image.shape[1:] == (64, 64, 1)
        assert image.std() > 0  # real frames, not blanks
        assert action.shape[1] == PONG_ACTIONS and not action[0].any()
        np.testing.assert_array_equal(action[1:].sum(-1), 1.0)
        # A whole game: it ends on the real game over (one side has 21 points), not on a limit.
        assert episode["is_terminal"][-1] and episode["is_last"].sum() == 1
        assert len(image) < TIME_LIMIT
        agent, opponent = pong_points(episode)
        assert max(agent, opponent) == 21, (entry["file"], agent, opponent)
        assert entry["return"] == agent - opponent == pytest.approx(float(episode["reward"].sum()))
        games[entry["set"]] = entry
    assert games["wm"]["agent"] == "random" and "ppo" in games["expert_train"]["agent"]
    summary = RunDir(logdir).collect_summary()
    assert summary["expert"]["episodes"] == 2
    if pong_run["trained_expert"]:
        # The trained expert (mean 9 over its last 100 training games) acting on its own 84x84x4
        # stack built from our frames: it must beat the random policy's 21-0 style loss.
        for name in ("expert_train", "expert_val"):
            assert games[name]["return"] > games["wm"]["return"] + 5, games


def test_every_phase_trained_to_its_planned_updates(pong_run) -> None:
    logdir = pong_run["logdir"]
    spec = json.loads(RunDir(logdir).model_spec.read_text())
    assert spec == {"action_size": PONG_ACTIONS, "discrete": True, "image_shape": [64, 64, 1]}
    for phase in ("world_model", *AGENTS):
        checkpoints = sorted(RunDir(logdir).checkpoints(phase).glob("ckpt-*.index"))
        assert [p.name for p in checkpoints] == ["ckpt-10.index", "ckpt-5.index"], phase
        rows = [json.loads(line) for line in RunDir(logdir).metrics(phase).read_text().splitlines()]
        assert rows[-1]["step"] == 10, phase
        assert all(np.isfinite(v) for row in rows for v in row.values()), phase
        assert list(RunDir(logdir).phase_dir(phase).glob("events.out.tfevents.*")), phase


def test_evaluation_plays_one_full_game_per_agent(pong_run) -> None:
    logdir = pong_run["logdir"]
    for agent in AGENTS:
        cache = json.loads((RunDir(logdir).eval_cache(agent) / "ckpt-10.json").read_text())
        (length,), (score,) = cache["lengths"], cache["returns"]
        # Full game to game over: a Pong score is between -21 and 21 and never 0 (no draws).
        assert 0 < length < TIME_LIMIT and -21 <= score <= 21 and score != 0, (agent, cache)
    reference = json.loads(RunDir(logdir).reference_scores.read_text())
    for who in ("random", "expert"):
        (length,), (score,) = reference[who]["lengths"], reference[who]["returns"]
        assert 0 < length < TIME_LIMIT and -21 <= score <= 21 and score != 0, (who, reference)
    rows = (RunDir(logdir).eval_dir / "results.csv").read_text().splitlines()
    header = rows[0].split(",")
    table = [dict(zip(header, row.split(","))) for row in rows[1:]]
    assert sorted(r["agent"] for r in table) == sorted(AGENTS)
    for row in table:
        assert row["env"] == "atari_pong" and row["episodes"] == "1"
        assert float(row["random"]) == reference["random"]["returns"][0]
        assert float(row["expert"]) == reference["expert"]["returns"][0]
    assert (RunDir(logdir).eval_dir / "results.md").is_file() and (RunDir(logdir).eval_dir / "fig3_atari_pong.png").is_file()
