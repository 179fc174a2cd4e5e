"""MinAtar (Young & Tian 2019): miniature Atari games on a 10 x 10 grid, one bool channel per
object type (see `ditto_tf.envs` for the observation dict).

MinAtar's defaults are kept (`configs.yaml`, block `minatar`): sticky actions with probability 0.1
(`env.sticky`) and difficulty ramping (`env.difficulty_ramping`); the full 6-action set of the
`MinAtar/<Game>-v0` ids (`env.all_actions: true`), or the minimal set of `-v1` with
`--env.all_actions false`. There is no frame skip, no no-op start and no crop.

The image the world model sees is drawn from the grid, not from MinAtar's seaborn `rgb_array`:
each channel k of C gets its own gray level 255 (k + 1) / C (RGB: its own hue, evenly spaced), a
cell showing the highest channel present in it (MinAtar's own display rule), and the 10 x 10 cells
are upsampled nearest-neighbour to `env.size` (64 x 64: cells of 6 or 7 pixels). Nearest-neighbour
keeps every cell a flat block of one level, so no object type blurs into another; distinct levels
keep object types apart where a single level would merge, e.g., the ball and its trail in
Breakout. Overlapping objects show the higher channel only; the native grid, with every channel, is
the expert's input and is offered as the `vector` key (flattened, 100 C floats in {0, 1}).
"""

from __future__ import annotations

import pkgutil
from typing import Any, Sequence

import cv2
import gymnasium as gym
import numpy as np

from ditto_tf.env_base import Env, Obs
from ditto_tf.errors import UserError

GRID = 10


def minatar_games() -> dict[str, str]:
    """{module name: gymnasium name} for every game MinAtar ships (space_invaders: SpaceInvaders)."""
    try:
        import minatar.environments
    except ImportError:
        raise UserError("MinAtar tasks need the minatar package (pip install -r requirements.txt)") from None
    names = sorted(m.name for m in pkgutil.iter_modules(minatar.environments.__path__))
    return {n: n.title().replace("_", "") for n in names}


def palette(channels: int, grayscale: bool) -> np.ndarray:
    """(channels + 1, 1 or 3) uint8 colours: row 0 the empty cell (black), row k + 1 channel k."""
    levels = np.round(255 * np.arange(1, channels + 1) / channels).astype(np.uint8)
    if grayscale:
        colours = levels[:, None]
    else:  # evenly spaced hues (OpenCV's 0-180 scale), full saturation and value
        hsv = np.stack([np.arange(channels) * 180 // channels, np.full(channels, 255),
                        np.full(channels, 255)], -1).astype(np.uint8)[None]
        colours = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]
    return np.concatenate([np.zeros((1, colours.shape[1]), np.uint8), colours])


def render_grid(state: np.ndarray, colours: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """(10, 10, C) bool grid -> (H, W, 1 or 3) uint8 image, nearest-neighbour (see the module)."""
    top = np.max(state * np.arange(1, state.shape[-1] + 1, dtype=np.int64), axis=-1)
    rows = np.arange(size[0]) * state.shape[0] // size[0]
    cols = np.arange(size[1]) * state.shape[1] // size[1]
    return colours[top[rows][:, cols]]


class MinAtar(Env):
    """A MinAtar game stepped on `minatar.Environment` directly (the dynamics of the gymnasium ids
    `MinAtar/<Game>-v0|v1`, which the experts were trained on; the wrapper adds only an action map).

    `native_obs` is the (10, 10, C) bool grid. `time_limit` (agent steps, 0: none; MinAtar itself
    ends only Freeway, at 2500 steps) truncates: `is_last` without `is_terminal`.
    """

    def __init__(self, game: str, size: Sequence[int] = (64, 64), grayscale: bool = True,
                 action_repeat: int = 1, sticky: float = 0.1, difficulty_ramping: bool = True,
                 all_actions: bool = True, time_limit: int = 0, seed: int = 0, render: bool = True):
        super().__init__(size, grayscale, render)
        from minatar import Environment

        self.game = Environment(game, sticky_action_prob=float(sticky),
                                difficulty_ramping=bool(difficulty_ramping))
        name = minatar_games()[game]
        self.env_id = f"MinAtar/{name}-v{0 if all_actions else 1}"
        self._actions = list(range(self.game.num_actions())) if all_actions else list(self.game.minimal_action_set())
        self.act_space = gym.spaces.Discrete(len(self._actions))
        shape = tuple(self.game.state_shape())
        self.native_space = gym.spaces.Box(0, 1, shape, bool)
        self.obs_space["vector"] = gym.spaces.Box(0.0, 1.0, (int(np.prod(shape)),), np.float32)
        self.colours = palette(shape[-1], self.grayscale)
        self.action_repeat = max(1, int(action_repeat))
        self.time_limit = int(time_limit)
        self._seed: int | None = int(seed)
        self._step = 0

    def action_effects(self) -> np.ndarray:
        """For each action, the first action with the same effect: a MinAtar game ignores every
        action outside its minimal set (Breakout moves only on l and r), so those act as the
        no-op, 0. Lets agreement with the expert be counted by effect, not by index."""
        minimal = set(self.game.minimal_action_set())
        if len(self._actions) == len(minimal):  # -v1: every action has its own effect
            return np.arange(len(self._actions))
        return np.array([a if a in minimal else 0 for a in self._actions])  # index 0 is the no-op

    def reset(self, seed: int | None = None) -> Obs:
        """Start an episode; `seed` (or, at the first reset, the constructor's) reseeds the game's
        generator, which drives both its spawns and the sticky actions."""
        if seed is not None:
            self._seed = int(seed)
        if self._seed is not None:
            self.game.seed(self._seed)
            self._seed = None
        self.game.reset()
        self._step = 0
        self.native_obs, self.info = self.game.state(), {}
        return self._obs(self._render(), 0.0, True, False, False)

    def step(self, action: Any) -> Obs:
        act = self._actions[self._index(action)]
        reward, terminal = 0.0, False
        for _ in range(self.action_repeat):
            r, terminal = self.game.act(act)
            reward += float(r)
            if terminal:
                break
        self._step += 1
        self.native_obs = self.game.state()
        truncated = not terminal and 0 < self.time_limit <= self._step
        return self._obs(self._render(), reward, False, bool(terminal or truncated), bool(terminal))

    def _render(self) -> np.ndarray | None:
        return render_grid(self.native_obs, self.colours, self.size) if self.render else None

