"""Tests of alexnet_tf.data.pipelines on real TFRecord shards of real JPEGs, tfds and synthetic batches."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tfrecord_fixtures import make_example, natural_image, prepare_tfds_imagenet, write_fake_tfrecords

from alexnet_tf.data import demo, pipelines, preprocessing, schema
from alexnet_tf.data.pipelines import PixelSettings
from alexnet_tf.data.records import files_shorter_side

MEAN = np.asarray(preprocessing.MEAN_RGB, np.float32)
# Shorter side 256 (the converter's output, both orientations) and other sizes (rescaled).
SHAPES = [(256, 300), (320, 256), (256, 256), (180, 240), (400, 300)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two 0-based shards with manifest.json and labels.txt; returns (directory, records)."""
    directory = tmp_path_factory.mktemp("shards")
    records = write_fake_tfrecords(
        directory, num_records=20, num_shards=2, num_classes=5, image_shapes=SHAPES
    )
    return str(directory), records


def _pattern(directory):
    return os.path.join(directory, "train-*")


def test_training_batches(shards):
    directory, records = shards
    dataset = pipelines.training_dataset(_pattern(directory), 8, shuffle_buffer_size=16, seed=0)
    assert dataset.element_spec[0].shape == (8, 224, 224, 3)
    labels = []
    for images, batch_labels in dataset.take(6):  # repeats past the 20 records
        assert images.dtype == tf.float32 and batch_labels.dtype == tf.int32
        # [0, 255] minus the mean, plus lighting (|eigvec @ (alpha * eigval)| < 30 at 5 sigma).
        assert -154.0 < float(tf.reduce_min(images)) and float(tf.reduce_max(images)) < 182.0
        assert abs(float(tf.reduce_mean(images))) < 60.0
        labels.extend(batch_labels.numpy())
    assert set(labels) <= {r.label for r in records} and len(set(labels)) > 1


def test_unfinished_training_batches_finish_to_the_same_images(shards):
    directory, _ = shards
    for augment in ("paper", "inception"):
        args = dict(seed=3, pixels=PixelSettings(augment=augment))
        finished = pipelines.training_dataset(_pattern(directory), 8, **args).take(3)
        unfinished = pipelines.training_dataset(_pattern(directory), 8, finish_on_host=False, **args).take(3)
        for (images, labels), (batch, raw_labels) in zip(finished, unfinished):
            assert batch["pixels"].dtype == tf.uint8 and batch["pixels"].shape == (8, 224, 224, 3)
            assert batch["flip"].shape == (8,) and batch["offset"].shape == (8, 3)
            np.testing.assert_array_equal(preprocessing.finish_batch(batch), images)
            np.testing.assert_array_equal(preprocessing.finished(batch), images)
            np.testing.assert_array_equal(raw_labels, labels)


def test_converter_output_is_cropped_unchecked_and_alike(tmp_path):
    """The converter's shards skip the per-image checks of the crop, with the checked path's crops."""
    converted = demo.build_demo_dataset(
        str(tmp_path / "cache"), num_classes=3, train_per_class=4, validation_per_class=1
    )
    files = sorted(tf.io.gfile.glob(os.path.join(converted, "train-*")))
    assert files_shorter_side(files) == 256
    plain = tmp_path / "plain"  # the same records with no manifest: every image is checked
    plain.mkdir()
    for f in files:
        tf.io.gfile.copy(f, str(plain / os.path.basename(f)))
    plain_files = sorted(tf.io.gfile.glob(str(plain / "train-*")))
    assert files_shorter_side(plain_files) is None
    assert files_shorter_side(files + plain_files) is None
    args = dict(seed=1, label_offset=0)
    batches = [list(pipelines.training_dataset(p, 4, **args).take(4)) for p in (files, plain_files)]
    for (a, la), (b, lb) in zip(*batches):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)

    manifest = schema.read_manifest(converted)
    assert schema.converted_shorter_side(manifest, files) == 256
    assert schema.converted_shorter_side({**manifest, "complete": False}, files) is None
    kept_sizes = {**manifest, "settings": {**manifest["settings"], "resize_shorter": 0}}
    assert schema.converted_shorter_side(kept_sizes, files) is None
    assert schema.converted_shorter_side(manifest, files + ["elsewhere/train-99999-of-99999"]) is None


