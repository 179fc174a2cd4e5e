"""Seconds per update of ditto_tf against the official DreamerV2 2.2.0, side by side.

    flock /tmp/ditto_heavy.lock python benchmarks/dreamerv2_speed.py --sizes small --rounds 3
    flock /tmp/ditto_heavy.lock python benchmarks/dreamerv2_speed.py --sizes atari --rounds 2 --steps 4
    flock /tmp/ditto_heavy.lock python benchmarks/dreamerv2_speed.py --profile --sizes small

Each round runs one ditto_tf process and one DreamerV2 process per size, alternating (DreamerV2
needs legacy Keras, TF_USE_LEGACY_KERAS=1, in its own process; it is pip-installed the way
`tests/dreamerv2_reference.py` installs it). Both sides get the same sizes, the same random
batch and the same thread settings (`--intra` / `--inter`, 0: TensorFlow's default), so the
ratio measures the code. Per process, after one untimed call (tracing), `--steps` timed calls of:

- the world-model update: 16 x 50 uint8 64 x 64 frames, 6 actions, float32, RSSM / encoder /
  decoder of the size, 4 x 400 reward and discount heads (DreamerV2's own `WorldModel.train`);
- the imagination update: 512 start states x 15 imagined steps, 4 x 400 actor and critic
  (DreamerV2's own `ActorCritic.train`). Both sides compute the same reward, eq. 8 on z against
  fixed expert latents, and neither uses a discount head here (DITTO has none), so the heads'
  work does not differ between the sides.

Prints the medians over rounds of the per-process medians and the ratios (DreamerV2 / ditto_tf:
above 1 means ditto_tf is faster). `--code DIR` runs the ditto_tf of another checkout as a third
side (e.g. `git archive <commit> | tar -x -C DIR`: before / after a change, in the same rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import dreamerv2_reference  # noqa: E402

SIZES = {  # deter = hidden, stoch x discrete latents, conv depth (encoder and decoder)
    "small": dict(deter=200, stoch=16, discrete=16, depth=16),
    "atari": dict(deter=600, stoch=32, discrete=32, depth=48),
}
BATCH, LENGTH, ACTIONS, STARTS, HORIZON, IMAGE = 16, 50, 6, 512, 15, [64, 64, 1]


def expert_latents(rng, size: dict):
    """Fixed expert latents (H+1, STARTS, S, K) one-hot and start states (STARTS, ...)."""
    import numpy as np

    s, k, d = size["stoch"], size["discrete"], size["deter"]
    stoch = np.eye(k, dtype=np.float32)[rng.integers(k, size=(HORIZON + 1, STARTS, s))]
    deter = rng.normal(size=(HORIZON + 1, STARTS, d)).astype(np.float32)
    return stoch, deter


def time_calls(fn, steps: int) -> float:
    """Median seconds of `steps` calls after one untimed (tracing) call; fn() returns a scalar."""
    float(fn())
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        float(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ditto_updates(size: dict, code: str | None = None) -> dict:
    """{wm, ac}: zero-argument calls of ditto_tf's two updates at `size`, each returning a scalar."""
    if code:  # another checkout's ditto_tf
        sys.path.insert(0, code)
    import numpy as np
    import tensorflow as tf

    from ditto_tf.agents.actor_critic import ActorCritic
    from ditto_tf.agents.ditto import DittoReward
    from ditto_tf.config import load_config
    from ditto_tf.world_model import WorldModel, WorldModelTrainer

    d = size
    config = load_config([], [
        "--precision", "float32", "--world_model.batch", str(BATCH),
        "--world_model.length", str(LENGTH), "--world_model.reward_head", "true",
        "--world_model.discount_head", "true",
        "--world_model.rssm.deter", str(d["deter"]), "--world_model.rssm.hidden", str(d["deter"]),
        "--world_model.rssm.stoch", str(d["stoch"]), "--world_model.rssm.discrete", str(d["discrete"]),
        "--world_model.encoder.depth", str(d["depth"]), "--world_model.decoder.depth", str(d["depth"]),
        "--agent.batch", str(STARTS), "--agent.horizon", str(HORIZON)])
    rng = np.random.default_rng(0)
    tf.random.set_seed(0)
    model = WorldModel(config, ACTIONS)
    trainer = WorldModelTrainer(model, config)
    batch = dreamerv2_reference.random_batch(rng, BATCH, LENGTH, IMAGE, ACTIONS)
    batch = {k: tf.constant(v) for k, v in batch.items()}
    agent = ActorCritic(config, model, ACTIONS, True, DittoReward("stoch"))
    stoch, deter = expert_latents(rng, size)
    swap = lambda x: tf.constant(np.swapaxes(x, 0, 1))  # noqa: E731  time- to batch-major
    expert = dict(stoch=swap(stoch), deter=swap(deter),
                  logit=tf.zeros(swap(stoch).shape, tf.float32))
    return dict(wm=lambda: trainer.train(batch)["model_loss"],
                ac=lambda: agent.update(expert, 1)["actor_loss"])


