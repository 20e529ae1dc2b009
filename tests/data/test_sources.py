"""Tests of alexnet_tf.data.sources: every source answers the same members, and a run trains on each.

A whole training run on TFRecord shards is tests/test_train.py's (`trained`); the runs here are
the other kinds'.
"""

import os

from conftest import run_command
import numpy as np
import pytest
from tfrecord_fixtures import prepare_tfds_imagenet
from tiny_dataset import write_tiny_dataset

from alexnet_tf.config import ConfigError, TrainConfig
from alexnet_tf.data import sources
from alexnet_tf.data.pipelines import PixelSettings
from alexnet_tf.training import inputs
from alexnet_tf.weights.checkpointing import CHECKPOINT_SUBDIR


def _public(cls):
    return {name for name in dir(cls) if not name.startswith("_")}


def test_every_source_has_the_same_members():
    members = _public(sources.TFRecordSource)
    assert {"name", "describe", "training_dataset", "evaluation_dataset", "resumes_exactly"} <= members
    assert _public(sources.DataSource) == members - {"name"}  # each source names itself
    for name, source in sources.SOURCES.items():
        assert source.name == name
        assert _public(source) == members, name
        for method in ("describe", "training_dataset", "evaluation_dataset"):
            assert getattr(source, method) is not getattr(sources.DataSource, method), (name, method)
    assert sources.TFRecordSource().resumes_exactly and sources.SyntheticSource().resumes_exactly
    assert not sources.TFDSSource().resumes_exactly


def test_a_source_is_named_by_its_flag_value_and_checks_what_the_trainer_asks_of_it():
    assert isinstance(sources.source_named("tfds", data_dir="/d"), sources.TFDSSource)
    with pytest.raises(ConfigError, match="data_source='csv'; choose one of tfrecord, tfds, synthetic"):
        sources.source_named("csv")
    assert isinstance(inputs.data_source(TrainConfig(data_source="synthetic")), sources.SyntheticSource)
    with pytest.raises(ConfigError, match="--data_dir is required"):
        inputs.data_source(TrainConfig(data_source="tfds"))


@pytest.fixture(scope="module")
def tfrecord_dir(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), train_records=8, validation_records=4)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """imagenet2012 prepared by tfds's own builder (tfrecord_fixtures.prepare_tfds_imagenet)."""
    pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("importlib_resources")
    return prepare_tfds_imagenet(tmp_path_factory.mktemp("tfds"))


def _data_dir(kind, request):
    fixture = {"tfrecord": "tfrecord_dir", "tfds": "tfds_dir"}.get(kind)
    return request.getfixturevalue(fixture) if fixture else ""


@pytest.mark.parametrize("kind", list(sources.SOURCES))
def test_each_source_feeds_the_trainers_input_functions(kind, request):
    config = TrainConfig(data_source=kind, data_dir=_data_dir(kind, request), batch_size=2, image_size=96)
    info = inputs.describe_data(config)
    assert info.source == kind and info.train_examples > 0
    input_fns = inputs.make_input_fns(config, info, seed=0)
    images, labels = next(iter(input_fns.train()))
    if kind == "synthetic":  # made finished, once
        assert images.shape == (2, 96, 96, 3)
    else:  # uint8 crops the train step finishes
        assert images["pixels"].dtype == np.uint8 and images["pixels"].shape == (2, 96, 96, 3)
    assert labels.shape == (2,) and 0 <= int(min(labels)) and int(max(labels)) < info.num_classes
    for ten_crop, shape in ((False, (2, 96, 96, 3)), (True, (2, 10, 96, 96, 3))):
        images, labels = next(iter(input_fns.evaluation(ten_crop=ten_crop)))
        assert images.shape == shape and images.dtype == np.float32
    # The same source, built from plain fields, reads the same evaluation batches.
    source = sources.source_named(kind, data_dir=config.data_dir, pixels=PixelSettings(image_size=96))
    again, _ = next(iter(source.evaluation_dataset(2, info=info)))
    first, _ = next(iter(input_fns.evaluation()))
    np.testing.assert_array_equal(again, first)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tfds", "synthetic"])
def test_a_training_run_reads_each_source(kind, request, tmp_path):
    data_dir = _data_dir(kind, request)
    result = run_command(
        [
            "-m",
            "alexnet_tf.train",
            f"--data_source={kind}",
            *([f"--data_dir={data_dir}"] if data_dir else ["--num_classes=4"]),
            f"--model_dir={tmp_path / 'run'}",
            "--variant=one_weird_trick",
            "--image_size=95",
            "--batch_size=2",
            "--epochs=1",
            "--steps_per_epoch=2",
            "--eval_steps=1",
            "--noexport",
            "--seed=0",
        ],
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.exists(tmp_path / "run" / CHECKPOINT_SUBDIR / "model_spec.json")
