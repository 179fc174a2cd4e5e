"""Environments with DreamerV2's observation dict.

    env = make_env(config, seed=0)      # config.task: atari_<game> or gym_<EnvId>
    obs = env.reset()                   # {image (H,W,C) uint8, vector (D,) float32, reward,
                                        #  is_first, is_last, is_terminal}
    obs = env.step(action)              # discrete: index or one-hot vector; continuous: vector
    env.native_obs, env.info            # what an expert acts on (Atari: max-pooled RGB, `lives`)

Atari follows DreamerV2 (action repeat 4 with a max-pool over the last two frames, up to 30
random no-ops at reset, sticky actions, a time limit in agent steps, minimal or full action set,
episodes ending at game over or at life loss) and keeps the raw max-pooled 210x160x3 frame, the
frame the RL Zoo's `AtariWrapper` (NoFrameskip-v4 dynamics) hands to its agents. Other gymnasium
envs are rendered with `rgb_array` and resized, their native state kept for the expert; when
that native observation is a 1-D Box (classic control, Box2D) it is also offered as `vector`.
Frames are rendered only when the config's cnn keys read `image` (`obs_keys.needs_image`):
rendering is most of the cost of stepping a classic-control env.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Any, Sequence

import cv2
import gymnasium as gym
import numpy as np

from ditto_tf.config import Config
from ditto_tf.errors import UserError

Obs = dict[str, Any]

# pygame renders rgb_array frames off-screen; without these it probes for a display and audio
# device and prints errors on headless machines.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

_ALE_REGISTERED = False


def _register_ale() -> None:
    global _ALE_REGISTERED
    if not _ALE_REGISTERED:
        import ale_py

        gym.register_envs(ale_py)
        _ALE_REGISTERED = True


def _resize(frame: np.ndarray, size: Sequence[int], grayscale: bool) -> np.ndarray:
    """RGB frame -> (H, W, 1) gray or (H, W, 3) RGB uint8 at `size` = (H, W), area-averaged."""
    if grayscale:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    height, width = size
    if frame.shape[:2] != (height, width):
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    return frame[..., None] if frame.ndim == 2 else frame


class Env:
    """Common interface: DreamerV2 observation dicts, one-hot or index actions, native obs kept.

    Attributes:
        act_space: `gym.spaces.Discrete(n)` (actions are indices or one-hot vectors of size n) or
            the env's own `gym.spaces.Box` (actions are clipped into it).
        obs_space: the observation dict's spaces (image if rendered, vector if the native
            observation is a 1-D Box, reward, is_first, is_last, is_terminal).
        native_obs: the last native observation (gym: the state vector; Atari: 210x160x3 RGB).
        info: the last info dict (Atari: `lives`, `life_lost`, `game_over`, frame numbers).
        env_id: the gymnasium id underneath (e.g. `ALE/Pong-v5`, `CartPole-v1`).
    """

    act_space: gym.Space
    native_space: gym.Space
    env_id: str

    def __init__(self, size: Sequence[int], grayscale: bool, render: bool = True):
        self.size = (int(size[0]), int(size[1]))
        self.grayscale, self.render = bool(grayscale), bool(render)
        channels = 1 if grayscale else 3
        self.obs_space: dict[str, gym.Space] = {
            "reward": gym.spaces.Box(-np.inf, np.inf, (), np.float32),
            "is_first": gym.spaces.Box(0, 1, (), bool),
            "is_last": gym.spaces.Box(0, 1, (), bool),
            "is_terminal": gym.spaces.Box(0, 1, (), bool),
        }
        if self.render:
            self.obs_space["image"] = gym.spaces.Box(0, 255, (*self.size, channels), np.uint8)
        self.native_obs: Any = None
        self.info: dict[str, Any] = {}

    def _offer_vector(self, space: gym.Space) -> None:
        """Offer a 1-D Box native observation as the `vector` key (float32)."""
        if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            self.obs_space["vector"] = gym.spaces.Box(-np.inf, np.inf, space.shape, np.float32)

    @property
    def discrete(self) -> bool:
        return isinstance(self.act_space, gym.spaces.Discrete)

    @property
    def action_size(self) -> int:
        """Width of the recorded action vector: n for discrete spaces, the Box size otherwise."""
        if self.discrete:
            return int(self.act_space.n)
        return int(np.prod(self.act_space.shape))

    def action_vector(self, action: Any) -> np.ndarray:
        """The float32 vector recorded for `action` (one-hot for discrete spaces)."""
        if self.discrete:
            vector = np.zeros(self.action_size, np.float32)
            vector[self._index(action)] = 1.0
            return vector
        return self._box(action).reshape(-1)

    def _index(self, action: Any) -> int:
        array = np.asarray(action)
        if array.ndim == 0:
            index = int(array)
        elif array.shape == (self.action_size,):
            index = int(np.argmax(array))
        else:
            raise ValueError(f"{self.env_id}: action of shape {array.shape} for {self.act_space}")
        if not 0 <= index < self.action_size:
            raise ValueError(f"{self.env_id}: action {index} outside {self.act_space}")
        return index

    def _box(self, action: Any) -> np.ndarray:
        space = self.act_space
        array = np.asarray(action, np.float32).reshape(space.shape)
        return np.clip(array, space.low, space.high).astype(np.float32)

    def _obs(self, image: np.ndarray | None, reward: float, first: bool, last: bool,
             terminal: bool) -> Obs:
        obs: Obs = {"reward": np.float32(reward), "is_first": first, "is_last": last,
                    "is_terminal": terminal}
        if image is not None:
            obs["image"] = image
        if "vector" in self.obs_space:
            obs["vector"] = np.asarray(self.native_obs, np.float32).reshape(-1)
        return obs

    def reset(self, seed: int | None = None) -> Obs:
        raise NotImplementedError

    def step(self, action: Any) -> Obs:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Atari(Env):
    """An ALE game with DreamerV2's preprocessing, stepped on the ALE directly for speed.

    `native_obs` is the max-pool of the last two RGB frames of each agent step (after reset: the
    last no-op frame), exactly what `MaxAndSkipEnv` gives the zoo's `AtariWrapper`; the recorded
    image is that frame in gray (or RGB) resized with area averaging. Rewards are unclipped.
    With `life_done`, a life loss ends the episode (`is_terminal`) and the next `reset()` continues
    the same game; otherwise episodes run to the real game over.
    """

    def __init__(self, game: str, size: Sequence[int] = (64, 64), grayscale: bool = True,
                 action_repeat: int = 4, noops: int = 30, sticky: float = 0.0,
                 all_actions: bool = False, life_done: bool = False, time_limit: int = 0,
                 seed: int = 0):
        super().__init__(size, grayscale)
        _register_ale()
        self.env_id = f"ALE/{game}-v5"
        kwargs: dict[str, Any] = dict(frameskip=1, repeat_action_probability=float(sticky),
                                      full_action_space=bool(all_actions))
        if time_limit:  # our own limit, in agent steps, replaces the ALE's 108000-frame cap
            kwargs["max_num_frames_per_episode"] = 0
        self._env = gym.make(self.env_id, **kwargs)
        self._atari = self._env.unwrapped
        self._ale = self._atari.ale
        self._actions = list(self._atari._action_set)
        self.action_meanings: list[str] = self._atari.get_action_meanings()
        self.act_space = gym.spaces.Discrete(len(self._actions))
        self.native_space = gym.spaces.Box(0, 255, (210, 160, 3), np.uint8)
        self.action_repeat = max(1, int(action_repeat))
        self.noops, self.life_done, self.time_limit = int(noops), bool(life_done), int(time_limit)
        self._seed: int | None = int(seed)
        self._rng = np.random.default_rng(seed)
        self._buffers = [np.zeros((210, 160, 3), np.uint8) for _ in range(2)]
        self._lives = 0
        self._step = 0
        self._continue_game = False  # life_done: the last episode ended on a life loss only

    @property
    def game_over(self) -> bool:
        return bool(self._ale.game_over(with_truncation=False))

    def reset(self, seed: int | None = None) -> Obs:
        """Start an episode: a new game after up to `noops` random no-ops (or, after a life loss
        with `life_done`, the rest of the same game). `seed` reseeds the ALE and the no-ops."""
        if seed is not None:
            self._seed, self._rng = int(seed), np.random.default_rng(seed)
            self._continue_game = False
        self._step = 0
        if not self._continue_game:
            self._atari.reset(seed=self._seed)  # seeds and reloads the ROM only when given a seed
            self._seed = None
            count = int(self._rng.integers(1, self.noops + 1)) if self.noops > 0 else 0
            for _ in range(count):
                self._ale.act(self._actions[0])
                if self._ale.game_over():
                    self._ale.reset_game()
            self._ale.getScreenRGB(self._buffers[0])
            self.native_obs = self._buffers[0].copy()
        self._continue_game = False
        self._lives = self._ale.lives()
        self.info = self._info(life_lost=False)
        return self._obs(_resize(self.native_obs, self.size, self.grayscale), 0.0, True, False, False)

    def step(self, action: Any) -> Obs:
        ale, act = self._ale, self._actions[self._index(action)]
        reward, pooled, ended = 0.0, False, False
        for repeat in range(self.action_repeat):
            reward += ale.act(act)
            if repeat >= self.action_repeat - 2:  # keep the last two frames for the max-pool
                ale.getScreenRGB(self._buffers[repeat - self.action_repeat + 2])
                pooled = repeat == self.action_repeat - 1 and self.action_repeat > 1
            if ale.game_over():
                ended = True
                break
        if pooled:
            frame = np.maximum(self._buffers[0], self._buffers[1])
        else:  # action_repeat 1 or the game ended early: the current screen
            frame = ale.getScreenRGB() if ended or self.action_repeat == 1 else self._buffers[1].copy()
        self.native_obs = frame
        self._step += 1
        lives = ale.lives()
        life_lost = lives < self._lives
        self._lives = lives
        game_over = self.game_over
        terminal = game_over or (self.life_done and life_lost)
        truncated = bool(ale.game_truncated()) or (0 < self.time_limit <= self._step)
        last = terminal or truncated
        self._continue_game = self.life_done and life_lost and not game_over and not truncated
        self.info = self._info(life_lost)
        return self._obs(_resize(frame, self.size, self.grayscale), reward, False, last, terminal)

    def _info(self, life_lost: bool) -> dict[str, Any]:
        return {"lives": self._lives, "life_lost": life_lost, "game_over": self.game_over,
                "episode_frame_number": self._ale.getEpisodeFrameNumber()}

    def close(self) -> None:
        self._env.close()


class GymPixels(Env):
    """A registered gymnasium env observed through `render()` (rgb_array) at the configured size.

    `native_obs` is the env's own observation (the state vector the zoo agents were trained on).
    `time_limit` (agent steps, 0 keeps the env's own limit) truncates: `is_last` without
    `is_terminal`. With `render` False no frame is rendered and the obs has no `image`.
    """

    def __init__(self, env_id: str, size: Sequence[int] = (64, 64), grayscale: bool = True,
                 action_repeat: int = 1, time_limit: int = 0, seed: int = 0,
                 crop: Sequence[float] = (0.0, 1.0, 0.0, 1.0), render: bool = True):
        super().__init__(size, grayscale, render)
        self.env_id = env_id
        top, bottom, left, right = (float(c) for c in crop)
        if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
            raise UserError(f"env.crop {list(crop)}: want [top, bottom, left, right] fractions "
                            "with 0 <= top < bottom <= 1 and 0 <= left < right <= 1")
        self.crop = (top, bottom, left, right)
        self.action_repeat = max(1, int(action_repeat))
        kwargs: dict[str, Any] = {"render_mode": "rgb_array"} if self.render else {}
        if time_limit:
            kwargs["max_episode_steps"] = int(time_limit) * self.action_repeat
        try:
            self._env = gym.make(env_id, **kwargs)
        except gym.error.Error as e:
            raise UserError(f"env {env_id!r}: {e}") from None
        if self.render and "rgb_array" not in self._env.metadata.get("render_modes", []):
            raise UserError(f"env {env_id!r} cannot render rgb_array frames, needed for pixels")
        space = self._env.action_space
        if not isinstance(space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise UserError(f"env {env_id!r}: action space {space} is neither Discrete nor Box")
        self.act_space = space
        self.native_space = self._env.observation_space
        self._offer_vector(self.native_space)
        self._seed: int | None = int(seed)
        self._env.action_space.seed(int(seed))

    def reset(self, seed: int | None = None) -> Obs:
        """Start an episode; `seed` (or, at the first reset, the constructor's seed) seeds it."""
        if seed is not None:
            self._seed = int(seed)
            self._env.action_space.seed(int(seed))
        self.native_obs, self.info = self._env.reset(seed=self._seed)
        self._seed = None
        return self._obs(self._render(), 0.0, True, False, False)

    def step(self, action: Any) -> Obs:
        env_action = self._index(action) if self.discrete else self._box(action)
        reward, terminated, truncated = 0.0, False, False
        for _ in range(self.action_repeat):
            self.native_obs, r, terminated, truncated, self.info = self._env.step(env_action)
            reward += float(r)
            if terminated or truncated:
                break
        last = bool(terminated or truncated)
        return self._obs(self._render(), reward, False, last, bool(terminated))

    def _render(self) -> np.ndarray | None:
        if not self.render:
            return None
        frame = self._env.render()
        if self.crop != (0.0, 1.0, 0.0, 1.0):  # keep the band where the action happens
            height, width = frame.shape[:2]
            top, bottom, left, right = self.crop
            frame = frame[round(top * height):round(bottom * height),
                          round(left * width):round(right * width)]
        return _resize(frame, self.size, self.grayscale)

    def close(self) -> None:
        self._env.close()


def atari_games() -> dict[str, str]:
    """{snake_case name: ALE game name} for every game ale-py ships (e.g. beam_rider: BeamRider)."""
    _register_ale()
    games = [k[len("ALE/"):-len("-v5")] for k in gym.registry if k.startswith("ALE/") and k.endswith("-v5")]
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", g).lower(): g for g in games}


def parse_task(task: str) -> tuple[str, str]:
    """`atari_beam_rider` -> ('atari', 'BeamRider'); `gym_CartPole-v1` -> ('gym', 'CartPole-v1').

    Unknown games and env ids are UserErrors naming the task with the closest valid ones.
    """
    suite, _, name = task.partition("_")
    if suite == "atari" and name:
        games = atari_games()
        by_key = {k.replace("_", ""): g for k, g in games.items()}
        game = by_key.get(name.replace("_", "").lower())
        if game is None:
            close = difflib.get_close_matches(name.lower(), list(games), n=3, cutoff=0.5)
            hint = ", ".join(f"atari_{c}" for c in close) or "none"
            raise UserError(f"task {task!r}: unknown Atari game {name!r}; closest: {hint}")
        return "atari", game
    if suite == "gym" and name:
        if name not in gym.registry:
            close = difflib.get_close_matches(name, list(gym.registry), n=3, cutoff=0.5)
            hint = ", ".join(f"gym_{c}" for c in close) or "none"
            raise UserError(f"task {task!r}: unknown gymnasium env id {name!r}; closest: {hint}")
        return "gym", name
    raise UserError(f"task {task!r}: expected atari_<game> (e.g. atari_pong) or gym_<EnvId> "
                    "(e.g. gym_CartPole-v1)")


def make_env(config: Config, seed: int = 0) -> Env:
    """Build the env for `config.task` with the `config.env` settings, seeded with `seed`."""
    suite, name = parse_task(config.task)
    env_cfg = config.env
    if suite == "atari":
        return Atari(name, env_cfg.size, env_cfg.grayscale, env_cfg.action_repeat, env_cfg.noops,
                     env_cfg.sticky, env_cfg.all_actions, env_cfg.life_done, env_cfg.time_limit,
                     seed)
    from ditto_tf.obs_keys import needs_image

    return GymPixels(name, env_cfg.size, env_cfg.grayscale, env_cfg.action_repeat,
                     env_cfg.time_limit, seed, env_cfg.crop, render=needs_image(config))


class VecEnv:
    """A list of envs stepped in a loop, for evaluation rollouts.

    `step(actions)` steps every env whose episode is running and resets the ones whose last
    observation was `is_last` (their action is ignored), as DreamerV2's driver does; `stack()`
    batches a list of observation dicts into arrays.
    """

    def __init__(self, envs: Sequence[Env]):
        if not envs:
            raise ValueError("VecEnv needs at least one env")
        self.envs = list(envs)
        self._last: list[Obs | None] = [None] * len(self.envs)

    @classmethod
    def make(cls, config: Config, count: int, seed: int = 0) -> "VecEnv":
        """`count` envs seeded seed, seed + 1, ..."""
        return cls([make_env(config, seed + i) for i in range(count)])

    def __len__(self) -> int:
        return len(self.envs)

    @property
    def act_space(self) -> gym.Space:
        return self.envs[0].act_space

    def reset(self) -> list[Obs]:
        self._last = [env.reset() for env in self.envs]
        return list(self._last)  # type: ignore[arg-type]

    def step(self, actions: Sequence[Any]) -> list[Obs]:
        for i, (env, action) in enumerate(zip(self.envs, actions, strict=True)):
            last = self._last[i]
            self._last[i] = env.reset() if last is None or last["is_last"] else env.step(action)
        return list(self._last)  # type: ignore[arg-type]

    @staticmethod
    def stack(obs: Sequence[Obs]) -> dict[str, np.ndarray]:
        return {key: np.stack([o[key] for o in obs]) for key in obs[0]}

    def close(self) -> None:
        for env in self.envs:
            env.close()
