"""Does the expert's cart stay inside a horizontal crop of pixel CartPole?

    python benchmarks/cartpole_crop.py --crop 0.3 0.7 --episodes 20 [--zoo ../shared/zoo]

Plays the zoo PPO expert (action repeat of the `quickstart_pixels` block) on CartPole-v1 and reports the
cart's x range in render pixels (CartPole renders 600 px wide for x in [-2.4, 2.4]: 125 px per
unit, the cart 50 px wide) and the share of steps where the whole cart lies inside the crop
[left, right] (fractions of the width). Also: how many render pixels one 64-px image pixel spans.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ditto_tf.config import load_config  # noqa: E402
from ditto_tf.envs import make_env  # noqa: E402
from ditto_tf.experts import load_expert  # noqa: E402

WIDTH, SCALE, CART = 600, 600 / 4.8, 50.0  # gymnasium's CartPole renderer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crop", nargs=2, type=float, default=[0.3, 0.7], metavar=("LEFT", "RIGHT"))
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--zoo", default=str(REPO.parent / "shared" / "zoo"))
    args = parser.parse_args()
    config = load_config(["quickstart_pixels"], ["--expert.source", "folder", "--expert.folder", args.zoo])
    expert = load_expert(config)
    left, right = args.crop[0] * WIDTH, args.crop[1] * WIDTH
    centres, inside, returns = [], [], []
    for seed in range(args.episodes):
        env = make_env(config, seed=10_000 + seed)
        obs, total = env.reset(), 0.0
        expert.reset(0)
        while not obs["is_last"]:
            obs = env.step(expert.act(env))
            total += float(obs["reward"])
            centre = WIDTH / 2 + float(env.native_obs[0]) * SCALE
            centres.append(centre)
            inside.append(left <= centre - CART / 2 and centre + CART / 2 <= right)
        returns.append(total)
        env.close()
    centres = np.asarray(centres)
    print(json.dumps({
        "crop": args.crop, "episodes": args.episodes, "steps": len(centres),
        "expert_return_mean": float(np.mean(returns)),
        "cart_centre_px_min": float(centres.min()), "cart_centre_px_max": float(centres.max()),
        "crop_px": [left, right], "share_of_steps_cart_inside": float(np.mean(inside)),
        "render_px_per_image_px_at_64": (right - left) / 64,
    }))


if __name__ == "__main__":
    main()
