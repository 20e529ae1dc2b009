"""Where a run stands: its step, its epochs and the images of the current epoch it trained on.

A checkpoint holds the global step, the completed epochs, the images of the current epoch
trained on, the training stream's position (`pipelines.EpochPosition`: whose order the epoch
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

from alexnet_tf.config import ConfigError
from alexnet_tf.data import pipelines
from alexnet_tf.weights.checkpointing import latest_checkpoint

# Checkpoint entries (training.step.build_state) beside `step` and `epoch`; checkpoints
# written before them resume with the fields inferred from the step (Tracker.resume).
PROGRESS_PARTS = ("epoch_images", "data_position", "layout", "data_size")


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
    """A run's place: `step` global steps, `epoch` epochs complete, `epoch_images` of the next trained on.

    `epoch_length` is the images that epoch holds, fixed when it starts (the data's pass, or
    --steps_per_epoch batches of the batch it started with), so that a resume with another
    batch keeps the same fraction of the epoch done.
    """

    step: int
    epoch: int
    epoch_images: int
    epoch_length: int
    data: pipelines.EpochPosition  # where the training stream continues


@dataclasses.dataclass(frozen=True)
class Stored:
    """What the newest checkpoint says of its run's progress (None: a part it does not hold)."""

    path: str
    step: int
    epoch: int
    epoch_images: Optional[tuple]  # (trained on, the epoch's length)
    data_position: Optional[tuple]  # (epoch, images, pipelines, records)
    layout: Optional[Layout]
    data_size: Optional[tuple] = None  # (training shards, records) when the epoch was drawn; (0, 0): none


def read_stored(checkpoint_dir):
    """The Stored progress of the newest checkpoint in `checkpoint_dir`, or None when there is none.

    Raises:
      ConfigError: checkpoint files without a complete newest checkpoint, or one that cannot be read.
    """
    path = latest_checkpoint(checkpoint_dir)
    if path is None:
        return None
    try:
        reader = tf.train.load_checkpoint(path)
        names = {name for name, _ in tf.train.list_variables(path)}

        def value(name):
            key = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
            return tuple(np.asarray(reader.get_tensor(key)).ravel().tolist()) if key in names else None

        values = {name: value(name) for name in ("step", "epoch", *PROGRESS_PARTS)}
    except (tf.errors.OpError, ValueError, IndexError, OSError) as e:  # IndexError: a truncated file
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot resume from {path}: {first_line}") from None
    if values["step"] is None or values["epoch"] is None:
        raise ConfigError(f"cannot resume from {path}: it holds no step and epoch (not a training run's)")
    layout = values["layout"]
    return Stored(
        path,
        int(values["step"][0]),
        int(values["epoch"][0]),
        values["epoch_images"],
        values["data_position"],
        Layout(*layout) if layout is not None else None,
        values["data_size"],
    )