def profile(calls: dict, steps: int, top: int = 12) -> None:
    """Per-op-type seconds per update from TensorFlow's profiler trace (op events of the
    executor threads; ops that run side by side both count, so shares are of summed op time)."""
    import collections
    import tempfile

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    for name, call in calls.items():
        float(call())  # trace
        with tempfile.TemporaryDirectory() as logdir:
            tf.profiler.experimental.start(logdir)
            start = time.perf_counter()
            for _ in range(steps):
                float(call())
            wall = (time.perf_counter() - start) / steps
            tf.profiler.experimental.stop()
            space = xplane_pb2.XSpace()
            space.ParseFromString(next(pathlib.Path(logdir).rglob("*.xplane.pb")).read_bytes())
        seconds = collections.Counter()
        for plane in space.planes:
            for line in plane.lines:
                if not line.name.startswith("tf_Compute"):
                    continue
                for event in line.events:
                    label = plane.event_metadata[event.metadata_id].name
                    if ":" in label and "::" not in label:  # "scope/op:OpType", not executor events
                        seconds[label.rsplit(":", 1)[1]] += event.duration_ps * 1e-12 / steps
        total = sum(seconds.values())
        print(f"\n{name}: {wall:.3f} s/update wall (profiled), {total:.3f} s of op time")
        print("| op type | s/update | share |\n|---|---|---|")
        for op, value in seconds.most_common(top):
            print(f"| {op} | {value:.4f} | {value / total:.1%} |")


def dreamerv2_worker(size: dict, steps: int) -> dict:
    package = dreamerv2_reference.install()
    dreamerv2_reference.install_shims(package)
    import types

    import numpy as np
    import tensorflow as tf

    import agent
    import common

    d = size
    spec = dict(image=IMAGE, actions=ACTIONS, deter=d["deter"], hidden=d["deter"],
                stoch=d["stoch"], discrete=d["discrete"], encoder_depth=d["depth"],
                encoder_kernels=[4, 4, 4, 4], decoder_depth=d["depth"],
                decoder_kernels=[5, 5, 6, 6], head_layers=4, head_units=400,
                actor_critic_layers=4, actor_critic_units=400, pred_discount=True,
                batch=BATCH, length=LENGTH)
    config = dreamerv2_reference.dreamerv2_config(package, spec).update(
        {"imag_horizon": HORIZON})
    rng = np.random.default_rng(0)
    tf.random.set_seed(0)
    obs_space = {k: types.SimpleNamespace(shape=s) for k, s in
                 dict(image=tuple(IMAGE), reward=(), is_first=(), is_last=(), is_terminal=()).items()}
    act_space = {"action": types.SimpleNamespace(shape=(ACTIONS,), n=ACTIONS)}
    agnt = agent.Agent(config, obs_space, act_space, common.Counter(0))
    batch = dreamerv2_reference.random_batch(rng, BATCH, LENGTH, IMAGE, ACTIONS)
    batch = {k: tf.constant(v) for k, v in batch.items()}
    train_wm = tf.function(lambda data: agnt.wm.train(data)[2]["model_loss"])
    wm = time_calls(lambda: train_wm(batch), steps)

    agnt.wm.heads.pop("discount")  # the imagination uses the constant discount, as DITTO does
    stoch, deter = expert_latents(rng, size)
    expert = tf.constant(stoch)
    # DreamerV2 flattens (B, T) start states: 16 x 32 = 512 starts.
    shape = (BATCH, STARTS // BATCH)
    start = dict(stoch=tf.constant(stoch[0].reshape(*shape, *stoch.shape[2:])),
                 deter=tf.constant(deter[0].reshape(*shape, -1)),
                 logit=tf.zeros((*shape, *stoch.shape[2:])))

    def reward(seq):  # eq. 8 on one-hot z: the fraction of categoricals that agree
        return tf.reduce_mean(tf.reduce_sum(tf.cast(seq["stoch"], tf.float32) * expert, -1), -1)

    behavior = agnt._task_behavior
    train_ac = tf.function(lambda: behavior.train(agnt.wm, start, None, reward)["actor_ent"])
    ac = time_calls(train_ac, steps)
    return dict(wm=wm, ac=ac)


def threads(args: argparse.Namespace) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter)


