"""Configs and CLI: merge order, flag parsing, every config error, train.py as a user runs it."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import ruamel.yaml

from ditto_tf.config import CONFIGS_PATH, Config, config_names, load_config
from ditto_tf.errors import UserError
from ditto_tf.rundir import RunDir

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def write_configs(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "configs.yaml"
    path.write_text(textwrap.dedent(text))
    return path


# --- merging ------------------------------------------------------------------------------------


def test_blocks_merge_in_command_line_order():
    assert load_config([]).world_model.batch == 50  # paper default
    assert load_config(["small"]).world_model.batch == 16
    assert load_config(["small", "debug"]).world_model.batch == 4
    assert load_config(["debug", "small"]).world_model.batch == 16
    # a later block changes only the keys it names
    config = load_config(["debug", "small"])
    assert config.world_model.length == 8 and config.world_model.rssm.deter == 200


def test_overrides_come_last():
    config = load_config(["small", "debug"], ["--world_model.batch", "7", "--seed", "3"])
    assert config.world_model.batch == 7 and config.seed == 3
    assert config.world_model.rssm.deter == 32  # untouched keys keep the merged value


def test_atari_game_blocks():
    config = load_config(["atari", "beamrider"])
    assert config.task == "atari_beam_rider"
    assert config.env.action_repeat == 4 and config.env.time_limit == 27000
    assert config.expert.env_id == "BeamRiderNoFrameskip-v4"


def test_every_named_block_merges_onto_defaults():
    names = config_names()
    for required in ["atari", "beamrider", "breakout", "mspacman", "qbert", "spaceinvaders",
                     "pong", "cartpole", "lunarlander", "bipedalwalker", "small", "debug"]:
        assert required in names
    for name in names:
        assert isinstance(load_config([name]), Config)


def test_config_access_and_immutability():
    config = load_config(["debug"])
    assert config["world_model.rssm.deter"] == config.world_model.rssm.deter == 32
    assert config.env.size == (32, 32)
    with pytest.raises(AttributeError):
        config.seed = 1
    with pytest.raises(UserError, match="unknown key 'world_model.nope'"):
        config.update({"world_model.nope": 1})
    assert config.update({"world_model.batch": 9}).world_model.batch == 9
    assert config.world_model.batch == 4


def test_save_round_trip(tmp_path):
    config = load_config(["atari", "pong", "debug"], ["--env.size", "48,48"])
    config.save(RunDir(tmp_path).config_path)
    saved = ruamel.yaml.YAML(typ="safe", pure=True).load(RunDir(tmp_path).config_path.read_text())
    assert saved == config.to_dict()
    assert saved["env"]["size"] == [48, 48] and saved["task"] == "atari_pong"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temp file left


# --- flag parsing -------------------------------------------------------------------------------


def test_int_from_scientific_notation():
    config = load_config([], ["--world_model.steps", "1e5"])
    assert config.world_model.steps == 100000 and type(config.world_model.steps) is int
    with pytest.raises(UserError, match="--world_model.steps: '1.5' is not a whole number"):
        load_config([], ["--world_model.steps", "1.5"])
    with pytest.raises(UserError, match="--world_model.steps: 'many' is not an int"):
        load_config([], ["--world_model.steps", "many"])


def test_floats_accept_ints_and_exponents():
    config = load_config([], ["--world_model.lr", "1", "--agent.entropy=1e-3"])
    assert config.world_model.lr == 1.0 and type(config.world_model.lr) is float
    assert config.agent.entropy == pytest.approx(1e-3)
    with pytest.raises(UserError, match="--world_model.lr: 'fast' is not a float"):
        load_config([], ["--world_model.lr", "fast"])


@pytest.mark.parametrize("text, value", [("true", True), ("False", False), ("yes", True),
                                         ("no", False), ("1", True), ("0", False)])
def test_bool_parsing(text, value):
    assert load_config([], ["--env.grayscale", text]).env.grayscale is value


def test_bad_bool():
    with pytest.raises(UserError, match="--env.grayscale: 'maybe' is not a bool"):
        load_config([], ["--env.grayscale", "maybe"])


@pytest.mark.parametrize("flags", [["--env.size", "32,32"], ["--env.size", "32", "32"],
                                   ["--env.size=32,32"]])
def test_list_parsing(flags):
    config = load_config([], flags + ["--seed", "2"])
    assert config.env.size == (32, 32) and config.seed == 2


def test_list_element_type():
    with pytest.raises(UserError, match="--env.size: 'x' is not an int"):
        load_config([], ["--env.size", "32,x"])


def test_string_values():
    assert load_config([], ["--task", "atari_pong"]).task == "atari_pong"


# --- config errors ------------------------------------------------------------------------------


def test_unknown_config_name_names_closest():
    with pytest.raises(UserError, match=r"unknown config 'beamrder'.*closest: beamrider"):
        load_config(["atari", "beamrder"])


def test_unknown_key_names_closest():
    with pytest.raises(UserError, match=r"unknown key 'world_model.bach'; closest: .*world_model.batch"):
        load_config([], ["--world_model.bach", "3"])
    with pytest.raises(UserError, match=r"unknown key 'nosuchkey'"):
        load_config([], ["--nosuchkey", "1"])


def test_section_instead_of_key():
    with pytest.raises(UserError, match=r"--env is a section; set one of its keys"):
        load_config([], ["--env", "3"])


def test_missing_value_and_stray_argument():
    with pytest.raises(UserError, match="--seed: missing value"):
        load_config([], ["--seed"])
    with pytest.raises(UserError, match="unexpected argument 'pong'"):
        load_config([], ["pong"])
    with pytest.raises(UserError, match="--seed: expects one value, got 2"):
        load_config([], ["--seed", "1", "2"])


def test_errors_in_yaml_blocks(tmp_path):
    path = write_configs(tmp_path, """
        defaults:
          seed: 0
          env: {size: [64, 64], grayscale: true}
        typo: {env: {sise: [32, 32]}}
        wrongtype: {seed: ten}
        section: {env: 3}
        boolean: {env: {grayscale: 1}}
    """)
    with pytest.raises(UserError, match=r"block 'typo': unknown key 'env.sise'; closest: env.size"):
        load_config(["typo"], path=path)
    with pytest.raises(UserError, match=r"block 'wrongtype': key 'seed' must be int like 0, got 'ten'"):
        load_config(["wrongtype"], path=path)
    with pytest.raises(UserError, match=r"block 'section': key 'env' is a section"):
        load_config(["section"], path=path)
    with pytest.raises(UserError, match=r"block 'boolean': key 'env.grayscale' must be bool"):
        load_config(["boolean"], path=path)


def test_unreadable_config_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config([], path=tmp_path / "none.yaml")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config([], path=write_configs(tmp_path, "defaults: [unclosed\n"))
    with pytest.raises(UserError, match="needs a top-level 'defaults' block"):
        load_config([], path=write_configs(tmp_path, "other: {a: 1}\n"))


# --- train.py as a user runs it -----------------------------------------------------------------


def run_train(*args: str, cwd: pathlib.Path = REPO_ROOT, script: list[str] | None = None,
              env: dict | None = None) -> subprocess.CompletedProcess:
    command = script or [sys.executable, str(REPO_ROOT / "train.py")]
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([*command, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=120)


def _one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


def test_cli_unknown_key(tmp_path):
    logdir = tmp_path / "run"
    result = run_train("--configs", "atari", "beamrider", "--logdir", str(logdir), "--nosuchkey", "1")
    _one_line_error(result, "nosuchkey")
    assert not RunDir(logdir).config_path.exists()


def test_cli_unknown_config_and_bad_value(tmp_path):
    result = run_train("--configs", "atari", "beamrder", "--logdir", str(tmp_path))
    _one_line_error(result, "beamrder", "beamrider")
    result = run_train("--configs", "debug", "--logdir", str(tmp_path), "--world_model.batch", "x")
    _one_line_error(result, "--world_model.batch", "'x'")


def test_cli_help_lists_phases_and_configs():
    result = run_train("--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for phase in ["collect", "world_model", "ditto", "dgail", "dbc", "bc", "all"]:
        assert phase in text
    for name in config_names(CONFIGS_PATH):
        assert name in text


def test_cli_writes_effective_config_and_runs_phase(tmp_path):
    # A real train.main run with one phase registered to a probe that records what it received.
    (tmp_path / "probe_phase.py").write_text(textwrap.dedent("""
        import json
        from ditto_tf.rundir import RunDir
        def run(config, run):
            assert isinstance(run, RunDir)
            saved = run.config_path.read_text()
            (run.root / "probe.json").write_text(json.dumps(
                {"batch": config.world_model.batch, "size": list(config.env.size),
                 "saved_first": "batch: 7" in saved}))
    """))
    driver = ("import sys, train, probe_phase; train.phase_function = lambda phase: probe_phase.run; "
              "sys.exit(train.main(sys.argv[1:]))")
    logdir = tmp_path / "run"
    result = run_train(
        "--configs", "cartpole", "debug", "--logdir", str(logdir), "--phase", "collect",
        "--world_model.batch", "7", "--env.size", "16", "16",
        script=[sys.executable, "-c", driver],
        env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])},
    )
    assert result.returncode == 0, result.stderr
    saved = ruamel.yaml.YAML(typ="safe", pure=True).load(RunDir(logdir).config_path.read_text())
    expected = load_config(["cartpole", "debug"], ["--world_model.batch", "7", "--env.size", "16,16"])
    # a relative expert.folder is stored absolute (against the working directory, REPO_ROOT)
    assert saved == expected.update({"expert.folder": str(REPO_ROOT / expected.expert.folder)}).to_dict()
    assert json.loads((logdir / "probe.json").read_text()) == {
        "batch": 7, "size": [16, 16], "saved_first": True}


def test_cli_failed_run_keeps_the_previous_config(tmp_path):
    # A run that fails on bad input (here: a phase with no inputs) must not leave its own
    # config.yaml behind over the one the logdir's checkpoints were made with.
    logdir = tmp_path / "run"
    logdir.mkdir()
    first = load_config(["cartpole", "debug"])
    first.save(RunDir(logdir).config_path)
    before = RunDir(logdir).config_path.read_text()
    result = run_train("--configs", "cartpole", "debug", "--logdir", str(logdir),
                       "--phase", "world_model", "--world_model.steps", "64")
    assert result.returncode == 2
    assert "no episodes" in result.stderr
    assert RunDir(logdir).config_path.read_text() == before
    assert not (logdir / "config_changes.jsonl").exists()  # the change did not happen