class Tracker:
    """A run's progress arithmetic for one layout: epochs, steps left, the data position, the schedule.

    Args:
      layout: this run's Layout.
      steps_per_epoch: the loop's global steps per epoch (training.inputs.steps_per_epoch).
      shard_records: the training shards' record counts in name order, when the data is
        TFRecord shards read in the exact order (pipelines.make_dataset); None for other sources,
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
            self.data_steps_per_epoch = pipelines.training_steps_per_epoch(
                shard_records, layout.batch_size, layout.pipelines
            )
        else:
            self.data_steps_per_epoch = steps_per_epoch

    @property
    def data_size(self):
        """(training shards, records): what an epoch's order is drawn from; (0, 0) for other sources."""
        return (len(self.counts), sum(self.counts)) if self.counts is not None else (0, 0)

    # -- positions ----------------------------------------------------------------------------

    def epoch_start(self, epoch):
        """The data position of epoch `epoch`'s first image, in this layout's order."""
        if self.counts is not None:
            return pipelines.epoch_start(epoch, self.counts, self.layout.batch_size, self.layout.pipelines)
        # Other sources have no order to follow: an epoch is its batches' images, in one pipeline.
        return pipelines.EpochPosition(epoch, 0, 1, self.steps_per_epoch * self.layout.batch_size)

    def _starting(self, step, epoch, position):
        """The Progress of the loop's epoch `epoch` starting at `step`, the stream at `position`."""
        length = (
            position.epoch_images if self.epochs_are_passes else self.steps_per_epoch * self.layout.batch_size
        )
        return Progress(step, epoch, 0, length, position)

    def fresh(self):
        return self._starting(0, 0, self.epoch_start(0))

    def steps_left(self, progress):
        """Global steps of this layout left in the loop's current epoch."""
        if self.epochs_are_passes:
            if progress.data.epoch != progress.epoch:  # the pass is over: the epoch ends
                return 0
            return progress.data.steps_left(self.layout.batch_size, self.layout.pipelines)
        return max(progress.epoch_length - progress.epoch_images, 0) // self.layout.batch_size

    def advance(self, progress, steps):
        """`progress` after `steps` more global steps (that stay inside the loop's epoch)."""
        batch = self.layout.batch_size
        position = progress.data
        left = position.steps_left(batch, self.layout.pipelines)
        if steps < left:
            position = dataclasses.replace(position, images=position.images + steps * batch)
        else:  # the stream moves on to whole epochs of this layout (pipelines.make_dataset)
            epochs, in_epoch = divmod(steps - left, max(self.data_steps_per_epoch, 1))
            start = self.epoch_start(position.epoch + 1 + epochs)
            position = dataclasses.replace(start, images=in_epoch * batch)
        images = progress.epoch_images + steps * batch
        return dataclasses.replace(progress, step=progress.step + steps, epoch_images=images, data=position)

    def end_epoch(self, progress):
        """`progress` once the loop's epoch is complete (in epochs that are passes, so is the data's)."""
        position = progress.data
        if self.epochs_are_passes and position.epoch == progress.epoch:
            position = self.epoch_start(progress.epoch + 1)  # the rest of a pass, under a step, is left out
        return self._starting(progress.step, progress.epoch + 1, position)

    def schedule_offset(self, progress):
        """What the schedule adds to the optimizer step to stay on its epochs: 0 when the run never
        changed its layout (its epochs are whole multiples of steps_per_epoch steps)."""
        done = fractions.Fraction(progress.epoch_images, max(progress.epoch_length, 1))
        return float((progress.epoch + done) * self.steps_per_epoch - progress.step)

    def checkpoint_values(self, progress):
        """{checkpoint entry: value} of PROGRESS_PARTS (training.step.build_state's variables)."""
        d, layout = progress.data, self.layout
        return {
            "epoch_images": [progress.epoch_images, progress.epoch_length],
            "data_position": [d.epoch, d.images, d.pipelines, d.records],
            "layout": [layout.batch_size, layout.pipelines, layout.replicas],
            "data_size": list(self.data_size),
        }

    # -- resuming -----------------------------------------------------------------------------

    def resume(self, stored, model_dir):
        """The Progress a run resumed from `stored` starts at, and a line saying what changed ('' if nothing).

        Raises:
          ConfigError: the training shards changed since a checkpoint written inside an epoch
            (the rest of that epoch's order cannot be told from its start).
        """
        if stored.data_position is None or stored.epoch_images is None:
            # Written before progress was kept in images: the step is all there is; the run is
            # taken to have trained with this layout, as earlier versions resumed it.
            in_epoch = max(stored.step - stored.epoch * self.steps_per_epoch, 0)
            batch, streams = self.layout.batch_size, self.layout.pipelines
            if self.epochs_are_passes:
                start = self._starting(stored.step, stored.epoch, self.epoch_start(stored.epoch))
                position = dataclasses.replace(start.data, images=min(in_epoch * batch, start.epoch_length))
            else:  # the stream ran on over the loop's epochs, from step 0
                start = self._starting(stored.step, stored.epoch, self.epoch_start(0))
                position = pipelines.position_of_step(stored.step, self.counts, batch, streams)
            images = min(in_epoch * batch, start.epoch_length)
            logging.warning(
                "%s was written before runs kept their progress in images: taking it to have trained "
                "with --batch_size=%d and %d input pipeline(s) (%d images of epoch %d).",
                stored.path,
                batch,
                streams,
                images,
                stored.epoch + 1,
            )
            return dataclasses.replace(start, epoch_images=images, data=position), ""
        position = pipelines.EpochPosition(*stored.data_position)
        trained, length = stored.epoch_images
        progress = Progress(stored.step, stored.epoch, trained, length, position)
        notes = []
        if stored.data_size is not None and tuple(stored.data_size) != self.data_size:
            (shards, records), (now_shards, now_records) = stored.data_size, self.data_size
            sizes = f"{shards} shards of {records} records then, {now_shards} of {now_records} now"
            if position.images:
                raise ConfigError(
                    f"the training shards changed since the checkpoint of {model_dir} inside epoch "
                    f"{position.epoch + 1} ({sizes}): the rest of that epoch's order cannot be told from "
                    "its start. Re-run with the data the run started with to finish the epoch, or start a "
                    f"new --model_dir with --init_from={model_dir}"
                )
            notes.append(f"the training data changed ({sizes}); epoch {position.epoch + 1} on reads it")
        changed = self.layout.describe_change(stored.layout) if stored.layout else ""
        if changed and trained:
            left = self.steps_left(progress)
            notes.append(
                f"{changed}: epoch {progress.epoch + 1} continues at its next unseen images ({trained} of "
                f"{length} trained on, {left} steps of {self.layout.batch_size} left in it)"
            )
        elif changed:
            notes.append(f"{changed}: epoch {progress.epoch + 1} starts")
        if not notes:
            return progress, ""
        return (
            progress,
            f"resuming {model_dir} with {'; '.join(notes)}; not bit-identical to an uninterrupted run",
        )
