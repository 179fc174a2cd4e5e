"""DreamerV2 checkpoints: import a `variables.pkl` as a ditto_tf world model.

    python -m ditto_tf.dreamerv2 import VARIABLES_PKL --configs atari pong --logdir runs/pong
    python -m ditto_tf.dreamerv2 import VARIABLES_PKL --configs atari pong --out ckpt_dir
    python -m ditto_tf.dreamerv2 compare --configs atari pong --models runs/pong ckpt_dir \
        --episodes runs/pong/data/expert/val --out compare/

DreamerV2 (danijar/dreamerv2, PyPI `dreamerv2==2.2.0`) saves its agent with `Module.save`: a
pickled tuple of numpy arrays in `tf.Module.variables` order and no names. This module derives
that order and every shape from a ditto_tf config (the world model is DreamerV2's, layer for
layer), finds the world-model block in the pickle (a full agent or `WorldModel.save`), checks
every shape and writes a ditto_tf checkpoint. The mapping is documented in the README's DreamerV2 section.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import pickle
import sys
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ditto_tf.config import Config
from ditto_tf.dreamerv2_layout import Sizes, Slot, world_model_layout
from ditto_tf.errors import UserError, command, quiet_tensorflow
from ditto_tf.rundir import RunDir, absolute_paths, resolve_path

if TYPE_CHECKING:
    from ditto_tf.checkpoints import Checkpointer
    from ditto_tf.world_model import WorldModel


# ---------------------------------------------------------------------------------------------
# Reading and matching a pickle


def read_pickle(path: str | pathlib.Path) -> list[np.ndarray]:
    """The arrays of a DreamerV2 `variables.pkl`. Unpickling runs code: only call this on a
    path the user named."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with path.open("rb") as f:
            values = pickle.load(f)
    except Exception as e:  # any unpickling failure is a bad input file
        raise UserError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    if isinstance(values, dict) or not isinstance(values, (list, tuple)):
        raise UserError(f"{path}: expected DreamerV2's pickled tuple of arrays, got "
                        f"{type(values).__name__}")
    arrays = []
    for index, value in enumerate(values):
        if not isinstance(value, (np.ndarray, np.generic)):
            raise UserError(f"{path}: entry {index} is a {type(value).__name__}, not an array")
        arrays.append(np.asarray(value))
    return arrays


@dataclasses.dataclass
class Match:
    """Where the world model sits in a pickle."""

    layout: list[Slot]
    offset: int  # index of the first world-model tensor
    kind: str  # 'agent' | 'world_model'
    discount: bool


def _mismatches(values: Sequence[np.ndarray], layout: list[Slot], offset: int) -> list[int]:
    return [i for i, slot in enumerate(layout) if tuple(values[offset + i].shape) != slot.shape]


def _is_counter(value: np.ndarray) -> bool:
    return value.shape == () and np.issubdtype(value.dtype, np.integer)


def match_pickle(values: Sequence[np.ndarray], sizes: Sizes, load_reward: bool,
                 load_discount: bool, where: str = "variables.pkl") -> Match:
    """Locate and shape-check the world model in a DreamerV2 pickle.

    The world model is the last block of a full agent (`Agent.save`: tfstep, the actor-critic's
    update counter, slow critic, actor, critic and reward-norm state come first) and follows
    `tfstep` in `WorldModel.save`. Whether a discount head is present (DreamerV2's
    `pred_discount`) is detected. A mismatch raises a one-line UserError naming the tensor.
    """
    if not sizes.gru_norm:
        raise UserError("world_model.rssm.norm false: DreamerV2's GRU always has a LayerNorm; "
                        "import with --world_model.rssm.norm true")
    best: tuple[int, Match, list[int]] | None = None
    for discount in (True, False):
        layout = world_model_layout(sizes, discount, load_reward, load_discount and discount)
        offset = len(values) - len(layout)
        if offset < 0 or (offset > 0 and not _is_counter(values[0])):
            continue
        bad = _mismatches(values, layout, offset)
        kind = "world_model" if offset <= 1 else "agent"
        if not bad:
            if load_discount and not discount:
                raise UserError(f"{where}: has no discount head (DreamerV2 pred_discount off); "
                                "import with --world_model.discount_head false")
            return Match(layout, offset, kind, discount)
        if best is None or len(bad) < len(best[2]):
            best = (len(bad), Match(layout, offset, kind, discount), bad)
    if best is None:
        needed = len(world_model_layout(sizes, False, False, False))
        raise UserError(f"{where}: {len(values)} tensors, not a DreamerV2 agent or world model "
                        f"of this config (its world model alone has {needed} or {needed + 10})")
    _, match, bad = best
    slot, index = match.layout[bad[0]], match.offset + bad[0]
    raise UserError(
        f"{where}: tensor {index} ({slot.name}) has shape {tuple(values[index].shape)}, the "
        f"config expects {slot.shape}{_hint(slot)}; {len(bad)} of {len(match.layout)} world-model "
        "tensors differ")