def test_inception_augmentation_batches(shards):
    directory, _ = shards
    images, labels = next(
        iter(pipelines.training_dataset(_pattern(directory), 4, pixels=PixelSettings(augment="inception")))
    )
    assert images.shape == (4, 224, 224, 3) and images.dtype == tf.float32
    assert labels.shape == (4,)


def test_evaluation_matches_the_serving_preprocessing_exactly(shards):
    directory, records = shards
    dataset = pipelines.evaluation_dataset(os.path.join(directory, "train-00000-*"), 4)
    images, labels = (np.concatenate(parts) for parts in zip(*dataset))
    shard = [r for r in records if r.shard.endswith("train-00000-of-00002")]
    assert labels.tolist() == [r.label for r in shard]
    expected = np.stack(
        [preprocessing.preprocess_for_eval(preprocessing.decode_image(r.jpeg)) for r in shard]
    )
    np.testing.assert_array_equal(images, expected)


def test_ten_crop_dataset(shards):
    directory, records = shards
    dataset = pipelines.evaluation_dataset(_pattern(directory), 3, ten_crop=True)
    batches = list(dataset)
    assert batches[0][0].shape == (3, 10, 224, 224, 3) and batches[0][0].dtype == tf.float32
    assert sum(int(b[1].shape[0]) for b in batches) == len(records)
    first = [r for r in records if r.index_in_shard == 0][0]
    matches = [
        np.array_equal(batches[0][0][i], preprocessing.ten_crop(preprocessing.decode_image(first.jpeg)))
        for i in range(3)
    ]
    assert any(matches)


def test_png_records_decode_through_the_general_path(tmp_path):
    image = natural_image(np.random.default_rng(10), 256, 280)
    with tf.io.TFRecordWriter(str(tmp_path / "train-00000-of-00001")) as writer:
        writer.write(
            make_example(tf.io.encode_png(image).numpy(), 3, 256, 280, "n0", "a", "x.png").SerializeToString()
        )
    evaluated, labels = next(iter(pipelines.evaluation_dataset(str(tmp_path / "train-*"), 1, label_offset=0)))
    np.testing.assert_array_equal(evaluated[0], preprocessing.preprocess_for_eval(image))
    trained, _ = next(
        iter(pipelines.training_dataset(str(tmp_path / "train-*"), 1, label_offset=0, shuffle_buffer_size=2))
    )
    assert trained.shape == (1, 224, 224, 3) and labels.numpy().tolist() == [3]


def _fingerprints(dataset):
    return [hash(image.tobytes()) for images, _ in dataset for image in images.numpy()]


@pytest.mark.parametrize("num_shards", [4, 1])  # 4: files split per pipeline; 1: records split
def test_input_context_gives_disjoint_per_worker_data(tmp_path, num_shards):
    write_fake_tfrecords(tmp_path, num_records=12, num_shards=num_shards, num_classes=3)
    everything = _fingerprints(pipelines.evaluation_dataset(str(tmp_path / "train-*"), 4))
    per_worker = []
    for worker in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2
        )
        dataset = pipelines.evaluation_dataset(str(tmp_path / "train-*"), 4, input_context=context)
        assert dataset.element_spec[0].shape[0] in (None, 2)  # per-replica batch of the global 4
        assert all(images.shape[0] <= 2 for images, _ in dataset)
        per_worker.append(_fingerprints(dataset))
    assert not set(per_worker[0]) & set(per_worker[1])
    assert sorted(per_worker[0] + per_worker[1]) == sorted(everything)


