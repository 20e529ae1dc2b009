"""Tests of alexnet_tf.data.pipelines on real TFRecord shards of real JPEGs, eagerly and inside tf.data."""

import io
import json
import os
import re
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from tfrecord_fixtures import make_example, natural_image, write_fake_tfrecords

from alexnet_tf.cli import error_message
from alexnet_tf.data import demo, pipelines, preprocessing, schema

MEAN = np.asarray(preprocessing.MEAN_RGB, np.float32)
EIGVAL = np.asarray(preprocessing.PCA_EIGVAL, np.float32) * 255.0
EIGVEC = np.asarray(preprocessing.PCA_EIGVEC, np.float32)
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


def _square_np(image):
    """NumPy reference of the paper's central 256 square of an image whose shorter side is 256."""
    h, w = image.shape[:2]
    top, left = (h - 256) // 2, (w - 256) // 2
    return image[top : top + 256, left : left + 256]


def _in_map(fn, *inputs):
    """Runs fn inside Dataset.map (graph mode, unknown shapes where the input had them)."""
    dataset = tf.data.Dataset.from_tensors(inputs).map(fn)
    return next(iter(dataset))


# ----------------------------------------------------------------------------- labels


def test_read_labels_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("0\tn01440764\ttench\n1\tn01443537\tgoldfish, Carassius auratus\n\n")
    entries = schema.read_labels_file(str(path))
    assert entries == [
        schema.LabelEntry(0, "n01440764", "tench"),
        schema.LabelEntry(1, "n01443537", "goldfish, Carassius auratus"),
    ]


@pytest.mark.parametrize("text", ["n01440764 tench\n", "0\tn0\ta\n2\tn2\tc\n", "x\tn0\ta\n"])
def test_read_labels_file_rejects_malformed_lines(tmp_path, text):
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match="labels.txt:"):
        schema.read_labels_file(str(path))


def test_detect_label_offset(tmp_path):
    assert schema.detect_label_offset(str(tmp_path)) is None
    (tmp_path / "labels.txt").write_text("1\tn0\ta\n2\tn1\tb\n")
    assert schema.detect_label_offset(str(tmp_path)) == 1
    (tmp_path / "manifest.json").write_text(json.dumps({"label_offset": 0, "num_classes": 2}))
    with pytest.raises(ValueError, match="label_offset=0"):
        schema.detect_label_offset(str(tmp_path))
    (tmp_path / "labels.txt").unlink()
    assert schema.detect_label_offset(str(tmp_path)) == 0


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    "fmt,mode", [("png", "L"), ("png", "RGBA"), ("gif", "P"), ("bmp", "RGB"), ("jpeg", "L"), ("jpeg", "RGB")]
)
def test_decode_image_formats(fmt, mode):
    image_module = pytest.importorskip("PIL.Image")
    pixels = natural_image(np.random.default_rng(0), 20, 30)
    buffer = io.BytesIO()
    image_module.fromarray(pixels).convert(mode).save(buffer, fmt)
    for decoded in (
        preprocessing.decode_image(buffer.getvalue()),
        _in_map(preprocessing.decode_image, buffer.getvalue()),
    ):
        assert decoded.shape == (20, 30, 3) and decoded.dtype == tf.uint8
    if fmt in ("png", "bmp") and mode == "RGB":
        np.testing.assert_array_equal(decoded, pixels)


def test_eval_preprocessing_is_graph_compatible_with_dynamic_sizes():
    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def serve(image_bytes):
        return preprocessing.preprocess_for_eval(preprocessing.decode_image(image_bytes))

    for height, width in [(256, 300), (120, 90), (500, 375)]:
        jpeg = tf.io.encode_jpeg(natural_image(np.random.default_rng(1), height, width))
        out = serve(jpeg)
        assert out.shape == (224, 224, 3) and out.dtype == tf.float32


