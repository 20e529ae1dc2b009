"""Where a run stands: its step, its epochs and the images of the current epoch it trained on.

A checkpoint holds the global step, the completed epochs, the images of the current epoch
trained on, the training stream's position (`data.EpochPosition`: whose order the epoch
follows and how far into it the run is) and the layout of the run that wrote it (global
batch, input pipelines, replicas). So a run resumed with the same layout continues bit for
bit, and one resumed with another global batch or another number of workers continues the
same epoch at its next unseen images: epochs stay passes over the data, and the
learning-rate schedule stays on its epochs (`Tracker.schedule_offset`). `Tracker.resume`
refuses, before anything is written, what cannot be honoured.
"""

import dataclasses
import fractions
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf

from alexnet_tf import data
from alexnet_tf.config import ConfigError

# Checkpoint entries (training.step.build_state) beside `step` and `epoch`; checkpoints
# written before them resume with the fields inferred from the step (Tracker.resume).
PROGRESS_PARTS = ("epoch_images", "data_position", "layout")


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a run splits its global batch: the batch, its input pipelines (workers) and replicas."""

    batch_size: int
    pipelines: int
    replicas: int

    def describe_change(self, old):
        """'--batch_size=64 (was 32), 1 input pipeline(s) (was 2)' for the fields that differ, or ''."""
        changes = []
        if self.batch_size != old.batch_size:
            changes.append(f"--batch_size={self.batch_size} (was {old.batch_size})")
        if self.pipelines != old.pipelines:
            changes.append(f"{self.pipelines} worker input pipeline(s) (was {old.pipelines})")
        if self.replicas != old.replicas:
            changes.append(f"{self.replicas} replica(s) (was {old.replicas})")
        return ", ".join(changes)


@dataclasses.dataclass(frozen=True)
class Progress:
    """A run's place: `step` global steps, `epoch` epochs completed, `epoch_images` of the next trained on."""

    step: int
    epoch: int
    epoch_images: int
    data: data.EpochPosition  # where the training stream continues


@dataclasses.dataclass(frozen=True)
class Stored:
    """What the newest checkpoint says of its run's progress (None: a part it does not hold)."""

    path: str
    step: int
    epoch: int
    epoch_images: Optional[int]
    data_position: Optional[tuple]  # (epoch, images, pipelines, records)
    layout: Optional[Layout]


