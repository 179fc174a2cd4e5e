"""Drive the official DreamerV2 2.2.0 code and dump a checkpoint plus reference outputs.

Run in a subprocess (it needs legacy Keras, which must never mix with ditto_tf's Keras 3):

    TF_USE_LEGACY_KERAS=1 python tests/dreamerv2_reference.py \
        --package DIR/dreamerv2 --spec spec.json --out OUTDIR

`--package` is the installed `dreamerv2` package folder (pip install --no-deps --target DIR
dreamerv2==2.2.0). `spec.json` gives the sizes (see `dreamerv2_config`). The script builds
DreamerV2's own `agent.Agent` on its `atari` config with those sizes in float32, trains it for
`train_steps` steps on fixed random batches, and writes to OUTDIR:

- `variables.pkl`     the full agent (`Agent.save`, what DreamerV2's train.py writes)
- `wm_variables.pkl`  the world model alone (`WorldModel.save`)
- `reference.npz`     fixed inputs and DreamerV2's outputs on them (keys listed in `main`)

Nothing here is copied into ditto_tf: this file only calls DreamerV2's public objects.

The helpers `install`, `spec_for`, `run` and `differences` are for the ditto_tf side (tests and
benchmarks/dreamerv2_roundtrip.py import this file; only `main` needs legacy Keras).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import types
from typing import Any

VERSION = "2.2.0"
DEFAULT_CACHE = pathlib.Path("~/.cache/ditto_tf").expanduser() / f"dreamerv2-{VERSION}"


def install(cache: pathlib.Path | None = None) -> pathlib.Path:
    """The `dreamerv2` package folder, pip-installed (no deps) into `cache` on first use
    (default $DITTO_DREAMERV2_CACHE or ~/.cache/ditto_tf/dreamerv2-2.2.0). Raises RuntimeError
    with pip's last line when the install fails."""
    cache = pathlib.Path(cache or os.environ.get("DITTO_DREAMERV2_CACHE", DEFAULT_CACHE))
    cache = cache.expanduser()
    package = cache / "dreamerv2"
    if (package / "agent.py").is_file():
        return package
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}."))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp),
             f"dreamerv2=={VERSION}"], capture_output=True, text=True, timeout=300)
        if result.returncode != 0 or not (tmp / "dreamerv2" / "agent.py").is_file():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"cannot install dreamerv2=={VERSION} from PyPI: {last}")
        shutil.rmtree(cache, ignore_errors=True)  # a broken earlier install
        try:
            tmp.rename(cache)  # appears complete or not at all
        except OSError:  # another process installed it meanwhile
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return package


def spec_for(config: Any, actions: int, **changes: Any) -> dict:
    """DreamerV2 sizes equal to a ditto_tf config's world model (the script's spec.json)."""
    wm = config.world_model
    spec = dict(
        image=[*config.env.size, 1 if config.env.grayscale else 3], actions=actions,
        deter=wm.rssm.deter, hidden=wm.rssm.hidden, stoch=wm.rssm.stoch,
        discrete=wm.rssm.discrete, encoder_depth=wm.encoder.depth,
        encoder_kernels=list(wm.encoder.kernels), decoder_depth=wm.decoder.depth,
        decoder_kernels=list(wm.decoder.kernels), head_layers=4, head_units=400,
        actor_critic_layers=2, actor_critic_units=32, pred_discount=True, batch=4, length=8,
        train_steps=2, eval_batch=3, eval_length=12, context=5, seed=0)
    spec.update(changes)
    return spec