def test_preprocess_for_eval_is_the_centre_crop_minus_the_mean():
    image = natural_image(np.random.default_rng(2), 256, 300)
    expected = _square_np(image)[16:240, 16:240].astype(np.float32) - MEAN
    for dtype in (np.uint8, np.float32):  # serving may send float pixels
        np.testing.assert_array_equal(preprocessing.preprocess_for_eval(image.astype(dtype)), expected)


def test_ten_crop_returns_the_papers_ten_windows():
    image = natural_image(np.random.default_rng(3), 300, 256)
    square = _square_np(image).astype(np.float32) - MEAN
    windows = [square[y : y + 224, x : x + 224] for y, x in ((0, 0), (0, 32), (32, 0), (32, 32), (16, 16))]
    expected = np.stack(windows + [w[:, ::-1] for w in windows])
    np.testing.assert_array_equal(preprocessing.ten_crop(image), expected)
    np.testing.assert_array_equal(_in_map(preprocessing.ten_crop, image), expected)


def test_rescaling_keeps_uint8_and_float_paths_together():
    image = natural_image(np.random.default_rng(4), 180, 240)
    as_uint8 = preprocessing.preprocess_for_eval(image).numpy()
    as_float = preprocessing.preprocess_for_eval(image.astype(np.float32)).numpy()
    # The uint8 path rounds the rescaled pixels back to uint8, as stored images would be.
    assert np.abs(as_uint8 - as_float).max() <= 0.5 + 1e-4


@pytest.mark.parametrize("shape", [(256, 300), (300, 256), (180, 240), (400, 300)])
@pytest.mark.parametrize(
    "fn",
    [
        preprocessing.preprocess_for_eval,
        preprocessing.ten_crop,
        preprocessing.center_crop,
        lambda image: preprocessing.subtract_mean(preprocessing.decode_image(tf.io.encode_png(image))),
    ],
)
def test_eval_functions_agree_eagerly_and_in_map(fn, shape):
    image = natural_image(np.random.default_rng(5), *shape)
    np.testing.assert_array_equal(fn(image), _in_map(fn, image))


@pytest.mark.parametrize("encode", [tf.io.encode_jpeg, tf.io.encode_png])
@pytest.mark.parametrize("shape", [(256, 300), (300, 256), (180, 240)])
def test_decode_and_random_crop_agrees_eagerly_and_in_map(encode, shape):
    # With image_size == resize_shorter the random crop has one place to go: the whole square.
    image_bytes = encode(natural_image(np.random.default_rng(6), *shape))
    crop = lambda b: preprocessing.decode_and_random_crop(b, image_size=256, resize_shorter=256)
    eager, mapped = crop(image_bytes), _in_map(crop, image_bytes)
    np.testing.assert_array_equal(eager, mapped)
    whole = preprocessing.center_crop(preprocessing.decode_image(image_bytes), 256, 256).numpy()
    # decode_and_crop_jpeg upsamples chroma differently in the crop's edge columns only.
    np.testing.assert_array_equal(eager[:, 1:-1], whole[:, 1:-1])
    assert np.abs(eager.numpy().astype(int) - whole).max() <= 12


def _find_window(crop, square):
    """(dy, dx, flipped) of the 224 window of `square` equal to `crop` (edge columns excepted)."""
    for flipped in (False, True):
        target = crop[:, ::-1] if flipped else crop
        for dy in range(33):
            for dx in range(33):
                window = square[dy : dy + 224, dx : dx + 224]
                # decode_and_crop_jpeg upsamples chroma differently in the crop's edge columns.
                if (
                    np.array_equal(window[:, 1:-1], target[:, 1:-1])
                    and np.abs(window.astype(int) - target).max() <= 12
                ):
                    return dy, dx, flipped
    return None