def worker(args: argparse.Namespace) -> None:
    threads(args)
    size = SIZES[args.size]
    if args.worker == "dreamerv2":
        result = dreamerv2_worker(size, args.steps)
    else:
        calls = ditto_updates(size, args.code if args.worker == "code" else None)
        result = {k: time_calls(call, args.steps) for k, call in calls.items()}
    print(json.dumps(result), flush=True)


def spawn(side: str, size: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    if side == "dreamerv2":
        env["TF_USE_LEGACY_KERAS"] = "1"
    else:
        env.pop("TF_USE_LEGACY_KERAS", None)
    command = [sys.executable, __file__, "--worker", side, "--sizes", size, "--steps",
               str(args.steps), "--intra", str(args.intra), "--inter", str(args.inter)]
    if args.code:
        command += ["--code", args.code]
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"{side} {size} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "atari"])
    parser.add_argument("--rounds", type=int, default=3, help="alternating process pairs per size")
    parser.add_argument("--steps", type=int, default=5, help="timed calls per process")
    parser.add_argument("--intra", type=int, default=0, help="intra-op threads (0: TF default)")
    parser.add_argument("--inter", type=int, default=0, help="inter-op threads (0: TF default)")
    parser.add_argument("--code", help="another checkout's folder: its ditto_tf runs as a third side")
    parser.add_argument("--profile", action="store_true",
                        help="only ditto_tf (or --code): per-op-type profile of both updates")
    parser.add_argument("--worker", choices=["ditto", "dreamerv2", "code"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    for size in args.sizes:
        if size not in SIZES:
            raise SystemExit(f"error: --sizes: {size!r} is not one of {', '.join(SIZES)}")
    for flag in ("rounds", "steps"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"error: --{flag}: {getattr(args, flag)}; want at least 1")
    for flag in ("intra", "inter"):
        if getattr(args, flag) < 0:
            raise SystemExit(f"error: --{flag}: {getattr(args, flag)}; want 0 (default) or more threads")
    if args.code and not (pathlib.Path(args.code) / "ditto_tf" / "rssm.py").is_file():
        raise SystemExit(f"error: --code: {args.code!r} holds no ditto_tf package")
    if args.worker:
        args.size = args.sizes[0]
        return worker(args)
    if args.profile:
        threads(args)
        for size in args.sizes:
            print(f"## {size}")
            profile(ditto_updates(SIZES[size], args.code), args.steps)
        return
    dreamerv2_reference.install()  # once, before any timing
    print(f"{os.cpu_count()} CPUs, intra {args.intra} inter {args.inter}, {args.rounds} rounds "
          f"x {args.steps} timed calls; load {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for size in args.sizes:
        runs = {"ditto": [], "dreamerv2": [], **({"code": []} if args.code else {})}
        for _ in range(args.rounds):
            for side in runs:
                runs[side].append(spawn(side, size, args))
                print(f"{size} {side}: {json.dumps(runs[side][-1])}", flush=True)
        med = {s: {k: statistics.median(r[k] for r in v) for k in ("wm", "ac")}
               for s, v in runs.items()}
        rows.append((size, med))
    print(f"load after: {os.getloadavg()[0]:.2f}")
    print("\n| size | ditto_tf world model | DreamerV2 | ratio | ditto_tf imagination | DreamerV2 | ratio |")
    print("|---|---|---|---|---|---|---|")
    for size, m in rows:
        for side in [s for s in m if s != "dreamerv2"]:
            ours, theirs = m[side], m["dreamerv2"]
            name = size if side == "ditto" else f"{size} ({args.code})"
            print(f"| {name} | {ours['wm']:.3f} s | {theirs['wm']:.3f} s | "
                  f"{theirs['wm'] / ours['wm']:.2f}x | {ours['ac']:.3f} s | {theirs['ac']:.3f} s | "
                  f"{theirs['ac'] / ours['ac']:.2f}x |")


if __name__ == "__main__":
    main()
