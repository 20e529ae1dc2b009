"""Tests of alexnet_tf.data.order's arithmetic: shares, steps, positions (its streams: test_resume.py)."""

import pytest

from alexnet_tf.data import order


def test_shares_split_shards_between_pipelines_or_records_when_too_few():
    assert order.shares([7, 4, 6, 7], 2) == [13, 11]  # shards 0, 2 and 1, 3
    assert order.shares([5], 2) == [3, 2]  # every other record of the one shard
    assert order.shares([7, 4, 6, 7], 1) == [24]


def test_an_epoch_ends_with_the_smallest_shares_full_steps():
    assert order.training_steps_per_epoch([7, 4, 6, 7], 4, num_pipelines=2) == 11 // 2
    assert order.training_steps_per_epoch([7, 4, 6, 7], 4) == 24 // 4


def test_position_of_step_counts_images_of_the_epoch_it_is_in():
    counts = [7, 5, 5, 7]  # 6 steps of 4 per epoch
    assert order.position_of_step(0, counts, 4) == order.EpochPosition(0, 0, 1, 24)
    assert order.position_of_step(8, counts, 4) == order.EpochPosition(1, 8, 1, 24)
    position = order.position_of_step(3, counts, 4, num_pipelines=2)
    assert position == order.EpochPosition(0, 12, 2, 12) and position.epoch_images == 24
    assert order.epoch_start(2, counts, 4, 2) == order.EpochPosition(2, 0, 2, 12)


@pytest.mark.parametrize(
    "global_batch, pipelines, left",
    [(4, 1, 3), (8, 1, 1), (4, 2, 3), (6, 2, 2)],
)
def test_steps_left_deal_the_rest_of_the_epoch_to_the_new_layout(global_batch, pipelines, left):
    position = order.EpochPosition(epoch=0, images=12, pipelines=1, records=24)
    assert position.steps_left(global_batch, pipelines) == left