def _hint(slot: Slot) -> str:
    """Which config keys fix a slot's shape (for the mismatch message)."""
    hints = {
        "encoder": "world_model.encoder.depth/kernels, env.grayscale",
        "heads/decoder": "world_model.decoder.depth/kernels, world_model.rssm, env.size/grayscale",
        "heads/reward": "world_model.rssm (feature size)",
        "heads/discount": "world_model.rssm (feature size)",
        "rssm/img_in": "world_model.rssm.stoch/discrete/hidden and the task's action count",
        "rssm/obs_out": "world_model.rssm.deter/hidden, encoder output (env.size, encoder)",
        "rssm": "world_model.rssm.deter/hidden/stoch/discrete",
    }
    for prefix, keys in hints.items():
        if slot.name.startswith(prefix):
            return f" (set by {keys})"
    return ""


# ---------------------------------------------------------------------------------------------
# Loading into a ditto_tf world model and writing a checkpoint


def _resolve(model: Any, path: tuple[str | int, ...]) -> Any:
    node = model
    for part in path:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    return node


def assign(model: WorldModel, values: Sequence[np.ndarray], match: Match) -> int:
    """Copy the matched arrays into `model` (a ditto_tf WorldModel); returns the count.

    Every trainable variable of `model` must receive exactly one tensor: a ditto_tf variable
    left over or a shape that differs from DreamerV2's means the two architectures diverged.
    """
    assigned: set[int] = set()
    for i, slot in enumerate(match.layout):
        if slot.target is None:
            continue
        try:
            variable = _resolve(model, slot.target)
        except (AttributeError, IndexError, TypeError):
            raise UserError(f"ditto_tf world model has no {'.'.join(map(str, slot.target))} "
                            f"for DreamerV2's {slot.name}") from None
        if tuple(variable.shape) != slot.shape:
            raise UserError(f"ditto_tf {'.'.join(map(str, slot.target))} has shape "
                            f"{tuple(variable.shape)}, DreamerV2's {slot.name} {slot.shape}")
        variable.assign(values[match.offset + i].astype(np.float32))
        assigned.add(id(variable))
    left = [v.path for v in model.trainable_variables if id(v) not in assigned]
    if left:
        raise UserError(f"ditto_tf world model variables without a DreamerV2 tensor: {left[:3]}")
    return len(assigned)


def import_checkpoint(pkl: str | pathlib.Path, config: Config, out: str | pathlib.Path,
                      actions: int | None = None, step: int | None = None) -> dict[str, Any]:
    """Import DreamerV2's `pkl` into a ditto_tf world model of `config`; save it under `out`.

    `actions` defaults to the action count of `config.task`'s env; `step` (the checkpoint's
    step) defaults to `world_model.steps`, so the world-model phase counts as done and the
    agent phases use the imported model. Returns a summary dict.
    """
    from ditto_tf import world_model as wm_lib

    discrete = None  # unknown when `actions` is given
    if actions is None:
        from ditto_tf.envs import make_env

        env = make_env(config, seed=0)
        actions, discrete = env.action_size, env.discrete
        env.close()
    import tensorflow as tf

    if tf.train.latest_checkpoint(str(out)) is not None:
        raise UserError(f"{out}: already holds a world-model checkpoint; import into a new "
                        "--out / --logdir (or remove it)")
    values = read_pickle(pkl)
    sizes = Sizes.from_config(config, actions)
    wm_cfg = config.world_model
    match = match_pickle(values, sizes, bool(wm_cfg.reward_head), bool(wm_cfg.discount_head),
                         where=str(pkl))
    model = wm_lib.WorldModel(config, actions)
    count = assign(model, values, match)
    step = int(wm_cfg.steps if step is None else step)
    checkpointer = world_model_checkpointer(model, config, out)
    path = checkpointer.save(step)
    # Read it back into a fresh model: a layer the checkpoint misses would load silently.
    fresh = wm_lib.WorldModel(config, actions)
    world_model_checkpointer(fresh, config, out).restore()
    for a, b in zip(model.trainable_variables, fresh.trainable_variables):
        if not np.array_equal(a.numpy(), b.numpy()):
            raise UserError(f"{path}: {a.path} did not survive the checkpoint round trip")
    params = int(sum(np.prod(s.shape) for s in match.layout if s.target is not None))
    return dict(checkpoint=path, kind=match.kind, actions=actions, discrete=discrete, tensors=len(values),
                loaded=count, parameters=params, discount_head=match.discount, step=step)


