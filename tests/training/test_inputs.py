"""Tests of alexnet_tf.training.inputs: what the trainer reads, and how much of it."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tiny_dataset import write_tiny_dataset

from alexnet_tf.config import TrainConfig
from alexnet_tf.training import inputs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), validation_records=16)


def _images(datasets):
    return sum(int(np.shape(labels)[0]) for d in datasets for _, labels in d)


@pytest.mark.parametrize("pipelines, replicas", [(1, 1), (1, 2), (2, 4)])
def test_eval_steps_counts_global_batches_whatever_the_replicas(dataset, pipelines, replicas):
    config = TrainConfig(data_dir=dataset, model_dir="/unused", batch_size=4, eval_steps=3)
    info = inputs.describe_data(config)
    input_fns = inputs.make_input_fns(config, info, seed=0)
    contexts = [tf.distribute.InputContext(pipelines, i, replicas) for i in range(pipelines)]
    # 3 global batches of 4, however they are split; the per-replica take() gave 12 / replicas.
    assert _images(input_fns.evaluation(context) for context in contexts) == 12
    assert _images([input_fns.evaluation()]) == 12


def test_pipeline_batches():
    assert inputs.pipeline_batches(5) == 5
    assert inputs.pipeline_batches(5, tf.distribute.InputContext(1, 0, 8)) == 40
    assert inputs.pipeline_batches(5, tf.distribute.InputContext(2, 1, 8)) == 20


def test_training_records_without_a_manifest_count_are_counted_once_then_cached(tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "data", train_records=6, validation_records=2)
    os.remove(os.path.join(data_dir, "manifest.json"))  # labels.txt still gives classes and offset
    config = TrainConfig(data_dir=data_dir, model_dir="/unused", batch_size=2)
    cache = str(tmp_path / "model" / inputs.RECORD_COUNTS_FILENAME)
    assert inputs.describe_data(config, count_cache=cache).train_examples == 6
    assert not os.path.exists(cache)  # only the chief writes it
    assert inputs.describe_data(config, count_cache=cache, write_count_cache=True).train_examples == 6
    with open(cache) as f:
        (entry,) = json.load(f).values()
    assert entry["records"] == 6 and [name for name, _, _ in entry["files"]] == [
        "train-00000-of-00002",
        "train-00001-of-00002",
    ]

    # Same name, size and mtime, garbage inside: the cached count is used, nothing is read.
    shard = os.path.join(data_dir, "train-00000-of-00002")
    stat = os.stat(shard)
    with open(shard, "r+b") as f:
        f.write(b"\xff" * stat.st_size)
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert inputs.describe_data(config, count_cache=cache).train_examples == 6
    # A changed mtime invalidates the entry: the recount reads the garbage, and names the shard.
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(tf.errors.InvalidArgumentError, match="train-00000-of-00002"):
        inputs.describe_data(config, count_cache=cache)