def run(package: pathlib.Path, spec: dict, out: pathlib.Path, timeout: float = 600) -> None:
    """Run `main` in a legacy-Keras subprocess; RuntimeError with its stderr tail on failure."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, str(pathlib.Path(__file__).resolve()), "--package", str(package),
         "--spec", str(out / "spec.json"), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"DreamerV2 reference run failed:\n{result.stderr[-3000:]}")


def differences(model: Any, ref: Any, heads: bool) -> dict[str, float]:
    """Max abs difference of a ditto_tf WorldModel's outputs from DreamerV2's in `ref` (the
    loaded reference.npz), on the same inputs. Runs in the ditto_tf (Keras 3) process."""
    import numpy as np
    import tensorflow as tf

    out: dict[str, float] = {}

    def diff(name: str, ours: Any, theirs: Any) -> None:
        ours, theirs = np.asarray(ours, np.float32), np.asarray(theirs, np.float32)
        if ours.shape != theirs.shape:
            raise AssertionError(f"{name}: shape {ours.shape}, DreamerV2 {theirs.shape}")
        out[name] = max(out.get(name, 0.0), float(np.abs(ours - theirs).max()))

    batch = {k[len("input_"):]: ref[k] for k in ref.files if k.startswith("input_")}
    data = model.preprocess(batch)
    embed = model.encoder(data["image"])
    diff("embed", embed, ref["embed"])
    # The filter with modes (sample=False) over a sequence with a reset in the middle.
    post, prior = model.rssm.observe(embed, data["action"], data["is_first"], sample=False)
    diff("posterior logits", post["logit"], ref["post_logit"])
    diff("prior logits", prior["logit"], ref["prior_logit"])
    diff("deter", post["deter"], ref["post_deter"])
    feat = model.rssm.get_feat(post)
    diff("decoder mean", model.decoder(feat), ref["decoder_mean"])
    if heads:
        diff("reward mean", model.reward_head(feat)[..., 0], ref["reward_mean"])
        diff("discount mean", tf.sigmoid(model.discount_head(feat)[..., 0]), ref["discount_mean"])
    # DreamerV2's own sampled `observe`: replay its samples step by step through obs_step.
    state = model.rssm.initial(ref["input_image"].shape[0])
    for t in range(ref["input_image"].shape[1]):
        post_t, prior_t = model.rssm.obs_step(state, data["action"][:, t], embed[:, t],
                                              data["is_first"][:, t], sample=False)
        diff("sampled-filter posterior logits", post_t["logit"], ref["sampled_post_logit"][:, t])
        diff("sampled-filter prior logits", prior_t["logit"], ref["sampled_prior_logit"][:, t])
        state = {"stoch": tf.constant(ref["sampled_post_stoch"][:, t]),
                 "deter": tf.constant(ref["sampled_post_deter"][:, t]),
                 "logit": tf.constant(ref["sampled_post_logit"][:, t])}
    # Open loop from the filtered state at context - 1 under the true actions.
    context = ref["input_image"].shape[1] - ref["openloop_logit"].shape[1]
    start = {k: v[:, context - 1] for k, v in post.items()}
    openloop = model.rssm.rollout(data["action"][:, context:], start, sample=False)
    diff("open-loop prior logits", openloop["logit"], ref["openloop_logit"])
    diff("open-loop decoder mean", model.decoder(model.rssm.get_feat(openloop)),
         ref["openloop_decoder_mean"])
    return out


def install_shims(package: pathlib.Path) -> None:
    """Make DreamerV2 2.2.0 importable on today's TF (see DESIGN.md section 7)."""
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise SystemExit("dreamerv2_reference.py needs TF_USE_LEGACY_KERAS=1")
    sys.path.insert(0, str(package))  # DreamerV2 does `import common`
    import gymnasium
    import tf_keras

    sys.modules["gym"] = gymnasium  # only its env wrappers use gym
    # `tensorflow.keras.mixed_precision.experimental` was removed from Keras.
    shim = types.ModuleType("tensorflow.keras.mixed_precision.experimental")
    shim.Policy = tf_keras.mixed_precision.Policy
    shim.set_policy = tf_keras.mixed_precision.set_global_policy
    shim.global_policy = tf_keras.mixed_precision.global_policy
    shim.LossScaleOptimizer = tf_keras.mixed_precision.LossScaleOptimizer
    sys.modules[shim.__name__] = shim


def dreamerv2_config(package: pathlib.Path, spec: dict):
    """DreamerV2's `defaults` + `atari` blocks with the sizes of `spec`, float32."""
    import common
    import ruamel.yaml

    blocks = ruamel.yaml.YAML(typ="safe", pure=True).load((package / "configs.yaml").read_text())
    config = common.Config(blocks["defaults"]).update(blocks["atari"])
    return config.update({
        "precision": 32,
        "jit": True,
        "rssm.deter": spec["deter"],
        "rssm.hidden": spec["hidden"],
        "rssm.stoch": spec["stoch"],
        "rssm.discrete": spec["discrete"],
        "encoder.cnn_depth": spec["encoder_depth"],
        "encoder.cnn_kernels": spec["encoder_kernels"],
        "decoder.cnn_depth": spec["decoder_depth"],
        "decoder.cnn_kernels": spec["decoder_kernels"],
        "reward_head.layers": spec["head_layers"],
        "reward_head.units": spec["head_units"],
        "discount_head.layers": spec["head_layers"],
        "discount_head.units": spec["head_units"],
        "pred_discount": spec["pred_discount"],
        "actor.layers": spec["actor_critic_layers"],
        "actor.units": spec["actor_critic_units"],
        "critic.layers": spec["actor_critic_layers"],
        "critic.units": spec["actor_critic_units"],
        "dataset.batch": spec["batch"],
        "dataset.length": spec["length"],
    })