def world_model_checkpointer(model: WorldModel, config: Config, directory: str | pathlib.Path
                             ) -> Checkpointer:
    """A Checkpointer laid out as the world-model phase's (wm_training.run): `model` and a fresh
    `optimizer`, so that `--phase world_model` restores it (and fine-tunes it if its step is
    below world_model.steps) and the agent phases load it with `wm_training.load_world_model`."""
    from ditto_tf.checkpoints import Checkpointer
    from ditto_tf.world_model import WorldModelTrainer

    optimizer = WorldModelTrainer(model, config).optimizer
    return Checkpointer(directory, int(config.keep_checkpoints), model=model, optimizer=optimizer)


def write_model_spec(run: RunDir, actions: int, config: Config,
                     discrete: bool | None = None) -> None:
    """The run's `model.json`, written as the world-model phase writes it (by
    `RunDir.save_spec`) for an image model of `config`: the agent phases read it to rebuild the
    model. `discrete` None (unknown) leaves it out of the spec."""
    from ditto_tf.world_model import image_shape

    run.save_spec(actions, {"image": image_shape(config)}, discrete)


# ---------------------------------------------------------------------------------------------
# Command line


def _config(names: Sequence[str], overrides: Sequence[str]) -> Config:
    from ditto_tf.config import load_config

    return load_config(list(names), list(overrides))


@command()
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ditto_tf.dreamerv2", description=__doc__
                                     .split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    imp = commands.add_parser("import", help="DreamerV2 variables.pkl -> ditto_tf checkpoint")
    imp.add_argument("pickle", help="DreamerV2 variables.pkl (a pickle runs code: trust it)")
    imp.add_argument("--configs", nargs="+", default=[])
    where = imp.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="checkpoint directory to write")
    where.add_argument("--logdir", help="run directory: writes world_model/checkpoints there")
    imp.add_argument("--actions", type=int, help="action count (default: from the task's env)")
    imp.add_argument("--step", type=int, help="checkpoint step (default: world_model.steps)")
    cmp = commands.add_parser("compare", help="compare world models on held-out episodes")
    cmp.add_argument("--configs", nargs="+", default=[])
    cmp.add_argument("--models", nargs="+", required=True,
                     help="checkpoint dirs or logdirs; NAME=PATH names a column")
    cmp.add_argument("--episodes", required=True, help="folder of held-out episode .npz files")
    cmp.add_argument("--out", required=True, help="folder for compare.md and the video strips")
    cmp.add_argument("--max-episodes", type=int, default=10)
    cmp.add_argument("--actions", type=int, help="action count (default: from the episodes)")
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    quiet_tensorflow()  # TF_CPP_MIN_LOG_LEVEL=0 shows its start-up messages
    for key in ("pickle", "out", "logdir", "episodes"):  # absolute once, here: see ditto_tf.rundir
        if getattr(args, key, None):
            setattr(args, key, resolve_path(getattr(args, key)))
    config = _config(args.configs, overrides)
    if args.command == "import":
        run = RunDir(args.logdir) if args.logdir else None
        out = run.wm_checkpoints if run is not None else args.out
        info = import_checkpoint(args.pickle, config, out, args.actions, args.step)
        if run is not None:  # what the agent phases read besides the checkpoint
            write_model_spec(run, info["actions"], config, info["discrete"])
            if not run.exists():
                absolute_paths(config).save(run.config_path)
        print(f"imported {info['loaded']} tensors ({info['parameters']:,} parameters) of a "
              f"DreamerV2 {info['kind'].replace('_', ' ')} ({info['tensors']} tensors, "
              f"discount head {'yes' if info['discount_head'] else 'no'}) -> "
              f"{info['checkpoint']} (step {info['step']})")
    else:
        from ditto_tf import wm_compare

        table = wm_compare.run(config, args.models, args.episodes, args.out,
                               args.max_episodes, args.actions)
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
