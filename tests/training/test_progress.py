"""training.progress: a run's place in images, and what a resume with another layout continues from."""

import os

import pytest
import tensorflow as tf

from alexnet_tf.config import ConfigError
from alexnet_tf.data import order
from alexnet_tf.training.progress import Layout, Stored, Tracker, read_stored
from alexnet_tf.weights.checkpointing import latest_checkpoint

COUNTS = [7, 5, 5, 7]  # 24 records in 4 shards


def _stored(step, epoch, images, position, layout, data_size=(4, 24)):
    return Stored("ckpt-x", step, epoch, images, position, layout, data_size)


def test_a_run_that_never_changes_its_layout_has_a_zero_schedule_offset_and_whole_epochs():
    tracker = Tracker(Layout(4, 2, 2), 6, COUNTS)
    progress = tracker.fresh()
    assert (progress.data.pipelines, progress.data.records) == (2, 12)  # 6 steps of 2 per pipeline
    assert tracker.steps_left(progress) == 6
    progress = tracker.advance(progress, 2)
    assert (progress.step, progress.epoch_images, progress.data.images) == (2, 8, 8)
    assert tracker.steps_left(progress) == 4 and tracker.schedule_offset(progress) == 0.0
    progress = tracker.advance(progress, 4)
    assert tracker.steps_left(progress) == 0  # the pass is over
    progress = tracker.end_epoch(progress)
    assert (progress.epoch, progress.epoch_images, progress.data.epoch, progress.data.images) == (1, 0, 1, 0)
    assert tracker.schedule_offset(progress) == 0.0


def test_fewer_workers_continue_the_epoch_at_its_unseen_images_and_the_schedule_stays_on_its_epochs():
    stored = _stored(2, 0, (8, 24), (0, 8, 2, 12), Layout(4, 2, 2))
    tracker = Tracker(Layout(4, 1, 1), 6, COUNTS)
    progress, message = tracker.resume(stored, "/runs/x")
    assert "1 worker input pipeline(s) (was 2), 1 replica(s) (was 2)" in message
    assert "epoch 1 continues at its next unseen images (8 of 24 trained on, 4 steps of 4 left" in message
    assert tracker.steps_left(progress) == 4
    assert tracker.schedule_offset(progress) == 0.0  # same batch: 8 images are 2 steps either way
    progress = tracker.end_epoch(tracker.advance(progress, 4))
    assert (progress.step, progress.epoch, progress.data.pipelines, progress.data.records) == (6, 1, 1, 24)


def test_a_bigger_batch_counts_the_schedule_in_its_own_steps():
    stored = _stored(2, 0, (8, 24), (0, 8, 1, 24), Layout(4, 1, 1))
    tracker = Tracker(Layout(8, 1, 1), 3, COUNTS)
    progress, message = tracker.resume(stored, "/runs/x")
    assert "--batch_size=8 (was 4)" in message and tracker.steps_left(progress) == 2
    # 8 of 24 images are a third of the epoch: step 1 of 3 at the new batch, where step 2 is.
    assert tracker.schedule_offset(progress) == -1.0
    progress = tracker.end_epoch(tracker.advance(progress, 2))
    assert tracker.schedule_offset(progress) == 3 * 1 - 4  # epoch 1 starts at its first step


def test_a_checkpoint_without_progress_is_taken_to_have_trained_with_this_layout():
    tracker = Tracker(Layout(4, 1, 1), 6, COUNTS)
    progress, message = tracker.resume(_stored(8, 1, None, None, None), "/runs/x")
    assert message == ""
    assert (progress.epoch, progress.epoch_images, progress.data.images, progress.data.epoch) == (1, 8, 8, 1)
    # An old run that --train_steps stopped inside an epoch counted it complete: start the next.
    progress, _ = tracker.resume(_stored(3, 1, None, None, None), "/runs/x")
    assert (progress.epoch, progress.epoch_images) == (1, 0)


def test_changed_training_data_is_refused_inside_an_epoch_and_named_at_its_start():
    # 16 more records since the checkpoint, 8 images into epoch 1: its order cannot go on.
    stored = _stored(2, 0, (8, 24), (0, 8, 1, 24), Layout(4, 1, 1), data_size=(3, 8))
    with pytest.raises(
        ConfigError, match=r"changed since the checkpoint of /runs/x inside epoch 1 \(3 shards of 8"
    ):
        Tracker(Layout(4, 1, 1), 6, COUNTS).resume(stored, "/runs/x")
    at_start = _stored(6, 1, (0, 24), (1, 0, 1, 24), Layout(4, 1, 1), data_size=(3, 8))
    progress, message = Tracker(Layout(4, 1, 1), 6, COUNTS).resume(at_start, "/runs/x")
    assert "the training data changed (3 shards of 8 records then, 4 of 24 now)" in message
    assert progress.epoch == 1


def test_steps_per_epoch_epochs_keep_their_fraction_done_across_a_batch_change():
    # TFRecords with --steps_per_epoch=4: an epoch is 4 steps of the batch it started with.
    before = Tracker(Layout(4, 1, 1), 4, COUNTS, epochs_are_passes=False)
    progress = before.advance(before.fresh(), 2)
    assert (progress.epoch_images, progress.epoch_length) == (8, 16)
    values = before.checkpoint_values(progress)
    stored = _stored(2, 0, tuple(values["epoch_images"]), tuple(values["data_position"]), Layout(4, 1, 1))
    after = Tracker(Layout(8, 1, 1), 4, COUNTS, epochs_are_passes=False)
    resumed, _ = after.resume(stored, "/runs/x")
    assert after.steps_left(resumed) == 1  # the 8 images left of the epoch's 16
    assert after.schedule_offset(resumed) == 0.0  # half an epoch is step 2 of 4 either way


def test_checkpoint_files_without_a_complete_newest_checkpoint_are_refused(tmp_path):
    """A trainer that took these for "no run here" started over and deleted the good checkpoints."""
    directory = str(tmp_path)
    assert latest_checkpoint(directory) is None  # empty: a fresh run
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(step=tf.Variable(1)), directory, max_to_keep=3)
    manager.save(checkpoint_number=4)
    manager.save(checkpoint_number=7)
    assert latest_checkpoint(directory).endswith("ckpt-7")
    os.rename(os.path.join(directory, "ckpt-7.index"), os.path.join(directory, "moved"))
    with pytest.raises(
        ConfigError, match=r"the newest checkpoint, ckpt-7, has no ckpt-7.index \(complete: ckpt-4\)"
    ):
        read_stored(directory)
    os.rename(os.path.join(directory, "moved"), os.path.join(directory, "ckpt-7.index"))
    os.remove(os.path.join(directory, "checkpoint"))
    with pytest.raises(ConfigError, match="'checkpoint' state file is missing beside ckpt-4, ckpt-7"):
        latest_checkpoint(directory)
    # A first save killed before its index: no complete checkpoint, a fresh start as before.
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "ckpt-1.data-00000-of-00001").write_bytes(b"x")
    assert latest_checkpoint(str(partial)) is None


def test_other_sources_count_an_epoch_in_batches_of_the_current_run():
    tracker = Tracker(Layout(32, 1, 1), 10)
    progress, _ = tracker.resume(
        _stored(5, 0, (80, 160), (0, 80, 1, 160), Layout(16, 1, 1), (0, 0)), "/runs/x"
    )
    assert tracker.steps_left(progress) == (160 - 80) // 32
    assert order.EpochPosition(0, 80, 1, 160).steps_left(32, 2) == 2  # two pipelines of 16 each
