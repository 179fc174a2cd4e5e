"""RL Zoo experts: load (hub | local folder | trained here) or random, and act on our envs.

    expert = load_expert(config)          # config.expert.{source, algo, env_id, folder, ...}
    obs = env.reset(); expert.reset()
    action = expert.act(env)              # reads env.native_obs / env.info; int or np.ndarray
    obs = env.step(action)

The expert sees what it saw in training (the zoo's `config.yml`): VecNormalize statistics,
frame stacks and, for Atari, `AtariWrapper` (84x84 gray `WarpFrame`, 4-frame stack, life loss
as episode end with a no-op step and the FIRE reset): those forced actions are returned by
`act()` so the collector steps and records them like any other action.

Security: SB3 zips, `vecnormalize.pkl` and zoo YAML files are pickles / Python objects that can
run code when loaded. This module only loads them from the folder the user names
(`expert.folder`), from the hub repo the user names (`<expert.hub_org>/<algo>-<env_id>`), or from
a folder it trained itself; the zoo YAML files are read with a loader that builds plain dicts.
"""

from __future__ import annotations

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
import zipfile
from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import gymnasium as gym
import numpy as np
import yaml

from ditto_tf.errors import UserError

SOURCES = ("hub", "folder", "train", "random")
FOLDER_HINT = "use a local zoo folder instead: --expert.source folder --expert.folder PATH"
# Rough single-process rates on a 2-core CPU (env steps/s while training), for the estimate.
TRAIN_RATES = {"atari": 350.0, "box2d": 1200.0, "default": 2500.0}


# ---------------------------------------------------------------- compatibility with old zips