@pytest.mark.parametrize("run", ["eager", "map"])
def test_train_crop_is_a_window_of_the_256_square_possibly_mirrored(run):
    image = natural_image(np.random.default_rng(7), 256, 320)
    jpeg = tf.io.encode_jpeg(image, quality=95)
    square = _square_np(tf.io.decode_jpeg(jpeg).numpy())
    fn = lambda b: preprocessing.preprocess_for_train(b, pca_std=0.0)
    if run == "eager":
        outputs = [fn(jpeg) for _ in range(6)]
    else:
        # One dataset for all six: a fresh dataset per crop would repeat the same crop
        # whenever an earlier test has set a global seed.
        outputs = list(tf.data.Dataset.from_tensors(jpeg).repeat(6).map(fn))
    found = set()
    for out in outputs:
        out = out.numpy()
        assert out.shape == (224, 224, 3) and out.dtype == np.float32
        window = _find_window(np.round(out + MEAN).astype(np.uint8), square)
        assert window is not None
        found.add(window)
    assert len(found) > 1  # the crops move


def test_pca_lighting_matches_the_papers_formula():
    rng = np.random.default_rng(8)
    images = rng.uniform(-120, 120, size=(2, 5, 6, 3)).astype(np.float32)
    alpha = np.array([[0.1, -0.2, 0.05], [-0.03, 0.0, 0.2]], np.float32)
    # docs/paper.md: add eigvec @ (alpha * eigval) to every RGB pixel.
    expected = images + np.stack([EIGVEC @ (a * EIGVAL) for a in alpha])[:, None, None, :]
    np.testing.assert_allclose(preprocessing.pca_lighting(images, alpha), expected, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(
        _in_map(preprocessing.pca_lighting, images, alpha), expected, rtol=1e-6, atol=1e-4
    )


@pytest.mark.parametrize("run", ["eager", "map"])
def test_augment_batch_flips_lights_and_subtracts_the_mean(run):
    images = np.stack([natural_image(np.random.default_rng(9 + i), 8, 10) for i in range(32)])
    outputs = {}
    for jit in (True, False):
        tf.random.set_seed(0)
        fn = lambda x, jit=jit: preprocessing.augment_batch(x, jit_compile=jit)
        outputs[jit] = (fn(images) if run == "eager" else _in_map(fn, images)).numpy()
    np.testing.assert_array_equal(outputs[True], outputs[False])  # XLA changes nothing
    flips = []
    for image, out in zip(images.astype(np.float32), outputs[True]):
        flipped = np.allclose(out - out[0, 0], image[:, ::-1] - image[0, -1], atol=1e-3)
        source = image[:, ::-1] if flipped else image
        offset = (out - source).reshape(-1, 3)
        np.testing.assert_allclose(offset, np.broadcast_to(offset[0], offset.shape), atol=1e-3)
        alpha = np.linalg.solve(EIGVEC, offset[0] + MEAN) / EIGVAL  # lighting = eigvec @ (alpha*eigval)
        assert np.all(np.abs(alpha) < 0.6)  # alpha ~ N(0, 0.1)
        flips.append(flipped)
    assert 0 < sum(flips) < len(flips)


# ----------------------------------------------------------------------------- datasets


def test_training_batches(shards):
    directory, records = shards
    dataset = pipelines.make_dataset(_pattern(directory), 8, training=True, shuffle_buffer_size=16, seed=0)
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
        args = dict(seed=3, augment=augment)
        finished = pipelines.make_dataset(_pattern(directory), 8, True, **args).take(3)
        unfinished = pipelines.make_dataset(_pattern(directory), 8, True, finish_on_host=False, **args).take(
            3
        )
        for (images, labels), (batch, raw_labels) in zip(finished, unfinished):
            assert batch["pixels"].dtype == tf.uint8 and batch["pixels"].shape == (8, 224, 224, 3)
            assert batch["flip"].shape == (8,) and batch["offset"].shape == (8, 3)
            np.testing.assert_array_equal(preprocessing.finish_batch(batch), images)
            np.testing.assert_array_equal(preprocessing.finished(batch), images)
            np.testing.assert_array_equal(raw_labels, labels)


def test_training_draws_rows_do_not_depend_on_the_count():
    seed = tf.constant([1, 2], tf.int64)
    for augment in ("paper", "inception"):
        few = preprocessing.training_draws(seed, 5, 224, 256, augment)
        many = preprocessing.training_draws(seed, 300, 224, 256, augment)
        for a, b in zip(few, many):
            np.testing.assert_array_equal(a, b[:5])
    crop, flip, alpha = preprocessing.training_draws(seed, 4000, 224, 256)
    assert crop.numpy().min() == 0 and crop.numpy().max() == 32  # offsets cover [0, 256 - 224]
    assert 0.45 < flip.numpy().mean() < 0.55 and 0.09 < alpha.numpy().std() < 0.11


def test_converter_output_is_cropped_unchecked_and_alike(tmp_path):
    """The converter's shards skip the per-image checks of the crop, with the checked path's crops."""
    converted = demo.build_demo_dataset(
        str(tmp_path / "cache"), num_classes=3, train_per_class=4, validation_per_class=1
    )
    files = sorted(tf.io.gfile.glob(os.path.join(converted, "train-*")))
    assert pipelines.files_shorter_side(files) == 256
    plain = tmp_path / "plain"  # the same records with no manifest: every image is checked
    plain.mkdir()
    for f in files:
        tf.io.gfile.copy(f, str(plain / os.path.basename(f)))
    plain_files = sorted(tf.io.gfile.glob(str(plain / "train-*")))
    assert pipelines.files_shorter_side(plain_files) is None
    assert pipelines.files_shorter_side(files + plain_files) is None
    args = dict(seed=1, label_offset=0)
    batches = [list(pipelines.make_dataset(p, 4, True, **args).take(4)) for p in (files, plain_files)]
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
    images, labels = next(iter(pipelines.make_dataset(_pattern(directory), 4, True, augment="inception")))
    assert images.shape == (4, 224, 224, 3) and images.dtype == tf.float32
    assert labels.shape == (4,)


def test_evaluation_matches_the_serving_preprocessing_exactly(shards):
    directory, records = shards
    dataset = pipelines.make_dataset(os.path.join(directory, "train-00000-*"), 4, training=False)
    images, labels = (np.concatenate(parts) for parts in zip(*dataset))
    shard = [r for r in records if r.shard.endswith("train-00000-of-00002")]
    assert labels.tolist() == [r.label for r in shard]
    expected = np.stack(
        [preprocessing.preprocess_for_eval(preprocessing.decode_image(r.jpeg)) for r in shard]
    )
    np.testing.assert_array_equal(images, expected)


def test_ten_crop_dataset(shards):
    directory, records = shards
    dataset = pipelines.make_dataset(_pattern(directory), 3, training=False, ten_crop=True)
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
    evaluated, labels = next(
        iter(pipelines.make_dataset(str(tmp_path / "train-*"), 1, False, label_offset=0))
    )
    np.testing.assert_array_equal(evaluated[0], preprocessing.preprocess_for_eval(image))
    trained, _ = next(
        iter(
            pipelines.make_dataset(str(tmp_path / "train-*"), 1, True, label_offset=0, shuffle_buffer_size=2)
        )
    )
    assert trained.shape == (1, 224, 224, 3) and labels.numpy().tolist() == [3]


@pytest.mark.parametrize("how", ["manifest", "labels_file", "argument"])
def test_one_based_labels_come_out_zero_based(tmp_path, how):
    records = write_fake_tfrecords(
        tmp_path,
        num_records=6,
        num_shards=1,
        num_classes=3,
        label_offset=1,
        write_manifest=how == "manifest",
        write_labels_file=how == "labels_file",
    )
    pattern = str(tmp_path / "train-*")
    if how == "argument":
        with pytest.raises(ValueError, match="label_offset=1"):
            pipelines.make_dataset(pattern, 6, training=False)
    offset = 1 if how == "argument" else None
    _, labels = next(
        iter(pipelines.make_dataset(pattern, 6, training=False, label_offset=offset, num_classes=3))
    )
    assert labels.numpy().tolist() == [r.label for r in records]


def test_a_wrong_label_offset_fails_loudly(tmp_path):
    write_fake_tfrecords(tmp_path, num_records=12, num_shards=1, num_classes=3, label_offset=1)
    dataset = pipelines.make_dataset(
        str(tmp_path / "train-*"), 12, training=False, label_offset=0, num_classes=3
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="label_offset"):
        next(iter(dataset))


def _damage(path, how):
    content = bytearray(open(path, "rb").read())
    if how == "truncated":
        content = content[:-100]  # cuts into the last record
    else:
        length = int.from_bytes(content[:8], "little")
        start = 12 + length + 4 + 12  # data of the second record
        content[start + 50] ^= 0xFF  # its CRC no longer matches: "corrupted record"
    open(path, "wb").write(bytes(content))


@pytest.mark.parametrize("how", ["truncated", "corrupted"])
@pytest.mark.parametrize("training", [False, True])
def test_a_damaged_shard_is_an_error_naming_the_file(tmp_path, how, training):
    write_fake_tfrecords(tmp_path, num_records=12, num_shards=3, num_classes=3)
    bad = str(tmp_path / "train-00001-of-00003")
    _damage(bad, how)
    # Training without the manifest's record counts finds the damage when it counts the shards.
    with pytest.raises(tf.errors.InvalidArgumentError, match="train-00001-of-00003") as caught:
        for _ in pipelines.make_dataset(str(tmp_path / "train-*"), 4, training=training).take(12):
            pass
    # The one line every command prints of it reads as a sentence.
    line = error_message(caught.value)
    assert re.fullmatch(
        rf"corrupt or truncated TFRecord shard {re.escape(bad)} \(its records frame \d+ of its \d+ "
        r"bytes\): convert it again, or train with --skip_corrupt to skip such shards",
        line,
    ), line


@pytest.mark.parametrize("how,kept_from_bad_shard", [("truncated", 3), ("corrupted", 1)])
def test_skip_corrupt_skips_counts_and_logs(tmp_path, capfd, how, kept_from_bad_shard):
    write_fake_tfrecords(tmp_path, num_records=12, num_shards=3, num_classes=3)
    _damage(str(tmp_path / "train-00001-of-00003"), how)
    dataset = pipelines.make_dataset(str(tmp_path / "train-*"), 1, training=False, skip_corrupt=True)
    assert sum(1 for _ in dataset) == 8 + kept_from_bad_shard
    log = capfd.readouterr().err
    assert "train-00001-of-00003" in log and "corrupt TFRecord shards skipped so far: 1" in log


def test_skip_corrupt_skips_undecodable_images(tmp_path):
    records = write_fake_tfrecords(tmp_path, num_records=4, num_shards=1, num_classes=3)
    with tf.io.TFRecordWriter(str(tmp_path / "train-00001-of-00001")) as writer:
        writer.write(make_example(b"\xff\xd8 not a jpeg", 0, 256, 256, "n0", "a", "bad").SerializeToString())
    pattern = str(tmp_path / "train-*")
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(pipelines.make_dataset(pattern, 1, training=False))
    assert len(list(pipelines.make_dataset(pattern, 1, training=False, skip_corrupt=True))) == len(records)


def _fingerprints(dataset):
    return [hash(image.tobytes()) for images, _ in dataset for image in images.numpy()]


@pytest.mark.parametrize("num_shards", [4, 1])  # 4: files split per pipeline; 1: records split
def test_input_context_gives_disjoint_per_worker_data(tmp_path, num_shards):
    write_fake_tfrecords(tmp_path, num_records=12, num_shards=num_shards, num_classes=3)
    everything = _fingerprints(pipelines.make_dataset(str(tmp_path / "train-*"), 4, training=False))
    per_worker = []
    for worker in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2
        )
        dataset = pipelines.make_dataset(str(tmp_path / "train-*"), 4, training=False, input_context=context)
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
    args = dict(image_size=256, pca_std=0.0, repeat=False, drop_remainder=False, shuffle_buffer_size=4)

    def fingerprints(dataset):
        images = [image for batch, _ in dataset for image in batch.numpy()]
        return [hash(min(image.tobytes(), image[:, ::-1].tobytes())) for image in images]

    everything = fingerprints(pipelines.make_dataset(str(tmp_path / "train-*"), 4, True, **args))
    per_worker = []
    for worker in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2
        )
        per_worker.append(
            fingerprints(
                pipelines.make_dataset(
                    str(tmp_path / "train-*"), 4, True, input_context=context, seed=worker, **args
                )
            )
        )
    assert len(set(everything)) == 12
    assert sorted(per_worker[0] + per_worker[1]) == sorted(everything)


