"""Tests of alexnet_tf.inputs: what the trainer reads, and how much of it."""

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import inputs
from alexnet_tf.config import TrainConfig
from tiny_dataset import write_tiny_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), validation_records=16)


def _images(datasets):
    return sum(int(np.shape(labels)[0]) for d in datasets for _, labels in d)


@pytest.mark.parametrize("pipelines, replicas", [(1, 1), (1, 2), (2, 4)])
def test_eval_steps_counts_global_batches_whatever_the_replicas(dataset, pipelines, replicas):
    config = TrainConfig(data_dir=dataset, model_dir="/unused", batch_size=4, eval_steps=3)
    info = inputs.describe_data(config, dataset)
    input_fns = inputs.make_input_fns(config, info, seed=0)
    contexts = [tf.distribute.InputContext(pipelines, i, replicas) for i in range(pipelines)]
    # 3 global batches of 4, however they are split; the per-replica take() gave 12 / replicas.
    assert _images(input_fns.evaluation(context) for context in contexts) == 12
    assert _images([input_fns.evaluation()]) == 12


def test_pipeline_batches():
    assert inputs.pipeline_batches(5) == 5
    assert inputs.pipeline_batches(5, tf.distribute.InputContext(1, 0, 8)) == 40
    assert inputs.pipeline_batches(5, tf.distribute.InputContext(2, 1, 8)) == 20