class _CompatUnpickler(pickle.Unpickler):
    """Unpickler for 2021 zoo files: `gym.*` classes become `gymnasium.*`, `numpy.core` -> `_core`."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "gym" or module.startswith("gym."):
            module = "gymnasium" + module[3:]
        elif module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


def _compat_load(stream: Any) -> Any:
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
    try:
        data = yaml.load(path.read_text(), Loader=_ZooLoader)
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{path}: not a readable RL Zoo YAML file ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of hyperparameters")
    return data


# ---------------------------------------------------------------- locating a zoo run

def _listing(path: pathlib.Path) -> str:
    names = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    return ", ".join(names[:12]) + (" ..." if len(names) > 12 else "") if names else "nothing"


def find_run(folder: pathlib.Path, algo: str, env_id: str, run: int = 0) -> pathlib.Path:
    """`<folder>/<algo>/<env_id>_<n>` with the highest n (or n = `run`), holding `<env_id>.zip`."""
    if not folder.is_dir():
        raise UserError(f"expert.folder {folder}: no such folder (want the RL Zoo layout "
                        f"<folder>/<algo>/<env_id>_<n>/<env_id>.zip); or use --expert.source train")
    algo_dir = folder / algo
    if not algo_dir.is_dir():
        raise UserError(f"expert.folder {folder}: no {algo}/ folder; found: {_listing(folder)}")
    runs = {int(m.group(1)): p for p in algo_dir.iterdir()
            if (m := re.fullmatch(re.escape(env_id) + r"_(\d+)", p.name)) and p.is_dir()}
    if not runs:
        raise UserError(f"expert.folder {algo_dir}: no {env_id}_<n> run; found: {_listing(algo_dir)}")
    if run and run not in runs:
        raise UserError(f"expert.run {run}: {algo_dir}/{env_id}_{run} not found; runs: {sorted(runs)}")
    path = runs[run or max(runs)]
    if not (path / f"{env_id}.zip").is_file():
        raise UserError(f"{path}: no {env_id}.zip in this zoo run; found: {_listing(path)}")
    return path


# ---------------------------------------------------------------- the zoo observation pipeline

@dataclass
class Pipeline:
    """What stood between the env and the agent in training (from the zoo's `config.yml`)."""

    atari: bool = False
    screen_size: int = 84
    frame_skip: int = 4
    episodic_life: bool = True     # AtariWrapper's terminal_on_life_loss
    frame_stack: int = 0
    normalize: Any = None          # a VecNormalize (training off) when `normalize` was set

    @classmethod
    def from_run(cls, run: pathlib.Path, env_id: str) -> "Pipeline":
        params_dir = run / env_id
        config_path = params_dir / "config.yml"
        if not config_path.is_file():
            raise UserError(f"{params_dir}: no config.yml in this zoo run; found: {_listing(params_dir)}")
        params = read_zoo_yaml(config_path)
        pipe = cls(frame_stack=int(params.get("frame_stack", 0) or 0))
        wrappers = params.get("env_wrapper") or []
        for spec in wrappers if isinstance(wrappers, list) else [wrappers]:
            name, kwargs = next(iter(spec.items())) if isinstance(spec, dict) else (spec, {})
            kwargs = kwargs or {}
            if str(name).endswith("AtariWrapper"):
                pipe.atari = True
                pipe.screen_size = int(kwargs.get("screen_size", 84))
                pipe.frame_skip = int(kwargs.get("frame_skip", 4))
                pipe.episodic_life = bool(kwargs.get("terminal_on_life_loss", True))
            elif not str(name).endswith("TimeLimit"):  # a time limit does not change observations
                raise UserError(f"{config_path}: env_wrapper {name} is not supported by ditto_tf's "
                                "expert adapter (supported: AtariWrapper, TimeLimit)")
        if params.get("normalize"):
            stats = params_dir / "vecnormalize.pkl"
            if not stats.is_file():
                raise UserError(f"{stats}: missing, but {config_path} sets normalize")
            try:
                with open(stats, "rb") as f:
                    pipe.normalize = _compat_load(f)
            except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
                raise UserError(f"{stats}: not a readable VecNormalize file ({e})") from None
            pipe.normalize.training = False
        return pipe


@dataclass
class _Slot:
    """Per-env acting state (one per env in a batch)."""

    stack: np.ndarray | None = None
    lives: int | None = None
    queue: list[int] = field(default_factory=list)
    fresh: bool = True       # an episode started: set up the reset actions at the next act()
    restack: bool = True     # the next observation starts a new frame stack
    env_id: int = 0          # id() of the env checked against the expert's spaces


# ---------------------------------------------------------------- experts

class Expert:
    """Acts in a `ditto_tf.envs.Env`; `act(env)` for one env, `act_batch(envs)` for several."""

    label: str = "expert"

    def __init__(self, label: str, info: dict[str, Any]):
        self.label, self.info = label, info
        self._slots: list[_Slot] = []

    def reset(self, index: int | None = None) -> None:
        """Call after `env.reset()` (index: that env's place in `act_batch`; None: all)."""
        for i, slot in enumerate(self._slots):
            if index is None or i == index:
                slot.fresh, slot.queue = True, []

    def act(self, env: Any) -> Any:
        """The action for `env`'s current state: an int (Discrete) or a float32 array (Box)."""
        return self.act_batch([env])[0]

    def act_batch(self, envs: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def check_env(self, env: Any) -> None:
        """Raise a UserError when this expert cannot act in `env`."""

    def _slot(self, index: int, env: Any) -> _Slot:
        while len(self._slots) <= index:
            self._slots.append(_Slot())
        slot = self._slots[index]
        if slot.env_id != id(env):
            self.check_env(env)
            slot.env_id = id(env)
        return slot


class RandomExpert(Expert):
    """Uniformly random actions from the env's action space (coverage data)."""

    def __init__(self, seed: int = 0):
        super().__init__("random", {"source": "random", "seed": seed})
        self._rng = np.random.default_rng(seed)

    def act_batch(self, envs: Sequence[Any]) -> list[Any]:
        actions = []
        for i, env in enumerate(envs):
            self._slot(i, env)
            space = env.act_space
            if isinstance(space, gym.spaces.Discrete):
                actions.append(int(self._rng.integers(space.n)))
            else:
                actions.append(self._rng.uniform(space.low, space.high).astype(np.float32))
        return actions


class ZooExpert(Expert):
    """An SB3 model from an RL Zoo run folder, fed through its training-time pipeline."""

    def __init__(self, model: Any, pipeline: Pipeline, deterministic: bool, label: str,
                 info: dict[str, Any]):
        super().__init__(label, info)
        self.model, self.pipeline, self.deterministic = model, pipeline, bool(deterministic)
        self.observation_space: gym.Space = model.observation_space
        self.action_space: gym.Space = model.action_space
        self.last_obs: np.ndarray | None = None  # the last batch the policy saw (for tests)
        import torch

        # One env step's forward pass is small: one thread is as fast alone and many times
        # faster when the cores are shared (measured 3.6 ms vs 165 ms for the Atari CNN).
        torch.set_num_threads(1)

    def check_env(self, env: Any) -> None:
        mine, theirs = self.action_space, env.act_space
        if isinstance(mine, gym.spaces.Discrete) != isinstance(theirs, gym.spaces.Discrete) or (
            isinstance(mine, gym.spaces.Discrete) and mine.n != theirs.n) or (
            isinstance(mine, gym.spaces.Box) and mine.shape != theirs.shape):
            raise UserError(f"expert {self.label}: its action space {mine} does not match env "
                            f"{env.env_id}'s {theirs} (check task, expert.env_id, env.all_actions)")
        native = tuple(env.native_space.shape) if hasattr(env, "native_space") else None
        if self.pipeline.atari:
            if native is None or len(native) != 3:
                raise UserError(f"expert {self.label}: an Atari agent, but env {env.env_id} has no "
                                "RGB frames for it (check task)")
            if getattr(env, "action_repeat", self.pipeline.frame_skip) != self.pipeline.frame_skip:
                raise UserError(f"env.action_repeat {env.action_repeat}: expert {self.label} was "
                                f"trained with frame skip {self.pipeline.frame_skip}")
        elif native is not None:
            stack = max(1, self.pipeline.frame_stack)
            want = self.observation_space.shape
            got = (*native[:-1], native[-1] * stack) if native else native
            if tuple(got) != tuple(want):
                raise UserError(f"expert {self.label}: observes shape {want}, env {env.env_id} "
                                f"gives {native} (check task and expert.env_id)")

    def act_batch(self, envs: Sequence[Any]) -> list[Any]:
        actions: list[Any] = [None] * len(envs)
        needs, observations = [], []
        for i, env in enumerate(envs):
            slot = self._slot(i, env)
            forced = self._forced_action(slot, env)
            if forced is not None:
                actions[i] = forced
                continue
            needs.append(i)
            observations.append(self._observe(slot, env))
        if needs:
            batch = np.stack(observations)
            self.last_obs = batch
            chosen, _ = self.model.policy.predict(batch, deterministic=self.deterministic)
            discrete = isinstance(self.action_space, gym.spaces.Discrete)
            for i, action in zip(needs, chosen):
                actions[i] = int(action) if discrete else np.asarray(action, np.float32)
        return actions

    def _forced_action(self, slot: _Slot, env: Any) -> int | None:
        """AtariWrapper's reset actions: FIRE, 2 at a game start; NOOP, FIRE, 2 after a life loss."""
        pipe = self.pipeline
        if not pipe.atari:
            if slot.fresh:
                slot.fresh, slot.restack = False, True
            return None
        lives = int(env.info.get("lives", 0))
        meanings = list(getattr(env, "action_meanings", []))
        fire = [1, 2] if len(meanings) >= 3 and meanings[1] == "FIRE" else []
        if slot.fresh:  # a new episode: a new game, or (env.life_done) the same game after a loss
            slot.fresh, slot.restack = False, True
            lost = slot.lives is not None and 0 < lives < slot.lives and pipe.episodic_life
            slot.queue = ([0] if lost else []) + fire
        elif pipe.episodic_life and slot.lives is not None and 0 < lives < slot.lives:
            slot.restack, slot.queue = True, [0, *fire]  # EpisodicLifeEnv ended the zoo episode
        slot.lives = lives
        return slot.queue.pop(0) if slot.queue else None

    def _observe(self, slot: _Slot, env: Any) -> np.ndarray:
        pipe = self.pipeline
        if pipe.atari:
            gray = cv2.cvtColor(np.asarray(env.native_obs, np.uint8), cv2.COLOR_RGB2GRAY)
            size = pipe.screen_size
            frame = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)[..., None]
        else:
            frame = np.asarray(env.native_obs, np.float32)
            if pipe.normalize is not None:
                frame = pipe.normalize.normalize_obs(frame).astype(np.float32)
        if pipe.frame_stack > 1:  # VecFrameStack: zeros then the newest frame last, channels last
            if slot.restack or slot.stack is None:
                slot.stack = np.zeros((*frame.shape[:-1], frame.shape[-1] * pipe.frame_stack),
                                      frame.dtype)
            width = frame.shape[-1]
            slot.stack = np.roll(slot.stack, -width, axis=-1)
            slot.stack[..., -width:] = frame
            frame = slot.stack
        slot.restack = False
        shape = self.observation_space.shape
        if frame.shape != shape and frame.ndim == 3 and frame.shape[-1] == shape[0]:
            frame = np.transpose(frame, (2, 0, 1))  # VecTransposeImage: channels first
        return frame


# ---------------------------------------------------------------- loading

def _algorithms() -> dict[str, Any]:
    import rl_zoo3  # slow import (torch, SB3): only when an expert is needed

    return rl_zoo3.ALGOS


def load_model(zip_path: pathlib.Path, algo: str) -> Any:
    """Load an SB3 zip as it is, including 2021 zoo zips that pickle `gym` spaces and schedules."""
    algos = _algorithms()
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
        try:
            custom[key] = _clean_space(_compat_load(io.BytesIO(base64.b64decode(entry[":serialized:"]))))
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{zip_path}: cannot read its {key} ({e})") from None
    try:
        return algos[algo].load(str(zip_path), custom_objects=custom, device="cpu")
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign zip: name it, one line
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{zip_path}: cannot load as an SB3 {algo.upper()} model ({message})") from None


def load_run(run: pathlib.Path, algo: str, env_id: str, deterministic: bool, label: str,
             info: dict[str, Any]) -> ZooExpert:
    """A ZooExpert from a zoo run folder `<...>/<algo>/<env_id>_<n>`."""
    model = load_model(run / f"{env_id}.zip", algo)
    pipeline = Pipeline.from_run(run, env_id)
    info = {**info, "path": str(run), "deterministic": bool(deterministic),
            "trained_steps": int(getattr(model, "num_timesteps", 0))}
    return ZooExpert(model, pipeline, deterministic, label, info)


def expert_label(config: Any, algo: str | None = None) -> str:
    """A one-line description for manifests, e.g. `ppo:CartPole-v1 (folder ../shared/zoo)`."""
    cfg = config.expert
    algo = algo or cfg.algo
    where = {"hub": f"hub {cfg.hub_org}/{algo}-{cfg.env_id}",
             "folder": f"folder {cfg.folder}",
             "train": f"trained here, {train_steps(config, algo) if cfg.source == 'train' else 0} steps"}
    if cfg.source == "random":
        return "random"
    return f"{algo}:{cfg.env_id} ({where.get(cfg.source, cfg.source)})"


def load_expert(config: Any, algo: str | None = None, env: Any = None) -> Expert:
    """The expert for `config.expert` (`algo` overrides `expert.algo`, e.g. 'a2c' for wm data).

    Checks it against `env` (or a fresh `envs.make_env(config)`), so that a mismatched action
    space fails before any data is written.
    """
    cfg = config.expert
    algo = algo or cfg.algo
    if cfg.source not in SOURCES:
        raise UserError(f"expert.source {cfg.source!r}: choose one of {', '.join(SOURCES)}")
    if cfg.source == "random":
        expert: Expert = RandomExpert(int(config.seed))
    else:
        label = expert_label(config, algo)
        info = {"source": cfg.source, "algo": algo, "env_id": cfg.env_id}
        if cfg.source == "folder":
            run = find_run(pathlib.Path(cfg.folder).expanduser(), algo, cfg.env_id, _run(cfg))
            expert = load_run(run, algo, cfg.env_id, cfg.deterministic, label, info)
        elif cfg.source == "hub":
            run = download(cfg.hub_org, algo, cfg.env_id, pathlib.Path(cfg.cache).expanduser())
            expert = load_run(run, algo, cfg.env_id, cfg.deterministic, label, info)
        else:
            run, env_id = train(config, algo)
            expert = load_run(run, algo, env_id, cfg.deterministic, label, info)
    if isinstance(expert, ZooExpert):
        import torch

        torch.manual_seed(int(config.seed))  # stochastic experts sample with torch's generator
    if env is None:
        from ditto_tf.envs import make_env

        env = make_env(config, seed=int(config.seed))
        try:
            expert.check_env(env)
        finally:
            env.close()
    else:
        expert.check_env(env)
    return expert


def _run(cfg: Any) -> int:
    return int(cfg.get("run", 0) or 0)


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
    if algo not in _algorithms():
        raise UserError(f"expert.algo {algo!r}: not an rl-zoo3 algorithm; choose from {', '.join(_algorithms())}")
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
        raise UserError(f"expert.source hub: download of {repo} failed ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); {FOLDER_HINT}") from None
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
    _register_atari()
    if env_id in gym.registry:
        return env_id
    base = env_id.rsplit("-v", 1)[0]
    versions = sorted((int(m.group(1)), k) for k in gym.registry
                      if (m := re.fullmatch(re.escape(base) + r"-v(\d+)", k)))
    if not versions:
        raise UserError(f"expert.env_id {env_id!r}: not a gymnasium env id")
    return versions[-1][1]


def _register_atari() -> None:
    import ale_py

    gym.register_envs(ale_py)


def zoo_hyperparams(algo: str, env_id: str) -> dict[str, Any]:
    """rl-zoo3's own hyperparameters for `algo` on `env_id` (Atari ids share the `atari` block)."""
    import rl_zoo3

    if algo not in _algorithms():
        raise UserError(f"expert.algo {algo!r}: not an rl-zoo3 algorithm; choose from {', '.join(_algorithms())}")
    path = pathlib.Path(rl_zoo3.__file__).parent / "hyperparams" / f"{algo}.yml"
    blocks = yaml.safe_load(path.read_text()) if path.is_file() else {}
    train_id = runnable_id(env_id)
    atari = "AtariEnv" in str(gym.spec(train_id).entry_point)
    for key in (train_id, env_id, "atari" if atari else None):
        if key in blocks:
            return dict(blocks[key])
    raise UserError(f"expert.env_id {env_id!r}: rl-zoo3 has no {algo} hyperparameters for it "
                    "(source train needs them)")


def train_steps(config: Any, algo: str | None = None) -> int:
    """The step budget of `expert.source train`: `expert.train_steps`, or the zoo's n_timesteps."""
    steps = int(config.expert.train_steps)
    return steps if steps > 0 else int(zoo_hyperparams(algo or config.expert.algo,
                                                      config.expert.env_id)["n_timesteps"])


def train(config: Any, algo: str) -> tuple[pathlib.Path, str]:
    """Train with rl-zoo3's ExperimentManager and the zoo's hyperparameters; resumable.

    Output: `<expert.cache>/trained/<steps>steps_seed<seed>/<algo>/<EnvId>_1` (zoo layout),
    checkpointed to a `.work` folder beside it, so a killed run continues where it stopped.
    Returns (run folder, the env id it was trained on).
    """
    from rl_zoo3.exp_manager import ExperimentManager
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm import tqdm

    cfg, seed = config.expert, int(config.seed)
    hyper = zoo_hyperparams(algo, cfg.env_id)
    env_id, steps = runnable_id(cfg.env_id), train_steps(config, algo)
    root = pathlib.Path(cfg.cache).expanduser() / "trained" / f"{steps}steps_seed{seed}"
    final = root / algo / f"{env_id}_1"
    if (final / f"{env_id}.zip").is_file():
        return final, env_id
    work = root / algo / f".{env_id}_1.work"
    checkpoint = work / "checkpoint.zip"  # with work/<env_id>/vecnormalize.pkl, as the zoo resumes
    (work / env_id).mkdir(parents=True, exist_ok=True)
    (work / "hyperparams.yml").write_text(yaml.safe_dump({env_id: hyper}))
    kind = "atari" if hyper.get("env_wrapper") else "box2d" if "Lunar" in env_id or "Biped" in env_id else "default"
    hours = steps / TRAIN_RATES[kind] / 3600
    estimate = f"about {hours * 60:.0f} min" if hours < 1 else f"about {hours:.1f} h"
    start = "resuming from its checkpoint" if checkpoint.is_file() else "from scratch"
    print(f"expert.source train: training {algo} on {env_id} with rl-zoo3's hyperparameters for "
          f"{steps:,} steps ({start}), {estimate} on a 2-core CPU"
          + (" (Atari agents take hours)" if kind == "atari" else "") + f"; into {final}", flush=True)
    args = dict(algo=algo, env=env_id, n_timesteps=steps, seed=seed, hyperparams=None,
                env_kwargs=None, log_folder=str(work / "runs"), trained_agent="")
    import argparse

    with contextlib.redirect_stdout(io.StringIO()):
        manager = ExperimentManager(
            argparse.Namespace(**args), algo, env_id, str(work / "runs"), n_timesteps=steps,
            eval_freq=-1, save_freq=-1, seed=seed, log_interval=-1, verbose=0, device="cpu",
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
                stats.save(str(work / env_id / "vecnormalize.tmp.pkl"))
                os.replace(work / env_id / "vecnormalize.tmp.pkl", work / env_id / "vecnormalize.pkl")
            os.replace(work / "checkpoint.tmp.zip", checkpoint)
            self.saved = self.num_timesteps

        def _on_training_end(self) -> None:
            self.bar.close()

    begin = time.time()
    remaining = max(0, steps - int(model.num_timesteps))
    with contextlib.redirect_stdout(io.StringIO()):
        model.learn(remaining, callback=[Checkpoint(), *manager.callbacks], reset_num_timesteps=False)
        manager.save_trained_model(model)
    model.env.close()
    staging = root / algo / f".{env_id}_1.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / env_id).mkdir(parents=True)
    saved = pathlib.Path(manager.save_path)
    shutil.copy2(saved / f"{env_id}.zip", staging / f"{env_id}.zip")
    for name in ("config.yml", "args.yml", "vecnormalize.pkl"):
        if (saved / env_id / name).is_file():
            shutil.copy2(saved / env_id / name, staging / env_id / name)
    os.replace(staging, final)  # the run folder appears complete or not at all
    shutil.rmtree(work, ignore_errors=True)
    print(f"expert.source train: {remaining:,} steps in {time.time() - begin:.0f} s; saved {final}",
          flush=True)
    return final, env_id
