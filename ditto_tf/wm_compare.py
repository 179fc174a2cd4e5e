"""Side-by-side comparison of world models on the same held-out episodes.

    python -m ditto_tf.dreamerv2 compare --configs atari pong \
        --models dreamerv2=runs/imported ditto=runs/pong --episodes runs/pong/data/expert/val \
        --out compare/

Each episode is cut into windows of `context + 45` steps (context: world_model.openloop_context).
Per model, on every window:

- reconstruction MSE: the posterior filter (latent modes) over the whole window, decoded;
- open-loop MSE over 15 and 45 steps: filter the first `context` frames, then roll the prior
  forward (modes) under the recorded actions and decode, as DreamerV2's open-loop videos do;
- KL: KL(posterior || prior) per step, summed over the latent categoricals (nats).

Pixel errors are per pixel on the [0, 1] scale. Writes `compare.md` (a markdown table),
`compare.json` and `openloop-<name>.png` per model (rows: truth, model, error; columns: time).
"""

from __future__ import annotations

import json
import pathlib
from typing import TYPE_CHECKING, Sequence

import numpy as np
import tensorflow as tf

from ditto_tf.config import Config
from ditto_tf.data.episodes import list_episodes, load_episode
from ditto_tf.errors import UserError
from ditto_tf.rundir import RunDir, resolve_path
from ditto_tf.files import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from ditto_tf.world_model import WorldModel

HORIZONS = (15, 45)
MAX_WINDOWS, BATCH = 64, 16
STRIP_EVERY = 3  # time steps between the columns of a video strip


def parse_models(models: Sequence[str]) -> list[tuple[str, pathlib.Path]]:
    """`NAME=PATH` or `PATH` (named after the folder) -> [(name, path)], names unique."""
    parsed = []
    for item in models:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = "", item
        path_ = resolve_path(path)
        if not path_.exists():
            raise UserError(f"--models {item}: no such checkpoint dir or logdir")
        parsed.append((name or path_.name, path_))
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise UserError(f"--models: names {names} repeat; give NAME=PATH")
    return parsed


def model_config(path: pathlib.Path, default: Config) -> Config:
    """A logdir's own config.yaml (its world model was built from it), else `default`."""
    run = RunDir(path)
    return run.stored_config() if run.exists() else default


def windows(directory: str | pathlib.Path, length: int, max_episodes: int) -> dict[str, np.ndarray]:
    """Non-overlapping windows of `length` steps from the first `max_episodes` episodes, at most
    MAX_WINDOWS spread over them; is_first is set at each window start."""
    paths = list_episodes(directory)[:max_episodes]
    if not paths:
        raise UserError(f"{directory}: no episode files (.npz)")
    per_episode = []
    for path in paths:
        episode = load_episode(path)
        if "image" not in episode:  # the comparison is of decoded frames (open-loop videos)
            raise UserError(f"{path}: holds no images; compare-world-models compares image models")
        starts = range(0, len(episode["image"]) - length + 1, length)
        per_episode.append([{k: episode[k][s:s + length] for k in ("image", "action")}
                            for s in starts])
    chosen: list[dict[str, np.ndarray]] = []
    while len(chosen) < MAX_WINDOWS and any(per_episode):  # round robin over episodes
        for items in per_episode:
            if items and len(chosen) < MAX_WINDOWS:
                chosen.append(items.pop(0))
    if not chosen:
        raise UserError(f"{directory}: no episode has {length} steps (context + {max(HORIZONS)})")
    batch = {k: np.stack([w[k] for w in chosen]) for k in ("image", "action")}
    batch["is_first"] = np.zeros(batch["action"].shape[:2], bool)
    batch["is_first"][:, 0] = True
    return batch


