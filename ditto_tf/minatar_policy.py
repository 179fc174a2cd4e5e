"""The SB3 features extractor the MinAtar experts use: MinAtar's own network body.

Young & Tian (2019) give DQN and AC(lambda) one 3 x 3 convolution of 16 channels (stride 1, no
padding: 10 x 10 -> 8 x 8) and a 128-unit layer; an MLP on the flattened grid plateaued far
below published agents here (../shared/DESIGN.md section 8). The grid arrives channels last as
SB3 hands it over (bool -> float, no /255: MinAtar's Box is not an image space for SB3).

Used from the zoo hyperparameters file (`experts/hyperparams/ppo.yml`), where `policy_kwargs` is a
string that rl-zoo3 evaluates, so the zips pickle this class by reference: loading them needs
ditto_tf importable.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


class MinAtarCNN(BaseFeaturesExtractor):
    """(N, 10, 10, C) grid -> conv 3x3 x `channels`, ReLU -> flatten -> `features_dim` units, ReLU."""

    def __init__(self, observation_space: gym.spaces.Box, channels: int = 16, features_dim: int = 128):
        super().__init__(observation_space, features_dim)
        height, width, depth = observation_space.shape
        self.conv = nn.Sequential(nn.Conv2d(depth, channels, 3), nn.ReLU(), nn.Flatten())
        self.linear = nn.Sequential(nn.Linear(channels * (height - 2) * (width - 2), features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.conv(observations.permute(0, 3, 1, 2).float()))