def read_stored(checkpoint_dir):
    """The Stored progress of the newest checkpoint in `checkpoint_dir`, or None when there is none."""
    path = tf.train.latest_checkpoint(checkpoint_dir)
    if path is None:
        return None
    try:
        reader = tf.train.load_checkpoint(path)
        names = {name for name, _ in tf.train.list_variables(path)}
    except (tf.errors.OpError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot resume from {path}: {first_line}") from None

    def value(name):
        key = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
        return np.asarray(reader.get_tensor(key)).tolist() if key in names else None

    if value("step") is None or value("epoch") is None:
        raise ConfigError(f"cannot resume from {path}: it holds no step and epoch (not a training run's)")
    layout = value("layout")
    position = value("data_position")
    return Stored(
        path,
        int(value("step")),
        int(value("epoch")),
        value("epoch_images"),
        tuple(int(v) for v in position) if position is not None else None,
        Layout(*(int(v) for v in layout)) if layout is not None else None,
    )


class Tracker:
    """A run's progress arithmetic for one layout: epochs, steps left, the data position, the schedule.

    Args:
      layout: this run's Layout.
      steps_per_epoch: the loop's global steps per epoch (training.inputs.steps_per_epoch).
      shard_records: the training shards' record counts in name order, when the data is
        TFRecord shards read in the exact order (data.make_dataset); None for other sources,
        whose epochs are `steps_per_epoch` batches.
      epochs_are_passes: the loop's epochs are the data's passes (not so with TFRecord shards
        and --steps_per_epoch: the loop's epochs are then that many steps of a continuing stream).
    """

    def __init__(self, layout, steps_per_epoch, shard_records=None, epochs_are_passes=True):
        self.layout = layout
        self.steps_per_epoch = steps_per_epoch
        self.counts = shard_records
        self.epochs_are_passes = epochs_are_passes
        if shard_records is not None:
            self.data_steps_per_epoch = data.training_steps_per_epoch(
                shard_records, layout.batch_size, layout.pipelines
            )
        else:
            self.data_steps_per_epoch = steps_per_epoch

    # -- positions ----------------------------------------------------------------------------

    def epoch_start(self, epoch):
        """The data position of epoch `epoch`'s first image, in this layout's order."""
        if self.counts is not None:
            return data.epoch_start(epoch, self.counts, self.layout.batch_size, self.layout.pipelines)
        # Other sources have no order to follow: an epoch is its batches' images, in one pipeline.
        return data.EpochPosition(epoch, 0, 1, self.steps_per_epoch * self.layout.batch_size)

    def fresh(self):
        return Progress(0, 0, 0, self.epoch_start(0))

    def steps_left(self, progress):
        """Global steps of this layout left in the loop's current epoch."""
        if self.epochs_are_passes:
            if progress.data.epoch != progress.epoch:  # the pass is over: the epoch ends
                return 0
            return progress.data.steps_left(self.layout.batch_size, self.layout.pipelines)
        epoch_length = self.steps_per_epoch * self.layout.batch_size
        return max(epoch_length - progress.epoch_images, 0) // self.layout.batch_size

    def advance(self, progress, steps):
        """`progress` after `steps` more global steps (that stay inside the loop's epoch)."""
        batch = self.layout.batch_size
        position = progress.data
        left = position.steps_left(batch, self.layout.pipelines)
        if steps < left:
            position = dataclasses.replace(position, images=position.images + steps * batch)
        else:  # the stream moves on to whole epochs of this layout (data.make_dataset)
            epochs, in_epoch = divmod(steps - left, max(self.data_steps_per_epoch, 1))
            start = self.epoch_start(position.epoch + 1 + epochs)
            position = dataclasses.replace(start, images=in_epoch * batch)
        images = progress.epoch_images + steps * batch
        return Progress(progress.step + steps, progress.epoch, images, position)

    def end_epoch(self, progress):
        """`progress` once the loop's epoch is complete (in epochs that are passes, so is the data's)."""
        position = progress.data
        if self.epochs_are_passes and position.epoch == progress.epoch:
            position = self.epoch_start(progress.epoch + 1)  # the rest of a pass, under a step, is left out
        return Progress(progress.step, progress.epoch + 1, 0, position)

    def schedule_offset(self, progress):
        """What the schedule adds to the optimizer step to stay on its epochs: 0 when the run never
        changed its layout (its epochs are whole multiples of steps_per_epoch steps)."""
        if self.epochs_are_passes:
            done = fractions.Fraction(progress.epoch_images, max(progress.data.epoch_images, 1))
        else:
            done = fractions.Fraction(progress.epoch_images, self.steps_per_epoch * self.layout.batch_size)
        return float((progress.epoch + done) * self.steps_per_epoch - progress.step)

    # -- resuming -----------------------------------------------------------------------------

    def resume(self, stored, model_dir):
        """The Progress a run resumed from `stored` starts at, and a line saying what changed ('' if nothing).

        Raises:
          ConfigError: the checkpoint's epoch was drawn from more records per pipeline than the
            training shards now hold (the data changed under the run).
        """
        if stored.data_position is None or stored.epoch_images is None:
            # Written before progress was kept in images: the step is all there is; the run is
            # taken to have trained with this layout, as earlier versions resumed it.
            in_epoch = max(stored.step - stored.epoch * self.steps_per_epoch, 0)
            images = in_epoch * self.layout.batch_size
            start = self.epoch_start(stored.epoch)
            position = dataclasses.replace(start, images=min(images, start.epoch_images))
            logging.warning(
                "%s was written before runs kept their progress in images: taking it to have trained "
                "with --batch_size=%d and %d input pipeline(s) (%d images of epoch %d).",
                stored.path,
                self.layout.batch_size,
                self.layout.pipelines,
                images,
                stored.epoch + 1,
            )
            return Progress(stored.step, stored.epoch, images, position), ""
        position = data.EpochPosition(*stored.data_position)
        if self.counts is not None and position.images:
            available = min(data.shares(self.counts, position.pipelines))
            if position.records > available:
                raise ConfigError(
                    f"{model_dir}: its checkpoint is inside epoch {position.epoch + 1}, whose order was "
                    f"drawn from {position.records} records per input pipeline, but the training shards "
                    f"now hold {available}: re-run with the data the run started with, or use a new "
                    "--model_dir"
                )
        progress = Progress(stored.step, stored.epoch, int(stored.epoch_images), position)
        changed = self.layout.describe_change(stored.layout) if stored.layout else ""
        if not changed:
            return progress, ""
        of = self.steps_per_epoch * self.layout.batch_size
        if self.epochs_are_passes:
            of = position.epoch_images
        if progress.epoch_images:
            left = self.steps_left(progress)
            where = (
                f"epoch {progress.epoch + 1} continues at its next unseen images ({progress.epoch_images} "
                f"of {of} trained on, {left} steps of {self.layout.batch_size} left in it)"
            )
        else:
            where = f"epoch {progress.epoch + 1} starts"
        message = f"resuming {model_dir} with {changed}: {where}; not bit-identical to an uninterrupted run"
        return progress, message
