"""Checkpoints that resume: one `tf.train.CheckpointManager` per phase, with the step inside."""

from __future__ import annotations

import pathlib
import shutil

import keras
import tensorflow as tf

from ditto_tf.errors import about

# What a damaged or foreign checkpoint raises on restore (IndexError: a truncated .data file).
RESTORE_ERRORS = (tf.errors.OpError, AssertionError, ValueError, IndexError)


class Checkpointer:
    """Saves and restores `trackables` (Keras models, optimizers, variables) with a step counter.

    Build every model and optimizer (their variables must exist) before `restore()`: restoring
    into unbuilt Keras objects silently loads nothing. The manager writes the checkpoint files
    first and updates its index file atomically last, so a kill mid-save leaves the previous
    checkpoint as the latest.
    """

    def __init__(self, directory: str | pathlib.Path, max_to_keep: int = 10, **trackables):
        self.directory = pathlib.Path(directory)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self._trackables = trackables
        self._checkpoint = tf.train.Checkpoint(step=self.step, **trackables)
        self.manager = tf.train.CheckpointManager(self._checkpoint, str(self.directory), max_to_keep)

    def restore(self) -> int:
        """Restore the latest checkpoint if there is one; returns the step (0 for a fresh run)."""
        self._remove_stale_temps()
        latest = self.manager.latest_checkpoint
        if latest is None:
            return 0
        # Keras 3 optimizers checkpoint their learning rate as a variable: without this, a run
        # resumed with another --...lr silently kept the old one. The config's rate wins.
        rates = {name: float(obj.learning_rate) for name, obj in self._trackables.items()
                 if isinstance(obj, keras.optimizers.Optimizer)}
        with about(latest, "checkpoint cannot be restored", RESTORE_ERRORS):
            self._checkpoint.restore(latest).assert_existing_objects_matched()
        for name, rate in rates.items():
            self._trackables[name].learning_rate = rate
        return int(self.step.numpy())

    def _remove_stale_temps(self) -> None:
        """A kill during save() leaves TF's staging folder `ckpt-<n>_temp/` behind (the index
        never listed it, and the step is redone on resume): remove it."""
        if self.directory.is_dir():
            for path in self.directory.glob("*_temp*"):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)

    def save(self, step: int) -> str:
        """Save at `step`; keeps the newest `max_to_keep` checkpoints."""
        self.step.assign(step)
        return self.manager.save(checkpoint_number=step)

    @property
    def checkpoints(self) -> list[str]:
        """Paths of the kept checkpoints, oldest first."""
        return list(self.manager.checkpoints)
