"""RL Zoo plumbing: read zoo run folders and old zips, download from the hub, train with rl-zoo3.

Folder layout (rl-trained-agents): `<folder>/<algo>/<EnvId>_<n>/<EnvId>.zip` with
`<EnvId>/config.yml`, `args.yml` and, when the zoo normalised observations, `vecnormalize.pkl`.

Security: SB3 zips and `vecnormalize.pkl` are pickles that can run code when loaded. Only load
them from a folder the user named, a hub repo the user named, or a folder trained here. The zoo's
YAML files are read with a loader that builds plain dicts and runs nothing.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import pathlib
import pickle
import re
import shutil
import time
import warnings
import zipfile
from typing import Any

import gymnasium as gym
import yaml

from ditto_tf.config import PROJECT_ROOT, Config
from ditto_tf.errors import UserError, about, first_line
from ditto_tf.files import atomic_write_text

FOLDER_HINT = "use a local zoo folder instead: --expert.source folder --expert.folder PATH"
# Rough single-process rates on a 2-core CPU (env steps/s while training), for the estimate.
TRAIN_RATES = {"atari": 350.0, "box2d": 1200.0, "minatar": 4000.0, "default": 2500.0}
# The project's own zoo folder: shipped experts (MinAtar) and, under hyperparams/, hyperparameters
# in rl-zoo3's format for env ids the zoo has none for. `expert.source train` looks there first.
PROJECT_ZOO = PROJECT_ROOT / "experts"


def file_name(env_id: str) -> str:
    """The name a zoo folder gives `env_id` (huggingface_sb3's EnvironmentName: `/` -> `-`)."""
    return env_id.replace("/", "-")

# ---------------------------------------------------------------- compatibility with old zips

class _CompatUnpickler(pickle.Unpickler):
    """Unpickler for 2021 zoo files: `gym.*` classes become `gymnasium.*`, `numpy.core` -> `_core`."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "gym" or module.startswith("gym."):
            module = "gymnasium" + module[3:]
        elif module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


def compat_load(stream: Any) -> Any:
    return _CompatUnpickler(stream).load()


def _clean_space(space: Any) -> gym.Space:
    """A fresh gymnasium space equal to `space` (old ones carry a numpy RandomState)."""
    if isinstance(space, gym.spaces.Discrete):
        return gym.spaces.Discrete(int(space.n), start=int(getattr(space, "start", 0)))
    if isinstance(space, gym.spaces.Box):
        return gym.spaces.Box(low=space.low, high=space.high, dtype=space.dtype)
    return space


class _ZooLoader(yaml.SafeLoader):
    """Safe YAML loader that also reads the zoo's `!!python/object/apply:collections.OrderedDict`."""


def _ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict:
    (pairs,) = loader.construct_sequence(node, deep=True)
    return {key: value for key, value in pairs}


_ZooLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _ordered_dict)
_ZooLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node))
)


def read_zoo_yaml(path: pathlib.Path) -> dict[str, Any]:
    """Read a zoo `config.yml` / `args.yml` into a plain dict without running code."""
    with about(path, "not a readable RL Zoo YAML file", (OSError, yaml.YAMLError)):
        data = yaml.load(path.read_text(), Loader=_ZooLoader)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of hyperparameters")
    return data


# ---------------------------------------------------------------- locating a zoo run

def listing(path: pathlib.Path) -> str:
    names = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    return ", ".join(names[:12]) + (" ..." if len(names) > 12 else "") if names else "nothing"


def find_run(folder: pathlib.Path, algo: str, env_id: str, run: int = 0) -> pathlib.Path:
    """`<folder>/<algo>/<name>_<n>` with the highest n (or n = `run`), holding `<name>.zip`, where
    `name` is `file_name(env_id)` (`MinAtar/Breakout-v0` -> `MinAtar-Breakout-v0`)."""
    env_id = file_name(env_id)
    if not folder.is_dir():
        raise UserError(f"expert.folder {folder}: no such folder (want the RL Zoo layout "
                        f"<folder>/<algo>/<env_id>_<n>/<env_id>.zip); or use --expert.source train")
    algo_dir = folder / algo
    if not algo_dir.is_dir():
        raise UserError(f"expert.folder {folder}: no {algo}/ folder; found: {listing(folder)}")
    runs = {int(m.group(1)): p for p in algo_dir.iterdir()
            if (m := re.fullmatch(re.escape(env_id) + r"_(\d+)", p.name)) and p.is_dir()}
    if not runs:
        raise UserError(f"expert.folder {algo_dir}: no {env_id}_<n> run; found: {listing(algo_dir)}")
    if run and run not in runs:
        raise UserError(f"expert.run {run}: {algo_dir}/{env_id}_{run} not found; runs: {sorted(runs)}")
    path = runs[run or max(runs)]
    if not (path / f"{env_id}.zip").is_file():
        raise UserError(f"{path}: no {env_id}.zip in this zoo run; found: {listing(path)}")
    return path


