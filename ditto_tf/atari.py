"""Atari through the ALE, with DreamerV2's preprocessing (see `ditto_tf.envs` for the
observation dict and the settings)."""

from __future__ import annotations

import re
from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from ditto_tf.env_base import Env, Obs, resize_frame

_ALE_REGISTERED = False


def _register_ale() -> None:
    global _ALE_REGISTERED
    if not _ALE_REGISTERED:
        import ale_py

        gym.register_envs(ale_py)
        _ALE_REGISTERED = True

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
        return self._obs(resize_frame(self.native_obs, self.size, self.grayscale), 0.0, True, False, False)

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
        return self._obs(resize_frame(frame, self.size, self.grayscale), reward, False, last, terminal)

    def _info(self, life_lost: bool) -> dict[str, Any]:
        return {"lives": self._lives, "life_lost": life_lost, "game_over": self.game_over,
                "episode_frame_number": self._ale.getEpisodeFrameNumber()}

    def close(self) -> None:
        self._env.close()


def atari_games() -> dict[str, str]:
    """{snake_case name: ALE game name} for every game ale-py ships (e.g. beam_rider: BeamRider)."""
    _register_ale()
    games = [k[len("ALE/"):-len("-v5")] for k in gym.registry if k.startswith("ALE/") and k.endswith("-v5")]
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", g).lower(): g for g in games}