def test_training_with_input_context_uses_the_per_replica_batch(shards):
    directory, _ = shards
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=4)
    dataset = pipelines.make_dataset(_pattern(directory), 8, training=True, input_context=context)
    assert dataset.element_spec[0].shape == (2, 224, 224, 3)


def test_bad_arguments_name_the_value(shards):
    directory, _ = shards
    with pytest.raises(ValueError, match="'warp'"):
        pipelines.make_dataset(_pattern(directory), 2, True, augment="warp")
    with pytest.raises(ValueError, match="image_size=300"):
        pipelines.make_dataset(_pattern(directory), 2, False, image_size=300)
    with pytest.raises(ValueError, match="nothing-here"):
        pipelines.make_dataset(os.path.join(directory, "nothing-here-*"), 2, False)


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


# ----------------------------------------------------------------------------- tensorflow-datasets


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """imagenet2012 prepared by tfds's own builder from tiny stand-ins for the ILSVRC tars."""
    tfds = pytest.importorskip("tensorflow_datasets")
    # tfds 4.9 imports it while preparing a dataset but does not declare it on Python >= 3.9.
    pytest.importorskip("importlib_resources")
    root = tmp_path_factory.mktemp("tfds")
    manual, rng = root / "manual", np.random.default_rng(11)
    manual.mkdir()

    def add(tar, name, content):
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))

    def jpeg():
        return tf.io.encode_jpeg(natural_image(rng, 300, 400)).numpy()

    with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as outer:
        for synset in ("n01440764", "n01443537"):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for i in range(3):
                    add(tar, f"{synset}_{i}.JPEG", jpeg())
            add(outer, f"{synset}.tar", inner.getvalue())
    with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as tar:
        for i in range(1, 5):
            add(tar, f"ILSVRC2012_val_{i:08d}.JPEG", jpeg())
    builder = tfds.builder("imagenet2012", data_dir=str(root / "data"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return str(root / "data")


def test_tfds_source(tfds_dir):
    import tensorflow_datasets as tfds

    images, labels = next(iter(pipelines.make_tfds_dataset(tfds_dir, "train", 4, training=True)))
    assert images.shape == (4, 224, 224, 3) and images.dtype == tf.float32
    assert set(labels.numpy()) <= {0, 1}  # n01440764, n01443537: the first two synsets
    # What the trainer reads: uint8 crops and their draws, finished in the train step.
    batch, _ = next(
        iter(pipelines.make_tfds_dataset(tfds_dir, "train", 4, training=True, finish_on_host=False))
    )
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
    images, labels = next(iter(pipelines.make_tfds_dataset(tfds_dir, "validation", 4, training=False)))
    assert labels.numpy().tolist() == [label for _, label in expected]
    np.testing.assert_array_equal(images, np.stack([image for image, _ in expected]))
    crops, _ = next(
        iter(pipelines.make_tfds_dataset(tfds_dir, "validation", 2, training=False, ten_crop=True))
    )
    assert crops.shape == (2, 10, 224, 224, 3)
