"""The environment interface every suite implements: DreamerV2 observation dicts (see
`ditto_tf.envs`), plus the frame resizing the suites share."""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import gymnasium as gym
import numpy as np

Obs = dict[str, Any]


def resize_frame(frame: np.ndarray, size: Sequence[int], grayscale: bool) -> np.ndarray:
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
