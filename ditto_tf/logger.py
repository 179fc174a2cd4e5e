"""Metrics to the terminal, `metrics.jsonl` and TensorBoard, as DreamerV2 does."""

from __future__ import annotations

import io
import json
import pathlib
from typing import Any, Mapping

import numpy as np
import tensorflow as tf
from PIL import Image

from ditto_tf.rundir import METRICS


class Logger:
    """Collects scalars and videos, then writes them at a step.

    Scalars go to `<logdir>/metrics.jsonl` (one JSON object per write, with `step`) and to
    TensorBoard event files under `<logdir>/<subdir>`; videos go to TensorBoard as GIFs.
    """

    def __init__(self, logdir: str | pathlib.Path, subdir: str = "", resume_step: int | None = None):
        self.logdir = pathlib.Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._writer = tf.summary.create_file_writer(str(self.logdir / subdir) if subdir else str(self.logdir))
        self._scalars: dict[str, float] = {}
        self._videos: dict[str, np.ndarray] = {}
        self.metrics_path = self.logdir / METRICS
        _drop_torn_line(self.metrics_path)
        if resume_step is not None:
            _drop_rows_after(self.metrics_path, resume_step)

    def scalar(self, name: str, value: Any) -> None:
        self._scalars[name] = float(np.asarray(value))

    def scalars(self, values: Mapping[str, Any], prefix: str = "") -> None:
        for name, value in values.items():
            self.scalar(f"{prefix}{name}", value)

    def video(self, name: str, frames: np.ndarray) -> None:
        """`frames`: (T, H, W, C) uint8 or float in [0, 1]."""
        self._videos[name] = np.asarray(frames)

    def write(self, step: int) -> dict[str, float]:
        """Flush everything collected since the last write; returns the scalars written."""
        scalars, self._scalars = self._scalars, {}
        videos, self._videos = self._videos, {}
        if scalars:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps({"step": int(step), **scalars}) + "\n")
        with self._writer.as_default(step=int(step)):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
            for name, frames in videos.items():
                _write_gif_summary(name, frames, int(step))
        self._writer.flush()
        return scalars


def format_seconds(seconds: float) -> str:
    """`8m04s` / `32s`: wall times in summary lines."""
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


# Headline metrics of a phase's summary line: (metrics key, label), shown when present.
HEADLINES = (
    ("image_loss", "image loss"), ("vector_loss", "vector loss"), ("kl_loss", "KL loss"),
    ("openl_mse", "open-loop MSE"), ("openl_vector_mse", "open-loop MSE (vector)"),
    ("action_accuracy", "held-out action accuracy"), ("action_error", "held-out action error"),
    ("latent_distance", "L_d"),
    ("reward_mean", "imagined reward"),
)


def summary_line(name: str, step: int, steps: int, done_now: int, seconds: float,
                 metrics: Mapping[str, float]) -> str:
    """The one line a phase ends with: updates, wall time, headline metrics (the last logged)."""
    speed = f", {done_now / seconds:.2f} updates/s" if done_now and seconds > 0 else ""
    shown = [f"{label} {metrics[key]:.4g}" for key, label in HEADLINES if key in metrics]
    return (f"{name}: {step} of {steps} updates ({done_now} in this run, {format_seconds(seconds)}"
            f"{speed})" + (": " + ", ".join(shown) if shown else ""))


def _drop_torn_line(path: pathlib.Path) -> None:
    """A kill in the middle of an append leaves a last line without its newline; appending after
    it would glue the next record onto it. Cut the file back to its last whole line."""
    try:
        with path.open("rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
    except FileNotFoundError:
        pass


def _drop_rows_after(path: pathlib.Path, step: int) -> None:
    """Rows logged after the checkpoint a run resumes from are redone: drop the old ones, so
    each step appears once."""
    try:
        lines = path.read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return
    kept = [line for line in lines if _row_step(line) <= step]
    if len(kept) != len(lines):
        from ditto_tf.files import atomic_write_text

        atomic_write_text(path, "".join(kept))


def _row_step(line: str) -> float:
    try:
        return float(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 0.0


def encode_gif(frames: np.ndarray, fps: int = 10) -> bytes:
    """Encode (T, H, W, C) frames as an animated GIF with Pillow."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0, 1) * 255).astype(np.uint8)
    if frames.shape[-1] == 1:
        frames = frames[..., 0]
    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=int(1000 / fps), loop=0)
    return buffer.getvalue()


def _write_gif_summary(name: str, frames: np.ndarray, step: int) -> None:
    """A TensorBoard image summary holding a GIF: TensorBoard plays it as a video."""
    _, height, width, channels = np.asarray(frames).shape
    summary = tf.compat.v1.Summary()
    image = tf.compat.v1.Summary.Image(height=height, width=width, colorspace=1 if channels == 1 else 3)
    image.encoded_image_string = encode_gif(frames)
    summary.value.add(tag=name, image=image)
    tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step)