def evaluate(model: WorldModel, batch: dict[str, np.ndarray], context: int) -> tuple[dict, np.ndarray]:
    """Metrics of one world model on the windows, and its open-loop frames of window 0."""
    sums = {"recon": 0.0, "kl": 0.0, **{f"openloop_{h}": 0.0 for h in HORIZONS}}
    count, first_video = 0, None
    for start in range(0, len(batch["image"]), BATCH):
        part = {k: v[start:start + BATCH] for k, v in batch.items()}
        data = model.preprocess(part)
        truth = tf.cast(data["image"], tf.float32) + 0.5
        embed = model.encoder(data["image"])
        post, prior = model.rssm.observe(embed, data["action"], data["is_first"], sample=False)
        recon = tf.cast(model.decoder(model.rssm.get_feat(post)), tf.float32) + 0.5
        kl = model.rssm.get_dist(post).kl(model.rssm.get_dist(prior))  # (B, T)
        start_state = {k: v[:, context - 1] for k, v in post.items()}
        imagined = model.rssm.rollout(data["action"][:, context:], start_state, sample=False)
        openloop = tf.cast(model.decoder(model.rssm.get_feat(imagined)), tf.float32) + 0.5
        error = tf.reduce_mean(tf.square(openloop - truth[:, context:]), [2, 3, 4])  # (B, T')
        n = len(part["image"])
        sums["recon"] += n * float(tf.reduce_mean(tf.square(recon - truth)))
        sums["kl"] += n * float(tf.reduce_mean(kl))
        for h in HORIZONS:
            sums[f"openloop_{h}"] += n * float(tf.reduce_mean(error[:, :h]))
        count += n
        if first_video is None:
            model_frames = tf.concat([recon[0, :context], openloop[0]], 0)
            first_video = np.clip(model_frames.numpy(), 0.0, 1.0)
    return {k: v / count for k, v in sums.items()}, first_video


def video_strip(truth: np.ndarray, model: np.ndarray, context: int) -> np.ndarray:
    """(T, H, W, C) truth and model in [0, 1] -> uint8 image: rows truth, model, |error|,
    every STRIP_EVERY-th step as a column; a white frame marks the first open-loop column."""
    steps = list(range(0, len(truth), STRIP_EVERY))
    marked = min(t for t in steps if t >= context) if steps[-1] >= context else -1
    rows = []
    for frames in (truth, model, np.abs(model - truth)):
        rows.append(np.concatenate([np.pad(frames[t], ((1, 1), (1, 1), (0, 0)),
                                           constant_values=1.0 if t == marked else 0.0)
                                    for t in steps], 1))
    image = (np.concatenate(rows, 0) * 255).round().astype(np.uint8)
    return image if image.shape[-1] in (1, 3) else image[..., :3]


def write_png(path: pathlib.Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(tf.io.encode_png(image).numpy())


def table(results: dict[str, dict[str, float]], windows_count: int, context: int,
          episodes: str) -> str:
    """The markdown comparison table."""
    names = list(results)
    rows = [("reconstruction MSE (per pixel, [0, 1])", "recon"),
            *[(f"open-loop MSE over {h} steps", f"openloop_{h}") for h in HORIZONS],
            ("KL(posterior ‖ prior) per step (nats)", "kl")]
    lines = [f"World models on {windows_count} windows of {context} + {max(HORIZONS)} steps from "
             f"`{episodes}` (latent modes; lower is better).", "",
             "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(f"{results[n][key]:.5f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def run(config: Config, models: Sequence[str], episodes: str | pathlib.Path,
        out: str | pathlib.Path, max_episodes: int = 10, actions: int | None = None) -> str:
    """Compare `models` (checkpoint dirs or logdirs, optionally NAME=PATH) on `episodes`;
    writes the report into `out` and returns the markdown table."""
    from ditto_tf.wm_training import restore_world_model

    parsed = parse_models(models)
    context = int(config.world_model.openloop_context)
    if context < 1:
        raise UserError(f"world_model.openloop_context: {context}; must be at least 1")
    batch = windows(episodes, context + max(HORIZONS), max_episodes)
    actions = int(batch["action"].shape[-1]) if actions is None else actions
    out = pathlib.Path(out)
    results: dict[str, dict[str, float]] = {}
    for name, path in parsed:
        cfg = model_config(path, config)
        shape = tuple(batch["image"].shape[2:])
        from ditto_tf.world_model import image_shape

        if shape != image_shape(cfg):
            raise UserError(f"{episodes}: images are {shape}, model {name} ({path}) expects "
                            f"{image_shape(cfg)}")
        run = RunDir(path)
        directory = run.wm_checkpoints if run.world_model.is_dir() else path  # logdir or not
        model = restore_world_model(cfg, directory, actions)
        results[name], frames = evaluate(model, batch, context)
        truth = batch["image"][0].astype(np.float32) / 255.0
        write_png(out / f"openloop-{name}.png", video_strip(truth, frames, context))
    text = table(results, len(batch["image"]), context, str(episodes))
    atomic_write_text(out / "compare.md", text)
    atomic_write_text(out / "compare.json", json.dumps(
        {"episodes": str(episodes), "windows": len(batch["image"]), "context": context,
         "models": {n: {"path": str(p), **results[n]} for n, p in parsed}}, indent=1) + "\n")
    return text
