"""The run directory keeps the config it was made with: stored config as the base, pinned keys,
a change log, relative paths made absolute, and no config left by a first call that fails."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

import train
from ditto_tf.errors import UserError
from ditto_tf.rundir import RunDir, checkpoint_state, is_pinned, resolve_path

MADE_WITH = ["--env.action_repeat", "2", "--env.crop", "0.3,0.8,0,1", "--agent.steps", "7"]


def _made(tmp_path: pathlib.Path) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.configure(["cartpole", "debug"], MADE_WITH)
    return run


def test_flags_not_given_keep_their_stored_values(tmp_path):
    run = _made(tmp_path)
    config = run.configure([], ["--agent.steps", "9"])  # e.g. `train.py --logdir D --phase ditto`
    assert config.env.action_repeat == 2 and list(config.env.crop) == [0.3, 0.8, 0.0, 1.0]
    assert config.world_model.rssm.deter == 32  # the debug block's size, not the default's
    assert config.agent.steps == 9
    assert run.stored_config().agent.steps == 9
    (line,) = run.changes_path.read_text().splitlines()
    assert json.loads(line)["changes"] == {"agent.steps": [7, 9]}


def test_pinned_keys_cannot_change_and_nothing_is_touched(tmp_path):
    run = _made(tmp_path)
    before = run.config_path.read_bytes()
    with pytest.raises(UserError) as error:
        run.configure(["cartpole"], ["--env.action_repeat", "1", "--world_model.rssm.deter", "64",
                                     "--agent.steps", "100"])
    message = str(error.value)
    assert "\n" not in message and str(run.config_path) in message
    assert "env.action_repeat: 2 -> 1" in message and "world_model.rssm.deter: 32 -> 64" in message
    assert "agent.steps" not in message  # not pinned, not listed
    assert run.config_path.read_bytes() == before and not run.changes_path.exists()


@pytest.mark.parametrize("key", ["task", "env.size", "expert.algo", "expert.env_id", "expert.source",
                                 "expert.deterministic", "data.wm_policy", "data.wm_epsilon",
                                 "world_model.rssm.stoch", "world_model.encoder.depth",
                                 "world_model.decoder.kernels", "world_model.reward_head",
                                 "agent.actor.units", "agent.critic.layers", "dgail.disc.units",
                                 "bc.depth", "bc.mlp.units", "bc.frame_stack"])
def test_what_was_collected_and_built_is_pinned(key):
    assert is_pinned(key)


@pytest.mark.parametrize("key", ["agent.steps", "agent.actor_lr", "seed", "log_every", "eval.episodes",
                                 "expert.folder", "expert.cache", "world_model.steps",
                                 "data.expert_train", "ditto.reward_latent"])
def test_budgets_rates_seeds_and_input_locations_may_change(key):
    assert not is_pinned(key)


def test_relative_input_locations_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = RunDir("rel/run")
    assert run.root == tmp_path / "rel" / "run"
    run.root.mkdir(parents=True)
    config = run.configure(["debug"], ["--expert.folder", "zoo", "--expert.cache", "~/c"])
    assert config.expert.folder == str(tmp_path / "zoo")
    assert config.expert.cache == "~/c"  # portable as written
    assert resolve_path("a/../b") == tmp_path / "b"


def test_failed_first_call_leaves_no_config_and_no_directory(tmp_path, capsys):
    logdir = tmp_path / "new"
    code = train.main(["--configs", "cartpole", "debug", "--logdir", str(logdir), "--phase", "collect",
                       "--expert.folder", str(tmp_path / "nonexistent")])
    assert code == 2 and "expert.folder" in capsys.readouterr().err
    assert not logdir.exists()


def test_pinned_change_through_the_cli_is_one_line(tmp_path, capsys):
    run = _made(tmp_path)
    os.utime(run.config_path, (0, 0))
    code = train.main(["--logdir", str(run.root), "--phase", "evaluate", "--env.action_repeat", "4"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "env.action_repeat: 2 -> 4" in err
    assert run.config_path.stat().st_mtime == 0  # not even rewritten


def test_layout_is_spelled_once(tmp_path):
    run = RunDir(tmp_path / "run")
    root = run.root
    assert run.expert_episodes("train") == run.episodes("expert_train") == root / "data/expert/train"
    assert run.wm_episodes == root / "data/wm" and run.manifest == root / "data/manifest.jsonl"
    assert run.wm_checkpoints == run.checkpoints("world_model") == root / "world_model/checkpoints"
    assert run.model_spec == root / "world_model/model.json"
    assert run.margin == root / "world_model/margin.json"
    assert run.checkpoints("dbc") == root / "dbc/checkpoints"
    assert run.metrics("bc") == root / "bc/metrics.jsonl"
    assert run.eval_cache("ditto") == root / "eval/ditto"
    assert run.reference_scores == root / "eval/reference.json"
    assert run.timings == root / "timings.json" and run.latents == root / "latents"


def test_latest_step_reads_the_state_tensorflow_writes(tmp_path):
    import tensorflow as tf

    run = RunDir(tmp_path / "run")
    assert run.latest_step("dbc") == 0
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)),
                                         str(run.checkpoints("dbc")), max_to_keep=2)
    for step in (5, 10, 15):
        manager.save(checkpoint_number=step)
    latest, kept = checkpoint_state(run.checkpoints("dbc"))
    state = tf.train.get_checkpoint_state(str(run.checkpoints("dbc")))
    assert latest == state.model_checkpoint_path and kept == list(state.all_model_checkpoint_paths)
    assert run.latest_step("dbc") == 15
    (run.checkpoints("dbc") / "checkpoint").write_text("garbage {{\n")
    assert run.latest_step("dbc") == 0
    with pytest.raises(UserError, match=r"dbc/checkpoints/checkpoint: unreadable"):
        checkpoint_state(run.checkpoints("dbc"))


def test_spec_gives_the_action_space_without_an_env(tmp_path, monkeypatch):
    from ditto_tf import envs
    from ditto_tf.config import load_config

    run = RunDir(tmp_path / "run")
    run.save_spec(3, {"vector": (4,)}, discrete=False)
    assert run.spec() == {"action_size": 3, "discrete": False, "obs_shapes": {"vector": [4]}}
    monkeypatch.setattr(envs, "make_env", lambda *a, **k: pytest.fail("built an env"))
    assert run.action_space(load_config(["cartpole", "debug"])) == (3, False)


def test_an_old_spec_falls_back_to_the_env(tmp_path):
    from ditto_tf.config import load_config

    run = RunDir(tmp_path / "run")
    run.save_spec(7, {"image": (64, 64, 1)}, discrete=None)  # as written before `discrete`
    assert run.spec() == {"action_size": 7, "image_shape": [64, 64, 1]}
    assert run.action_space(load_config(["cartpole", "debug"])) == (2, True)  # CartPole's env
