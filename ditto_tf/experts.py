"""Experts that act in our envs: RL Zoo agents (hub | local folder | trained here) or random.

    expert = load_expert(config)          # config.expert.{source, algo, env_id, folder, ...}
    obs = env.reset(); expert.reset()
    action = expert.act(env)              # reads env.native_obs / env.info; int or np.ndarray
    obs = env.step(action)

The expert sees what it saw in training (the zoo's `config.yml`): VecNormalize statistics,
frame stacks and, for Atari, `AtariWrapper` (84x84 gray `WarpFrame`, 4-frame stack, a life loss
ending the zoo's episode with a no-op step and the FIRE reset). Those forced actions are returned
by `act()`, so the collector steps and records them like any other action.

Security: zoo zips and `vecnormalize.pkl` are pickles, which run code when loaded; they are only
loaded from the folder (`expert.folder`) or hub repo (`<expert.hub_org>/<algo>-<env_id>`) the
user names, or from a folder trained here (see `ditto_tf.zoo`).
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import cv2
import gymnasium as gym
import numpy as np

from ditto_tf import zoo
from ditto_tf.config import Config
from ditto_tf.errors import UserError

if TYPE_CHECKING:
    from ditto_tf.env_base import Env

SOURCES = ("hub", "folder", "train", "random")

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
        params_dir = run / zoo.file_name(env_id)
        config_path = params_dir / "config.yml"
        if not config_path.is_file():
            raise UserError(f"{params_dir}: no config.yml in this zoo run; found: {zoo.listing(params_dir)}")
        params = zoo.read_zoo_yaml(config_path)
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
                    pipe.normalize = zoo.compat_load(f)
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

    def act(self, env: Env) -> Any:
        """The action for `env`'s current state: an int (Discrete) or a float32 array (Box)."""
        return self.act_batch([env])[0]

    def act_batch(self, envs: Sequence[Env]) -> list[Any]:
        raise NotImplementedError

    def check_env(self, env: Env) -> None:
        """Raise a UserError when this expert cannot act in `env`."""

    def _slot(self, index: int, env: Env) -> _Slot:
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

    def act_batch(self, envs: Sequence[Env]) -> list[Any]:
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

    def check_env(self, env: Env) -> None:
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
            frames = (max(1, self.pipeline.frame_stack), *[self.pipeline.screen_size] * 2)
            if sorted(self.observation_space.shape) != sorted(frames):
                raise UserError(f"expert {self.label}: observes shape {self.observation_space.shape}, "
                                f"but its config.yml makes {frames} stacks")
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

    def act_batch(self, envs: Sequence[Env]) -> list[Any]:
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

    def _forced_action(self, slot: _Slot, env: Env) -> int | None:
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

    def _observe(self, slot: _Slot, env: Env) -> np.ndarray:
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


def load_run(run: pathlib.Path, algo: str, env_id: str, deterministic: bool, label: str,
             info: dict[str, Any]) -> ZooExpert:
    """A ZooExpert from a zoo run folder `<...>/<algo>/<env_id>_<n>` (`/` in env_id spelt `-`)."""
    model = zoo.load_model(run / f"{zoo.file_name(env_id)}.zip", algo)
    pipeline = Pipeline.from_run(run, env_id)
    info = {**info, "path": str(run), "deterministic": bool(deterministic),
            "trained_steps": int(getattr(model, "num_timesteps", 0))}
    return ZooExpert(model, pipeline, deterministic, label, info)


def expert_label(config: Config, algo: str | None = None) -> str:
    """A one-line description for manifests, e.g. `ppo:CartPole-v1 (folder ../shared/zoo)`."""
    cfg = config.expert
    algo = algo or cfg.algo
    where = {"hub": f"hub {cfg.hub_org}/{algo}-{cfg.env_id}",
             "folder": f"folder {cfg.folder}",
             "train": f"trained here, {zoo.train_steps(config, algo) if cfg.source == 'train' else 0} steps"}
    if cfg.source == "random":
        return "random"
    return f"{algo}:{cfg.env_id} ({where.get(cfg.source, cfg.source)})"


def load_expert(config: Config, algo: str | None = None, env: Env | None = None) -> Expert:
    """The expert for `config.expert` (`algo` overrides `expert.algo`, e.g. 'a2c' for wm data).

    Checks it against `env` (or a fresh `envs.make_env(config)`), so that a mismatched action
    space fails before any data is written.
    """
    cfg = config.expert
    algo = algo or cfg.algo
    if cfg.source not in SOURCES:
        raise UserError(f"expert.source {cfg.source!r}: choose one of {', '.join(SOURCES)}")
    if cfg.source != "random" and algo not in zoo.algorithms():
        raise UserError(f"expert.algo {algo!r}: not an rl-zoo3 algorithm; choose from {', '.join(zoo.algorithms())}")
    if cfg.source == "random":
        expert: Expert = RandomExpert(int(config.seed))
    else:
        label = expert_label(config, algo)
        info = {"source": cfg.source, "algo": algo, "env_id": cfg.env_id}
        if cfg.source == "folder":
            run = zoo.find_run(pathlib.Path(cfg.folder).expanduser(), algo, cfg.env_id, _run(cfg))
            expert = load_run(run, algo, cfg.env_id, cfg.deterministic, label, info)
        elif cfg.source == "hub":
            run = zoo.download(cfg.hub_org, algo, cfg.env_id, pathlib.Path(cfg.cache).expanduser())
            expert = load_run(run, algo, cfg.env_id, cfg.deterministic, label, info)
        else:
            run, env_id = zoo.train(config, algo)
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
