"""Round trip with the real DreamerV2: its checkpoint, imported, reproduces its outputs.

The set-up installs `dreamerv2==2.2.0` from PyPI (no deps) into a cache folder
(DITTO_DREAMERV2_CACHE, default ~/.cache/ditto_tf/dreamerv2-2.2.0), then runs
`tests/dreamerv2_reference.py` in a subprocess with legacy Keras: DreamerV2's own Agent trains
for two steps on a tiny config and dumps `variables.pkl` and its outputs on fixed inputs. The
tests import the pickle with `python -m ditto_tf.dreamerv2 import` and compare in float32.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import dreamerv2_reference  # noqa: E402  (tests/dreamerv2_reference.py: set-up helpers)

from ditto_tf import dreamerv2, published
from ditto_tf.config import load_config
from ditto_tf.errors import UserError
from ditto_tf.rundir import RunDir

TOLERANCE = 1e-4
# The debug block (gym_CartPole-v1, 32x32 gray, 2 actions) with DreamerV2's optional heads on.
OVERRIDES = ["--precision", "float32", "--world_model.reward_head", "true",
             "--world_model.discount_head", "true"]
NO_HEADS = ["--precision", "float32"]


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> pathlib.Path:
    """A folder with DreamerV2's variables.pkl, wm_variables.pkl and reference.npz."""
    try:
        package = dreamerv2_reference.install()
    except RuntimeError as e:
        pytest.skip(str(e))
    out = tmp_path_factory.mktemp("dreamerv2")
    dreamerv2_reference.run(package, dreamerv2_reference.spec_for(load_config(["debug"]), 2), out)
    return out


