"""Seconds per world-model update and peak RSS on this machine.

    flock /tmp/ditto_heavy.lock python benchmarks/world_model_speed.py --all
    flock /tmp/ditto_heavy.lock python benchmarks/world_model_speed.py --configs atari --batch 16 --length 50

One case per process (peak RSS is per process); `--all` runs the cases of BENCHMARKS.md one
after another in subprocesses and prints a Markdown table. Batches are random uint8 images and
one-hot actions: the cost of an update does not depend on the pixel values.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# (configs, batch, length, precision, timed updates): mixed_float16 is ~100x slower on this CPU.
CASES = [
    (["atari"], 50, 50, "float32", 5),
    (["atari"], 16, 50, "float32", 10),
    (["small"], 16, 50, "float32", 20),
    (["small"], 50, 50, "float32", 10),
    (["small"], 16, 50, "mixed", 2),
]
# Not in --all (about 20 s per update here, more under load): --configs atari --batch 16 --precision mixed --steps 1


def measure(configs: list[str], batch: int, length: int, precision: str, steps: int,
            actions: int) -> dict:
    import numpy as np
    import tensorflow as tf

    from ditto_tf.config import load_config
    from ditto_tf.world_model import WorldModel, WorldModelTrainer, image_shape

    config = load_config(configs, ["--precision", precision, "--world_model.batch", str(batch),
                                   "--world_model.length", str(length)])
    model = WorldModel(config, actions)
    trainer = WorldModelTrainer(model, config)
    rng = np.random.default_rng(0)
    data = dict(
        image=rng.integers(0, 256, (batch, length, *image_shape(config)), dtype=np.uint8),
        action=np.eye(actions, dtype=np.float32)[rng.integers(0, actions, (batch, length))],
        is_first=np.zeros((batch, length), bool))
    data["is_first"][:, 0] = True
    data = {k: tf.constant(v) for k, v in data.items()}
    start = time.perf_counter()
    float(trainer.train(data)["model_loss"])  # trace + first step
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        float(trainer.train(data)["model_loss"])
        times.append(time.perf_counter() - start)
    params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    return dict(configs=" ".join(configs), batch=batch, length=length, precision=precision,
                params_m=round(params / 1e6, 2), first_s=round(first, 1),
                median_s=round(statistics.median(times), 3), min_s=round(min(times), 3),
                steps=steps, peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                threads=os.cpu_count())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["small"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed"])
    parser.add_argument("--steps", type=int, default=10, help="timed updates after the first")
    parser.add_argument("--actions", type=int, default=6, help="action size (Pong: 6)")
    parser.add_argument("--all", action="store_true", help="run every case in CASES")
    args = parser.parse_args()
    if not args.all:
        print(json.dumps(measure(args.configs, args.batch, args.length, args.precision,
                                 args.steps, args.actions)), flush=True)
        return
    rows = []
    for configs, batch, length, precision, steps in CASES:
        command = [sys.executable, __file__, "--configs", *configs, "--batch", str(batch),
                   "--length", str(length), "--precision", precision, "--steps", str(steps)]
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-2000:], file=sys.stderr)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| configs | batch x length | precision | params | s/update (median) | first call s | peak RSS GB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['configs']} | {r['batch']} x {r['length']} | {r['precision']} | {r['params_m']} M "
              f"| {r['median_s']} (n={r['steps']}) | {r['first_s']} | {r['peak_rss_gb']} |")


if __name__ == "__main__":
    main()