@pytest.mark.parametrize("num_shards", [4, 1])
def test_training_input_context_gives_disjoint_per_worker_data(tmp_path, num_shards):
    # image_size == resize_shorter makes the crop the whole square; only the flip is random.
    write_fake_tfrecords(
        tmp_path, num_records=12, num_shards=num_shards, num_classes=3, image_shapes=[(256, 256)]
    )
    args = dict(
        pixels=PixelSettings(image_size=256, pca_std=0.0),
        repeat=False,
        drop_remainder=False,
        shuffle_buffer_size=4,
    )

    def fingerprints(dataset):
        images = [image for batch, _ in dataset for image in batch.numpy()]
        return [hash(min(image.tobytes(), image[:, ::-1].tobytes())) for image in images]

    everything = fingerprints(pipelines.training_dataset(str(tmp_path / "train-*"), 4, **args))
    per_worker = []
    for worker in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2
        )
        per_worker.append(
            fingerprints(
                pipelines.training_dataset(
                    str(tmp_path / "train-*"), 4, input_context=context, seed=worker, **args
                )
            )
        )
    assert len(set(everything)) == 12
    assert sorted(per_worker[0] + per_worker[1]) == sorted(everything)


def test_training_with_input_context_uses_the_per_replica_batch(shards):
    directory, _ = shards
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=4)
    dataset = pipelines.training_dataset(_pattern(directory), 8, input_context=context)
    assert dataset.element_spec[0].shape == (2, 224, 224, 3)


def test_bad_arguments_name_the_value(shards):
    directory, _ = shards
    with pytest.raises(ValueError, match="'warp'"):
        pipelines.training_dataset(_pattern(directory), 2, pixels=PixelSettings(augment="warp"))
    with pytest.raises(ValueError, match="image_size=300"):
        pipelines.evaluation_dataset(_pattern(directory), 2, pixels=PixelSettings(image_size=300))
    with pytest.raises(ValueError, match="nothing-here"):
        pipelines.evaluation_dataset(os.path.join(directory, "nothing-here-*"), 2)


@pytest.mark.parametrize("ten_crop", [False, True])
def test_synthetic_dataset(ten_crop):
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    dataset = pipelines.synthetic_dataset(
        8, image_size=32, num_classes=7, ten_crop=ten_crop, input_context=context
    )
    (images, labels), (again, _) = dataset.take(2)
    assert images.shape == ((4, 10, 32, 32, 3) if ten_crop else (4, 32, 32, 3))
    assert images.dtype == tf.float32 and labels.dtype == tf.int32 and labels.shape == (4,)
    assert 0 <= int(tf.reduce_min(labels)) and int(tf.reduce_max(labels)) < 7
    assert float(tf.reduce_min(images)) >= -MEAN.max() and float(tf.reduce_max(images)) <= 255 - MEAN.min()
    np.testing.assert_array_equal(images, again)  # one batch, repeated


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """imagenet2012 prepared by tfds's own builder (tfrecord_fixtures.prepare_tfds_imagenet)."""
    pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("importlib_resources")
    return prepare_tfds_imagenet(tmp_path_factory.mktemp("tfds"))


def test_tfds_source(tfds_dir):
    import tensorflow_datasets as tfds

    images, labels = next(iter(pipelines.tfds_training_dataset(tfds_dir, "train", 4)))
    assert images.shape == (4, 224, 224, 3) and images.dtype == tf.float32
    assert set(labels.numpy()) <= {0, 1}  # n01440764, n01443537: the first two synsets
    # What the trainer reads: uint8 crops and their draws, finished in the train step.
    batch, _ = next(iter(pipelines.tfds_training_dataset(tfds_dir, "train", 4, finish_on_host=False)))
    assert batch["pixels"].dtype == tf.uint8 and batch["pixels"].shape == (4, 224, 224, 3)
    finished = preprocessing.finish_batch(batch).numpy()
    assert finished.dtype == np.float32 and -154.0 < finished.min() and finished.max() < 182.0
    raw = tfds.builder("imagenet2012", data_dir=tfds_dir).as_dataset(
        split="validation", shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()}
    )
    expected = [
        (preprocessing.preprocess_for_eval(preprocessing.decode_image(e["image"])), int(e["label"]))
        for e in raw
    ]
    images, labels = next(iter(pipelines.tfds_evaluation_dataset(tfds_dir, "validation", 4)))
    assert labels.numpy().tolist() == [label for _, label in expected]
    np.testing.assert_array_equal(images, np.stack([image for image, _ in expected]))
    crops, _ = next(iter(pipelines.tfds_evaluation_dataset(tfds_dir, "validation", 2, ten_crop=True)))
    assert crops.shape == (2, 10, 224, 224, 3)