def _import(argv: list[str], capsys) -> str:
    code = dreamerv2.main(["import", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def _outputs_match(model, ref, heads: bool) -> None:
    """ditto_tf's model on DreamerV2's fixed inputs equals DreamerV2's dumped outputs."""
    errors = dreamerv2_reference.differences(model, ref, heads)
    assert len(errors) == (11 if heads else 9)
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, f"{worst}: max abs difference {errors[worst]:.3g}"


def test_full_agent_pickle_into_logdir_reproduces_dreamerv2(reference, tmp_path, capsys):
    logdir = tmp_path / "run"
    out = _import([str(reference / "variables.pkl"), "--configs", "debug", "--logdir",
                   str(logdir), *OVERRIDES], capsys)
    assert "DreamerV2 agent" in out and "discount head yes" in out
    assert RunDir(logdir).config_path.is_file()
    assert json.loads(RunDir(logdir).model_spec.read_text())["action_size"] == 2
    config = load_config(["debug"], OVERRIDES)
    # The loader the DITTO / D-GAIL / D-BC phases use, so they can skip --phase world_model.
    from ditto_tf.wm_training import load_world_model

    model = load_world_model(config, RunDir(logdir))
    _outputs_match(model, np.load(reference / "reference.npz"), heads=True)


def test_world_model_pickle_without_heads(reference, tmp_path, capsys):
    out = _import([str(reference / "wm_variables.pkl"), "--configs", "debug", "--out",
                   str(tmp_path / "ckpt"), "--actions", "2", "--step", "7", *NO_HEADS], capsys)
    assert "DreamerV2 world model" in out and "(step 7)" in out
    again = dreamerv2.main(["import", str(reference / "wm_variables.pkl"), "--configs", "debug",
                            "--out", str(tmp_path / "ckpt"), "--actions", "2", *NO_HEADS])
    assert again == 2 and "already holds a world-model checkpoint" in capsys.readouterr().err
    from ditto_tf.wm_training import restore_world_model

    model = restore_world_model(load_config(["debug"], NO_HEADS), tmp_path / "ckpt", 2)
    assert model.reward_head is None and model.discount_head is None
    ref = np.load(reference / "reference.npz")
    _outputs_match(model, ref, heads=False)
    # The comparison is sensitive: a 1% change of the GRU's LayerNorm scale shows up.
    gamma = model.rssm.cell.norm.gamma
    gamma.assign(gamma * 1.01)
    assert dreamerv2_reference.differences(model, ref, heads=False)["deter"] > 10 * TOLERANCE


def test_layout_matches_dreamerv2_variable_order(reference):
    """Our derived order and shapes are DreamerV2's (checked against its variable names)."""
    ref = np.load(reference / "reference.npz")
    values = dreamerv2.read_pickle(reference / "variables.pkl")
    sizes = dreamerv2.Sizes.from_config(load_config(["debug"]), actions=2)
    match = dreamerv2.match_pickle(values, sizes, True, True)
    names = list(ref["variable_names"])
    assert match.kind == "agent" and match.discount and len(names) == len(values)
    for i, slot in enumerate(match.layout):
        kind = slot.name.rsplit("/", 1)[1]  # kernel / bias / gamma / beta
        assert names[match.offset + i].endswith(f"{kind}:0"), (slot.name, names[match.offset + i])
        assert values[match.offset + i].shape == slot.shape


def test_shape_mismatch_is_one_line_naming_the_tensor(reference, tmp_path, capsys):
    code = dreamerv2.main(["import", str(reference / "variables.pkl"), "--configs", "debug",
                           "--out", str(tmp_path / "x"), "--actions", "2", *NO_HEADS,
                           "--world_model.rssm.hidden", "48"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "rssm/_cell/_layer/kernel" in err and "(64, 96)" in err and "(80, 96)" in err
    assert not (tmp_path / "x").exists()


def test_not_a_pickle_and_wrong_action_count(reference, tmp_path):
    bad = tmp_path / "variables.pkl"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="variables.pkl: not a readable pickle"):
        dreamerv2.read_pickle(bad)
    values = dreamerv2.read_pickle(reference / "variables.pkl")
    sizes = dreamerv2.Sizes.from_config(load_config(["debug"]), actions=6)
    with pytest.raises(UserError, match=r"rssm/img_in/kernel.*\(18, 32\).*\(22, 32\)"):
        dreamerv2.match_pickle(values, sizes, False, False)


def test_published_scores_are_labelled_online_rl():
    assert published.dreamerv2_score("atari_pong") == 18.4
    assert published.dreamerv2_score("atari_beam_rider") == 17917.5
    assert published.dreamerv2_score("gym_CartPole-v1") is None
    assert "online RL" in published.DREAMERV2_SCORES_LABEL


def _episodes(directory: pathlib.Path, count: int, length: int) -> None:
    """Episodes of drifting blobs with random actions, in the ditto_tf file format."""
    from ditto_tf.data.episodes import save_episode

    rng = np.random.default_rng(1)
    grid = np.arange(32)
    for index in range(count):
        pos = rng.uniform(8, 24, 2) + np.cumsum(rng.normal(0, 0.7, (length, 2)), 0)
        dist = (grid[None, :, None] - pos[:, 0, None, None]) ** 2 + \
            (grid[None, None, :] - pos[:, 1, None, None]) ** 2
        image = (255 * np.exp(-dist / 30.0))[..., None].astype(np.uint8)
        action = np.eye(2, dtype=np.float32)[rng.integers(0, 2, length)]
        action[0] = 0
        flags = np.zeros(length, bool)
        save_episode(directory, dict(
            image=image, action=action, reward=np.zeros(length, np.float32),
            is_first=np.r_[True, flags[1:]], is_last=np.r_[flags[1:], True],
            is_terminal=flags), index)


def test_compare_imported_and_trained(reference, tmp_path, capsys):
    from ditto_tf.checkpoints import Checkpointer
    from ditto_tf.world_model import WorldModel, WorldModelTrainer

    config = load_config(["debug"], NO_HEADS)
    episodes = tmp_path / "val"
    _episodes(episodes, count=2, length=120)  # 2 windows of 5 + 45 steps each
    _import([str(reference / "wm_variables.pkl"), "--configs", "debug", "--out",
             str(tmp_path / "imported"), "--actions", "2", *NO_HEADS], capsys)
    # A ditto_tf world model trained for a few updates, saved as the world-model phase does.
    model = WorldModel(config, 2)
    trainer = WorldModelTrainer(model, config)
    batch = {k: tf_batch for k, tf_batch in _windows_for_training(episodes).items()}
    for _ in range(3):
        trainer.train(batch)
    Checkpointer(tmp_path / "trained", model=model, optimizer=trainer.optimizer).save(3)

    out = tmp_path / "report"
    code = dreamerv2.main(["compare", "--configs", "debug", *NO_HEADS, "--models",
                           f"dreamerv2={tmp_path / 'imported'}", f"again={tmp_path / 'imported'}",
                           f"trained={tmp_path / 'trained'}", "--episodes", str(episodes),
                           "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    text = (out / "compare.md").read_text()
    assert text == printed.out.rstrip("\n") + "\n"
    assert "| metric | dreamerv2 | again | trained |" in text
    results = json.loads((out / "compare.json").read_text())
    assert results["windows"] == 4 and results["context"] == 5
    a, b, c = (results["models"][n] for n in ("dreamerv2", "again", "trained"))
    keys = ("recon", "openloop_15", "openloop_45", "kl")
    assert all(np.isfinite(a[k]) and a[k] >= 0 for k in keys)
    assert all(a[k] == b[k] for k in keys)  # deterministic: latent modes, same windows
    assert any(a[k] != c[k] for k in keys)  # two different models
    import tensorflow as tf

    strip = tf.io.decode_png((out / "openloop-trained.png").read_bytes()).numpy()
    assert strip.shape == (3 * 34, 17 * 34, 1)  # truth / model / error x every 3rd of 50 steps


def _windows_for_training(directory: pathlib.Path) -> dict[str, np.ndarray]:
    from ditto_tf.data.episodes import load_episodes

    episodes = load_episodes(directory)
    keys = ("image", "action", "reward", "is_first", "is_last", "is_terminal")
    return {k: np.stack([e[k][s:s + 8] for e in episodes for s in (0, 40)]) for k in keys}


def test_agent_phase_runs_on_imported_world_model(reference, tmp_path, capsys):
    """collect -> import (instead of --phase world_model) -> the world-model phase counts it
    as trained -> D-BC trains on the imported DreamerV2 world model."""
    import train

    logdir = tmp_path / "run"
    flags = ["--configs", "debug", "--logdir", str(logdir), "--expert.source", "random",
             "--dbc.steps", "3", *NO_HEADS]
    assert train.main([*flags, "--phase", "collect"]) == 0
    _import([str(reference / "variables.pkl"), "--configs", "debug", "--logdir", str(logdir),
             *NO_HEADS], capsys)
    assert train.main([*flags, "--phase", "world_model"]) == 0
    assert "already trained" in capsys.readouterr().out
    assert train.main([*flags, "--phase", "dbc"]) == 0
    assert (RunDir(logdir).checkpoints("dbc") / "checkpoint").is_file()
