"""training.progress: a run's place in images, and what a resume with another layout continues from."""

import pytest

from alexnet_tf import data
from alexnet_tf.config import ConfigError
from alexnet_tf.training.progress import Layout, Stored, Tracker

COUNTS = [7, 5, 5, 7]  # 24 records in 4 shards


def _stored(step, epoch, images, position, layout):
    return Stored("ckpt-x", step, epoch, images, position, layout)


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
    stored = _stored(2, 0, 8, (0, 8, 2, 12), Layout(4, 2, 2))
    tracker = Tracker(Layout(4, 1, 1), 6, COUNTS)
    progress, message = tracker.resume(stored, "/runs/x")
    assert "1 worker input pipeline(s) (was 2), 1 replica(s) (was 2)" in message
    assert "epoch 1 continues at its next unseen images (8 of 24 trained on, 4 steps of 4 left" in message
    assert tracker.steps_left(progress) == 4
    assert tracker.schedule_offset(progress) == 0.0  # same batch: 8 images are 2 steps either way
    progress = tracker.end_epoch(tracker.advance(progress, 4))
    assert (progress.step, progress.epoch, progress.data.pipelines, progress.data.records) == (6, 1, 1, 24)


def test_a_bigger_batch_counts_the_schedule_in_its_own_steps():
    stored = _stored(2, 0, 8, (0, 8, 1, 24), Layout(4, 1, 1))
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


def test_an_epoch_drawn_from_more_records_than_the_shards_now_hold_is_refused():
    stored = _stored(2, 0, 8, (0, 8, 1, 40), Layout(4, 1, 1))
    with pytest.raises(
        ConfigError, match="drawn from 40 records per input pipeline, but the training shards now hold 24"
    ):
        Tracker(Layout(4, 1, 1), 6, COUNTS).resume(stored, "/runs/x")


def test_other_sources_count_an_epoch_in_batches_of_the_current_run():
    tracker = Tracker(Layout(32, 1, 1), 10)
    progress, _ = tracker.resume(_stored(5, 0, 5 * 16, (0, 80, 1, 160), Layout(16, 1, 1)), "/runs/x")
    assert tracker.steps_left(progress) == (160 - 80) // 32
    assert data.EpochPosition(0, 80, 1, 160).steps_left(32, 2) == 2  # two pipelines of 16 each