def algorithms() -> dict[str, Any]:
    import rl_zoo3  # slow import (torch, SB3): only when an expert is needed

    return rl_zoo3.ALGOS


def load_model(zip_path: pathlib.Path, algo: str) -> Any:
    """Load an SB3 zip as it is, including 2021 zoo zips that pickle `gym` spaces and schedules."""
    algos = algorithms()
    if algo not in algos:
        raise UserError(f"expert.algo {algo!r}: not an rl-zoo3 algorithm; choose from {', '.join(algos)}")
    if not zipfile.is_zipfile(zip_path):
        raise UserError(f"{zip_path}: not an SB3 model (not a zip file)")
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        if "data" not in names or "policy.pth" not in names:
            raise UserError(f"{zip_path}: not an SB3 model (no 'data' and 'policy.pth' inside)")
        try:
            data = json.loads(archive.read("data"))
        except ValueError:
            raise UserError(f"{zip_path}: not an SB3 model (its 'data' entry is not JSON)") from None
    # Schedules are only needed to train; replacing them also avoids unpickling old lambdas.
    custom: dict[str, Any] = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0,
                              "clip_range": lambda _: 0.0}
    for key in ("observation_space", "action_space"):
        entry = data.get(key)
        if not isinstance(entry, dict) or ":serialized:" not in entry:
            raise UserError(f"{zip_path}: not an SB3 model (no {key} inside)")
        with about(zip_path, f"cannot read its {key}"):
            custom[key] = _clean_space(compat_load(io.BytesIO(base64.b64decode(entry[":serialized:"]))))
    # a corrupt or foreign zip: name it, one line
    with about(zip_path, f"cannot load as an SB3 {algo.upper()} model"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # old zips pickle `numpy.core` names
        return algos[algo].load(str(zip_path), custom_objects=custom, device="cpu")



# ---------------------------------------------------------------- hub

def download(org: str, algo: str, env_id: str, cache: pathlib.Path, timeout: float = 5.0) -> pathlib.Path:
    """rl-zoo3's hub download of `<org>/<algo>-<env_id>` into `<cache>/hub/<org>` (zoo layout).

    A cached copy is used without network. Offline, this fails within `timeout` seconds.
    """
    root = cache / "hub" / org
    final = root / algo / f"{env_id}_1"
    if (final / f"{env_id}.zip").is_file():
        return final
    repo = f"{org}/{algo}-{env_id}"
    if algo not in algorithms():
        raise UserError(f"expert.algo {algo!r}: not an rl-zoo3 algorithm; choose from {', '.join(algorithms())}")
    import requests
    from huggingface_hub import constants

    endpoint = os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise UserError(f"expert.source hub: HF_HUB_OFFLINE is set, cannot download {repo}; {FOLDER_HINT}")
    try:
        reply = requests.get(f"{endpoint}/api/models/{repo}", timeout=timeout)
    except requests.RequestException as e:
        raise UserError(f"expert.source hub: cannot reach {endpoint} to download {repo} "
                        f"(offline? {type(e).__name__}); {FOLDER_HINT}") from None
    if reply.status_code == 404:
        raise UserError(f"expert.source hub: no hub repo {repo} (check expert.hub_org, algo, env_id)")
    if reply.status_code != 200:
        raise UserError(f"expert.source hub: {endpoint} answered {reply.status_code} for {repo}; {FOLDER_HINT}")
    from huggingface_sb3 import EnvironmentName
    from rl_zoo3.load_from_hub import download_from_hub

    # huggingface_sb3 refuses pickled models unless TRUST_REMOTE_CODE is set: naming the sb3
    # org (the zoo's own) in the config is that consent; another org must set it explicitly.
    if org != "sb3" and os.environ.get("TRUST_REMOTE_CODE", "").lower() not in ("1", "true", "yes"):
        raise UserError(f"expert.hub_org {org}: its zips run code when loaded; set TRUST_REMOTE_CODE=True "
                        "if you trust it")
    staging = root / f".download-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    previous = os.environ.get("TRUST_REMOTE_CODE")
    os.environ["TRUST_REMOTE_CODE"] = "True"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            download_from_hub(algo, EnvironmentName(env_id), 1, str(staging), org, force=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / algo / f"{env_id}_1", final)  # appears complete or not at all
    except Exception as e:  # noqa: BLE001
        raise UserError(f"expert.source hub: download of {repo} failed ({first_line(e, typed=True)}); "
                        f"{FOLDER_HINT}") from None
    finally:
        if previous is None:
            os.environ.pop("TRUST_REMOTE_CODE", None)
        else:
            os.environ["TRUST_REMOTE_CODE"] = previous
        shutil.rmtree(staging, ignore_errors=True)
    return final


# ---------------------------------------------------------------- local training with rl-zoo3

def runnable_id(env_id: str) -> str:
    """`env_id` if gymnasium knows it, else its newest registered version (LunarLander-v2 -> v3)."""
    register_suites(env_id)
    if env_id in gym.registry:
        return env_id
    base = env_id.rsplit("-v", 1)[0]
    versions = sorted((int(m.group(1)), k) for k in gym.registry
                      if (m := re.fullmatch(re.escape(base) + r"-v(\d+)", k)))
    if not versions:
        raise UserError(f"expert.env_id {env_id!r}: not a gymnasium env id")
    return versions[-1][1]


def register_suites(env_id: str = "") -> None:
    """Register the ALE's gymnasium ids and, for a `MinAtar/...` id, MinAtar's (neither registers
    itself on import; MinAtar only when asked, so that other envs do not need it installed)."""
    import ale_py

    gym.register_envs(ale_py)
    if env_id.startswith("MinAtar/") and "MinAtar/Breakout-v0" not in gym.registry:
        try:
            from minatar.gym import register_envs
        except ImportError:
            raise UserError(f"expert.env_id {env_id!r}: needs the minatar package "
                            "(pip install -r requirements.txt)") from None
        register_envs()


def hyperparams_file(algo: str, env_id: str) -> pathlib.Path:
    """The zoo-format file with `algo`'s hyperparameters for `env_id`: the project's
    (`experts/hyperparams/<algo>.yml`) when it has them, else rl-zoo3's own."""
    import rl_zoo3

    ours = PROJECT_ZOO / "hyperparams" / f"{algo}.yml"
    if ours.is_file() and env_id in (yaml.safe_load(ours.read_text()) or {}):
        return ours
    return pathlib.Path(rl_zoo3.__file__).parent / "hyperparams" / f"{algo}.yml"


def _shown(path: pathlib.Path) -> str:
    """`path` relative to the project when inside it (portable), else as it is."""
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def _hyperparams_and_file(algo: str, env_id: str) -> tuple[dict[str, Any], pathlib.Path]:
    """`zoo_hyperparams` and the file they were read from (`hyperparams_file`)."""
    if algo not in algorithms():
        raise UserError(f"expert.algo {algo!r}: not an rl-zoo3 algorithm; choose from {', '.join(algorithms())}")
    train_id = runnable_id(env_id)
    path = hyperparams_file(algo, train_id)
    blocks = yaml.safe_load(path.read_text()) if path.is_file() else {}
    atari = "AtariEnv" in str(gym.spec(train_id).entry_point)
    for key in (train_id, env_id, "atari" if atari else None):
        if key in blocks:
            return dict(blocks[key]), path
    raise UserError(f"expert.env_id {env_id!r}: rl-zoo3 has no {algo} hyperparameters for it "
                    "(source train needs them)")


def zoo_hyperparams(algo: str, env_id: str) -> dict[str, Any]:
    """The zoo-format hyperparameters for `algo` on `env_id` (`hyperparams_file`; Atari ids share
    rl-zoo3's `atari` block)."""
    return _hyperparams_and_file(algo, env_id)[0]


def train_steps(config: Config, algo: str | None = None, hyper: dict[str, Any] | None = None) -> int:
    """The step budget of `expert.source train`: `expert.train_steps`, or the zoo's n_timesteps
    (from `hyper` when the caller has read them already)."""
    steps = int(config.expert.train_steps)
    if steps > 0:
        return steps
    hyper = hyper or zoo_hyperparams(algo or config.expert.algo, config.expert.env_id)
    return int(hyper["n_timesteps"])


def train(config: Config, algo: str) -> tuple[pathlib.Path, str]:
    """Train with rl-zoo3's ExperimentManager and the zoo's hyperparameters; resumable.

    Output: `<expert.cache>/trained/<steps>steps_seed<seed>/<algo>/<EnvId>_1` (zoo layout),
    checkpointed to a `.work` folder beside it, so a killed run continues where it stopped.
    Returns (run folder, the env id it was trained on).
    """
    from rl_zoo3.exp_manager import ExperimentManager
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm import tqdm

    cfg, seed = config.expert, int(config.seed)
    hyper, hyper_path = _hyperparams_and_file(algo, cfg.env_id)  # the file: for the log and provenance
    env_id, steps = runnable_id(cfg.env_id), train_steps(config, algo, hyper)
    name = file_name(env_id)  # MinAtar/Breakout-v0 -> MinAtar-Breakout-v0, as the zoo saves it
    source = "the project's" if hyper_path.is_relative_to(PROJECT_ZOO) else "rl-zoo3's"
    root = pathlib.Path(cfg.cache).expanduser() / "trained" / f"{steps}steps_seed{seed}"
    final = root / algo / f"{name}_1"
    if (final / f"{name}.zip").is_file():
        return final, env_id
    work = root / algo / f".{name}_1.work"
    checkpoint = work / "checkpoint.zip"  # with work/<name>/vecnormalize.pkl, as the zoo resumes
    (work / name).mkdir(parents=True, exist_ok=True)
    (work / "hyperparams.yml").write_text(yaml.safe_dump({env_id: hyper}))
    kind = ("atari" if hyper.get("env_wrapper") else "box2d" if "Lunar" in env_id or "Biped" in env_id
            else "minatar" if env_id.startswith("MinAtar/") else "default")
    hours = steps / TRAIN_RATES[kind] / 3600
    minutes = hours * 60
    estimate = ("under a minute" if minutes < 1 else f"about {minutes:.0f} min" if hours < 1
                else f"about {hours:.1f} h")
    start = "resuming from its checkpoint" if checkpoint.is_file() else "from scratch"
    print(f"expert.source train: training {algo} on {env_id} with {source} hyperparameters for "
          f"{steps:,} steps ({start}), {estimate} on a 2-core CPU"
          + (" (Atari agents take hours)" if kind == "atari" else "") + f"; into {final}", flush=True)
    args = dict(algo=algo, env=env_id, n_timesteps=steps, seed=seed, hyperparams=None,
                env_kwargs=None, log_folder=str(work / "runs"), trained_agent="")
    import torch

    # Multi-threaded torch collapses when the cores are shared (CartPole PPO: 2,500 steps/s on
    # one thread, 90 on two with other jobs running); one thread loses little when alone.
    torch.set_num_threads(1)
    with contextlib.redirect_stdout(io.StringIO()):
        manager = ExperimentManager(
            argparse.Namespace(**args), algo, env_id, str(work / "runs"), n_timesteps=steps,
            eval_freq=-1, save_freq=-1, seed=seed, log_interval=-1, verbose=0, device="auto",
            trained_agent=str(checkpoint) if checkpoint.is_file() else "",
            config=str(work / "hyperparams.yml"))
        model, _ = manager.setup_experiment()
    every = max(int(hyper.get("n_steps", 1)) * int(hyper.get("n_envs", 1)), steps // 10)

    class Checkpoint(BaseCallback):
        """Save model + VecNormalize atomically every `every` steps; drive a tqdm bar."""

        def _on_training_start(self) -> None:
            self.bar = tqdm(total=steps, initial=self.num_timesteps, desc=f"train {algo} {env_id}",
                            unit="step", dynamic_ncols=True)
            self.saved = self.num_timesteps

        def _on_step(self) -> bool:
            self.bar.update(self.num_timesteps - self.bar.n)
            return True

        def _on_rollout_end(self) -> None:
            if self.num_timesteps - self.saved >= every:
                self.save()

        def save(self) -> None:
            self.model.save(str(work / "checkpoint.tmp.zip"))
            stats = self.model.get_vec_normalize_env()
            if stats is not None:
                stats.save(str(work / name / "vecnormalize.tmp.pkl"))
                os.replace(work / name / "vecnormalize.tmp.pkl", work / name / "vecnormalize.pkl")
            os.replace(work / "checkpoint.tmp.zip", checkpoint)
            self.saved = self.num_timesteps

        def _on_training_end(self) -> None:
            self.bar.close()

    begin = time.time()
    remaining = max(0, steps - int(model.num_timesteps))
    # Without a logger of its own, SB3's learn() makes a /tmp/SB3-<timestamp>/ folder per call:
    # log nowhere but inside the work folder, which goes when training is done.
    from stable_baselines3.common.logger import configure

    model.set_logger(configure(str(work / "sb3_log"), format_strings=[]))
    with contextlib.redirect_stdout(io.StringIO()):
        model.learn(remaining, callback=[Checkpoint(), *manager.callbacks], reset_num_timesteps=False)
        manager.save_trained_model(model)
    model.env.close()
    staging = root / algo / f".{name}_1.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / name).mkdir(parents=True)
    saved = pathlib.Path(manager.save_path)
    shutil.copy2(saved / f"{name}.zip", staging / f"{name}.zip")
    for part in ("config.yml", "args.yml", "vecnormalize.pkl"):
        if (saved / name / part).is_file():
            shutil.copy2(saved / name / part, staging / name / part)
    # provenance beside the zoo files: this session's training time (a resumed run: its last part)
    atomic_write_text(staging / "training.json", json.dumps(
        {"steps": int(model.num_timesteps), "seconds": round(time.time() - begin),
         "hyperparameters": _shown(hyper_path)}) + "\n")
    os.replace(staging, final)  # the run folder appears complete or not at all
    shutil.rmtree(work, ignore_errors=True)
    print(f"expert.source train: {remaining:,} steps in {time.time() - begin:.0f} s; saved {final}",
          flush=True)
    return final, env_id
