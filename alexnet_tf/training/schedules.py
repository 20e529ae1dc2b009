"""Owns the learning-rate schedules: the paper's divide-by-10-on-a-plateau, step, and cosine.

The paper (Sec. 5) "divided the learning rate by 10 when the validation error rate stopped
improving with the current learning rate ... reduced three times prior to termination".
That rule needs state that outlives a process (best accuracy so far, epochs without
improvement, drops so far), so it lives in `PlateauState`, a tf.Module whose variables go
into every checkpoint; the schedule reads its drop counter inside the train step.
"""

import math

import keras
import tensorflow as tf


class PlateauState(tf.Module):
    """The checkpointed state of the plateau rule; `update` runs on the host once per epoch."""

    def __init__(self, patience, max_drops, min_delta=0.0, name="plateau"):
        super().__init__(name=name)
        self.patience = int(patience)
        self.max_drops = int(max_drops)
        self.min_delta = float(min_delta)
        self.best_top1 = tf.Variable(-1.0, trainable=False, dtype=tf.float32, name="best_top1")
        self.bad_epochs = tf.Variable(0, trainable=False, dtype=tf.int64, name="bad_epochs")
        self.drops = tf.Variable(0, trainable=False, dtype=tf.int64, name="drops")

    def update(self, top1):
        """Records one epoch's validation top-1 (in [0, 1]); returns True if the rate drops now."""
        best = float(self.best_top1.numpy())
        bad = int(self.bad_epochs.numpy())
        drops = int(self.drops.numpy())
        if top1 > best + self.min_delta:
            best, bad = top1, 0
        else:
            bad += 1
        dropped = bad >= self.patience and drops < self.max_drops
        if dropped:
            drops, bad = drops + 1, 0
        self.best_top1.assign(best)
        self.bad_epochs.assign(bad)
        self.drops.assign(drops)
        return dropped


class AlexNetSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate at an optimizer step: linear warm-up, then one of three shapes.

    - "paper": `base * factor ** drops`, drops counted by a PlateauState;
    - "step": `base * factor ** (number of boundaries passed)`;
    - "cosine": `base * (1 + cos(pi * t)) / 2`, t going from 0 after warm-up to 1 at the end.

    Steps are the run's steps per epoch times its epochs: a run resumed with another global
    batch sets `offset` (training.progress.Tracker.schedule_offset), which is added to the
    optimizer's step so the schedule stays on its epochs. With `total_follows_offset` (a run
    whose end is given in steps, --train_steps) the end moves with it. The offset is 0 in a
    run that never changed its batch, and adding 0 changes no bit.
    """

    def __init__(
        self,
        kind,
        base_learning_rate,
        total_steps,
        warmup_steps=0,
        boundaries=(),
        decay_factor=0.1,
        plateau=None,
        total_follows_offset=False,
    ):
        if kind == "paper" and plateau is None:
            raise ValueError("the paper schedule needs a PlateauState")
        if kind not in ("paper", "step", "cosine"):
            raise ValueError(f"unknown schedule {kind!r}; choose paper, step or cosine")
        self.kind = kind
        self.base_learning_rate = float(base_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.boundaries = tuple(int(b) for b in boundaries)
        self.decay_factor = float(decay_factor)
        self.plateau = plateau
        self.total_follows_offset = bool(total_follows_offset)
        # Not a checkpointed value: each start sets it from the run's progress.
        self.offset = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="schedule_offset")

    def set_offset(self, offset):
        self.offset.assign(float(offset))

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + self.offset
        base = tf.constant(self.base_learning_rate, tf.float32)
        if self.kind == "paper":
            rate = base * self.decay_factor ** tf.cast(self.plateau.drops, tf.float32)
        elif self.kind == "step":
            passed = tf.reduce_sum(
                tf.cast(step >= tf.constant(self.boundaries or (2**62,), tf.float32), tf.float32)
            )
            rate = base * self.decay_factor**passed
        else:
            span = tf.constant(max(self.total_steps - self.warmup_steps, 1), tf.float32)
            if self.total_follows_offset:
                span = tf.maximum(span + self.offset, 1.0)
            progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            rate = base * 0.5 * (1.0 + tf.cos(math.pi * progress))
        if self.warmup_steps:
            # Step s trains with (s + 1) / warmup of the rate, so the first step is not wasted.
            rate *= tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return rate

    def get_config(self):
        return {
            "kind": self.kind,
            "base_learning_rate": self.base_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "boundaries": list(self.boundaries),
            "decay_factor": self.decay_factor,
        }