def random_batch(rng, batch: int, length: int, image: list[int], actions: int) -> dict:
    """A batch in DreamerV2's replay format: smooth random images, one-hot actions, resets."""
    import numpy as np

    h, w, c = image
    # Low-frequency images (upsampled noise) so the decoder has something learnable.
    coarse = rng.uniform(0, 255, (batch, length, h // 4 + 1, w // 4 + 1, c))
    img = coarse.repeat(4, 2).repeat(4, 3)[:, :, :h, :w].astype(np.uint8)
    action = np.eye(actions, dtype=np.float32)[rng.integers(0, actions, (batch, length))]
    is_first = np.zeros((batch, length), bool)
    is_first[:, 0] = True
    is_first[0, length // 2] = True  # a reset inside the sequence
    action[is_first] = 0.0
    return {
        "image": img,
        "action": action,
        "reward": rng.normal(size=(batch, length)).astype(np.float32),
        "is_first": is_first,
        "is_last": np.zeros((batch, length), bool),
        "is_terminal": np.zeros((batch, length), bool),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package", type=pathlib.Path, required=True)
    parser.add_argument("--spec", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())
    install_shims(args.package)

    import numpy as np
    import tensorflow as tf

    import agent
    import common

    tf.random.set_seed(spec["seed"])
    rng = np.random.default_rng(spec["seed"])
    config = dreamerv2_config(args.package, spec)
    h, w, c = spec["image"]
    obs_space = {
        "image": types.SimpleNamespace(shape=(h, w, c)),
        "reward": types.SimpleNamespace(shape=()),
        "is_first": types.SimpleNamespace(shape=()),
        "is_last": types.SimpleNamespace(shape=()),
        "is_terminal": types.SimpleNamespace(shape=()),
    }
    # What DreamerV2's OneHotAction wrapper exposes: a Box-like space with `n`.
    act_space = {"action": types.SimpleNamespace(shape=(spec["actions"],), n=spec["actions"])}
    agnt = agent.Agent(config, obs_space, act_space, common.Counter(0))

    for _ in range(spec["train_steps"]):
        data = random_batch(rng, spec["batch"], spec["length"], spec["image"], spec["actions"])
        agnt.train({k: tf.constant(v) for k, v in data.items()})
    args.out.mkdir(parents=True, exist_ok=True)
    agnt.save(args.out / "variables.pkl")
    agnt.wm.save(args.out / "wm_variables.pkl")

    # Reference outputs on a fixed held-out batch.
    wm = agnt.wm
    rssm = wm.rssm
    inputs = random_batch(rng, spec["eval_batch"], spec["eval_length"], spec["image"],
                          spec["actions"])
    data = wm.preprocess({k: tf.constant(v) for k, v in inputs.items()})
    embed = wm.encoder(data)
    swap = lambda x: tf.transpose(x, [1, 0] + list(range(2, len(x.shape))))  # noqa: E731
    start = rssm.initial(spec["eval_batch"])

    # Deterministic filter: obs_step with sample=False (stoch = mode), step by step.
    post, prior = common.static_scan(
        lambda prev, inp: rssm.obs_step(prev[0], *inp, sample=False),
        (swap(data["action"]), swap(embed), swap(data["is_first"])), (start, start))
    post = {k: swap(v) for k, v in post.items()}
    prior = {k: swap(v) for k, v in prior.items()}
    feat = rssm.get_feat(post)
    decoder_mean = wm.heads["decoder"](feat)["image"].mode()

    # DreamerV2's own sampled `observe`; the test replays its samples step by step.
    sampled_post, sampled_prior = rssm.observe(embed, data["action"], data["is_first"])

    # Open loop: from the filtered state at `context - 1`, img_step with modes.
    context = spec["context"]
    last = {k: v[:, context - 1] for k, v in post.items()}
    openloop = common.static_scan(
        lambda prev, act: rssm.img_step(prev, act, sample=False),
        swap(data["action"][:, context:]), last)
    openloop = {k: swap(v) for k, v in openloop.items()}

    outputs = {
        **{f"input_{k}": v for k, v in inputs.items()},
        "embed": embed,
        "post_logit": post["logit"], "post_stoch": post["stoch"], "post_deter": post["deter"],
        "prior_logit": prior["logit"], "prior_deter": prior["deter"],
        "feat": feat,
        "decoder_mean": decoder_mean,
        "reward_mean": wm.heads["reward"](feat).mode(),
        "sampled_post_logit": sampled_post["logit"],
        "sampled_post_stoch": sampled_post["stoch"],
        "sampled_post_deter": sampled_post["deter"],
        "sampled_prior_logit": sampled_prior["logit"],
        "openloop_logit": openloop["logit"], "openloop_deter": openloop["deter"],
        "openloop_decoder_mean": wm.heads["decoder"](rssm.get_feat(openloop))["image"].mode(),
    }
    if "discount" in wm.heads:
        outputs["discount_mean"] = wm.heads["discount"](feat).mean()
    outputs = {k: np.asarray(v) for k, v in outputs.items()}
    names = [v.name for v in agnt.variables]
    tmp = args.out / "reference.npz.tmp"
    with open(tmp, "wb") as f:  # file object: np.savez would append .npz to the name
        np.savez_compressed(f, variable_names=np.array(names), **outputs)
    tmp.replace(args.out / "reference.npz")
    print(f"wrote {args.out}: {len(names)} agent tensors")


if __name__ == "__main__":
    main()
