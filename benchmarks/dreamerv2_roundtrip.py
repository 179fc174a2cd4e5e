"""Full-size DreamerV2 round trip: the real DreamerV2 2.2.0 at its Atari world-model size.

    flock /tmp/ditto_heavy.lock python benchmarks/dreamerv2_roundtrip.py [--configs atari pong]

Runs DreamerV2's own Agent (its `atari` config: 64x64 gray, deter 600, 32 x 32 latents, depth
48, 4 x 400 heads and actor-critic, float32) for one update on a random batch in a legacy-Keras
subprocess, saves `variables.pkl`, imports it with `python -m ditto_tf.dreamerv2 import` into the
ditto_tf world model of the given configs, and prints the max abs differences of every output
on fixed inputs, the tensor / parameter counts and the times. The test suite does the same at a
tiny size; this checks the real sizes (4-layer encoder / decoder at 64x64).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402

import dreamerv2_reference  # noqa: E402
from ditto_tf import dreamerv2  # noqa: E402
from ditto_tf.config import load_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=["atari", "pong"])
    args = parser.parse_args()
    overrides = ["--precision", "float32", "--world_model.reward_head", "true",
                 "--world_model.discount_head", "true"]
    config = load_config(args.configs, overrides)
    package = dreamerv2_reference.install()
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        actions = 6  # Pong's minimal action set; the import below reads it from the env
        spec = dreamerv2_reference.spec_for(config, actions, actor_critic_layers=4,
                                            actor_critic_units=400, batch=4, length=16,
                                            train_steps=1, eval_batch=4, eval_length=20)
        start = time.perf_counter()
        dreamerv2_reference.run(package, spec, out, timeout=1800)
        reference_seconds = time.perf_counter() - start
        start = time.perf_counter()
        code = dreamerv2.main(["import", str(out / "variables.pkl"), "--configs", *args.configs,
                               "--out", str(out / "ckpt"), *overrides])
        import_seconds = time.perf_counter() - start
        if code != 0:
            raise SystemExit(code)
        from ditto_tf.wm_training import restore_world_model

        model = restore_world_model(config, out / "ckpt", actions)
        errors = dreamerv2_reference.differences(model, np.load(out / "reference.npz"), True)
        pickle_mb = (out / "variables.pkl").stat().st_size / 1e6
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    print(f"configs {' '.join(args.configs)}: world model {params:,} parameters; "
          f"variables.pkl {pickle_mb:.1f} MB")
    print(f"DreamerV2 reference run (build, 1 update, save, outputs): {reference_seconds:.1f} s")
    print(f"import (read, check, assign, save, read back): {import_seconds:.1f} s")
    print("max abs difference, ditto_tf vs DreamerV2 (float32):")
    for name, value in errors.items():
        print(f"  {name:34s} {value:.2e}")
    print(f"worst: {max(errors.values()):.2e} (tolerance in the test: 1e-4)")


if __name__ == "__main__":
    main()
