"""Train, measure and ship the PPO expert of one MinAtar game (resumable; one game per call, so
other heavy jobs interleave):

    flock /tmp/ditto_heavy.lock python benchmarks/minatar_experts.py breakout --ship

Trains through `expert.source train` (rl-zoo3, `experts/hyperparams/ppo.yml`; a killed run
resumes from its checkpoint), plays `--episodes` full episodes in the true env (MinAtar's sticky
actions and ramping, seeded) with the deterministic and the sampling policy, prints return
mean +- SE for each and, with `--ship`, copies the zoo run into `experts/ppo/<EnvId>_1` with
`evaluation.json` (steps, training time, returns) beside the zip. The shipped zip keeps the
policy and drops Adam's moment estimates (training state an expert never uses; they are two
thirds of the file), so that it stays under 2 MB.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import shutil
import sys
import time
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from ditto_tf import zoo  # noqa: E402
from ditto_tf.config import load_config  # noqa: E402
from ditto_tf.driver import ExpertActor, drive, quotas  # noqa: E402
from ditto_tf.envs import VecEnv  # noqa: E402
from ditto_tf.experts import load_run  # noqa: E402
from ditto_tf.files import atomic_write_text  # noqa: E402

EVAL_SEED = 10_000  # episodes seeded apart from collection's (seed 0 upwards)


def play(config, run: pathlib.Path, env_id: str, deterministic: bool, episodes: int) -> list[float]:
    """Returns of `episodes` seeded full episodes of the expert in `run`, 10 envs in lock step."""
    expert = load_run(run, "ppo", env_id, deterministic, "ppo", {})
    envs = VecEnv.make(config, min(10, episodes), seed=EVAL_SEED).envs
    played = drive(envs, ExpertActor(envs, expert, EVAL_SEED), quotas(episodes, len(envs)),
                   seeds=lambda i, n: EVAL_SEED + 1000 * i + n)
    return [e.score for e in played]


def slim(zip_path: pathlib.Path) -> None:
    """Empty the optimizer state in an SB3 zip, in place (atomically); it still loads exactly."""
    import torch

    with zipfile.ZipFile(zip_path) as archive:
        members = {info: archive.read(info.filename) for info in archive.infolist()}
    for info in members:
        if info.filename == "policy.optimizer.pth":
            state = torch.load(io.BytesIO(members[info]), map_location="cpu", weights_only=True)
            state["state"] = {}
            buffer = io.BytesIO()
            torch.save(state, buffer)
            members[info] = buffer.getvalue()
    tmp = zip_path.with_name(f".{zip_path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in members.items():
            archive.writestr(info, data)
    os.replace(tmp, zip_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("game", help="a MinAtar game: breakout, freeway, space_invaders, asterix, seaquest")
    parser.add_argument("--steps", type=int, default=0, help="PPO steps (0: the hyperparameters file's)")
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--ship", action="store_true", help="copy the run into experts/ppo/")
    args = parser.parse_args()
    block = "minatar_" + args.game.replace("_", "")
    config = load_config(["minatar", block], ["--expert.source", "train", "--expert.train_steps", str(args.steps)])
    start = time.perf_counter()
    run, env_id = zoo.train(config, "ppo")
    train_seconds = time.perf_counter() - start
    result = {"env_id": env_id, "steps": zoo.train_steps(config, "ppo"), "episodes": args.episodes,
              "date": time.strftime("%Y-%m-%d")}
    shipped = zoo.PROJECT_ZOO / "ppo" / run.name
    log = run / "training.json"  # written by zoo.train; measured here for runs trained before it
    result["train_seconds"] = (json.loads(log.read_text())["seconds"] if log.is_file()
                               else round(train_seconds))
    for deterministic in (True, False):
        returns = play(config, run, env_id, deterministic, args.episodes)
        mean, se = float(np.mean(returns)), float(np.std(returns, ddof=1) / np.sqrt(len(returns)))
        result["deterministic" if deterministic else "sampled"] = {
            "mean": round(mean, 2), "se": round(se, 2), "returns": returns}
        print(f"{env_id} {'deterministic' if deterministic else 'sampled'}: {mean:.2f} +- {se:.2f} "
              f"over {len(returns)} episodes", flush=True)
    print(f"{env_id}: {result['steps']:,} steps, {result['train_seconds']} s of training")
    if args.ship:
        staging = shipped.with_name(f".{shipped.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(run, staging)
        zip_path = staging / f"{zoo.file_name(env_id)}.zip"
        slim(zip_path)
        result["zip_bytes"] = zip_path.stat().st_size
        atomic_write_text(staging / "evaluation.json", json.dumps(result, indent=1) + "\n")
        old = shipped.with_name(f".{shipped.name}.old")
        if shipped.exists():
            os.replace(shipped, old)
        os.replace(staging, shipped)  # the shipped run is whole at every moment but this rename
        shutil.rmtree(old, ignore_errors=True)
        print(f"shipped {shipped} (zip {result['zip_bytes'] / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
