"""The run directory keeps the config it was made with: stored config as the base, pinned keys,
a change log, relative paths made absolute, and no config left by a first call that fails."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

import train
from ditto_tf.errors import UserError
from ditto_tf.rundir import RunDir, is_pinned, resolve_path

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
