"""Environments with DreamerV2's observation dict.

    env = make_env(config, seed=0)      # config.task: atari_<game>, minatar_<game> or gym_<EnvId>
    obs = env.reset()                   # {image (H,W,C) uint8, vector (D,) float32, reward,
                                        #  is_first, is_last, is_terminal}
    obs = env.step(action)              # discrete: index or one-hot vector; continuous: vector
    env.native_obs, env.info            # what an expert acts on (Atari: max-pooled RGB, `lives`)

Atari follows DreamerV2 (action repeat 4 with a max-pool over the last two frames, up to 30
random no-ops at reset, sticky actions, a time limit in agent steps, minimal or full action set,
episodes ending at game over or at life loss) and keeps the raw max-pooled 210x160x3 frame, the
frame the RL Zoo's `AtariWrapper` (NoFrameskip-v4 dynamics) hands to its agents. MinAtar keeps
its 10 x 10 x C bool grid as the native observation (also offered flattened as `vector`) and draws
the image from it (`ditto_tf.minatar_env`). Other gymnasium
envs are rendered with `rgb_array` and resized, their native state kept for the expert; when
that native observation is a 1-D Box (classic control, Box2D) it is also offered as `vector`.
Frames are rendered only when the config's cnn keys read `image` (`obs_keys.needs_image`):
rendering is most of the cost of stepping a classic-control env.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from ditto_tf.atari import Atari, atari_games
from ditto_tf.config import Config
from ditto_tf.env_base import Env, Obs, resize_frame
from ditto_tf.errors import UserError
from ditto_tf.minatar_env import MinAtar, minatar_games

__all__ = ["Atari", "Env", "GymPixels", "MinAtar", "Obs", "VecEnv", "atari_games", "make_env",
           "minatar_games", "parse_task"]

# pygame renders rgb_array frames off-screen; without these it probes for a display and audio
# device and prints errors on headless machines.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


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
        return resize_frame(frame, self.size, self.grayscale)

    def close(self) -> None:
        self._env.close()


def parse_task(task: str) -> tuple[str, str]:
    """`atari_beam_rider` -> ('atari', 'BeamRider'); `minatar_space_invaders` (or
    `minatar_spaceinvaders`) -> ('minatar', 'space_invaders'); `gym_CartPole-v1` -> ('gym', 'CartPole-v1').

    Unknown games and env ids are UserErrors naming the task with the closest valid ones.
    """
    suite, _, name = task.partition("_")
    if suite in ("atari", "minatar") and name:
        # {snake_case: what the suite's constructor takes}, matched with or without underscores
        games = atari_games() if suite == "atari" else {g: g for g in minatar_games()}
        by_key = {k.replace("_", ""): g for k, g in games.items()}
        game = by_key.get(name.replace("_", "").lower())
        if game is None:
            close = difflib.get_close_matches(name.lower(), list(games), n=3, cutoff=0.5)
            hint = (f"closest: {', '.join(f'{suite}_{c}' for c in close)}" if close else "choose from: "
                    + ", ".join(f"{suite}_{g}" for g in list(games)[:5]) + (" ..." if len(games) > 5 else ""))
            raise UserError(f"task {task!r}: unknown {'Atari' if suite == 'atari' else 'MinAtar'} game "
                            f"{name!r}; {hint}")
        return suite, game
    if suite == "gym" and name:
        if name not in gym.registry:
            close = difflib.get_close_matches(name, list(gym.registry), n=3, cutoff=0.5)
            hint = ", ".join(f"gym_{c}" for c in close) or "none"
            raise UserError(f"task {task!r}: unknown gymnasium env id {name!r}; closest: {hint}")
        return "gym", name
    raise UserError(f"task {task!r}: expected atari_<game> (e.g. atari_pong), minatar_<game> (e.g. "
                    "minatar_breakout) or gym_<EnvId> (e.g. gym_CartPole-v1)")


def make_env(config: Config, seed: int = 0) -> Env:
    """Build the env for `config.task` with the `config.env` settings, seeded with `seed`."""
    suite, name = parse_task(config.task)
    env_cfg = config.env
    if suite == "atari":
        return Atari(name, env_cfg.size, env_cfg.grayscale, env_cfg.action_repeat, env_cfg.noops,
                     env_cfg.sticky, env_cfg.all_actions, env_cfg.life_done, env_cfg.time_limit,
                     seed)
    from ditto_tf.obs_keys import needs_image

    if suite == "minatar":
        return MinAtar(name, env_cfg.size, env_cfg.grayscale, env_cfg.action_repeat, env_cfg.sticky,
                       env_cfg.difficulty_ramping, env_cfg.all_actions, env_cfg.time_limit, seed,
                       render=needs_image(config))
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
