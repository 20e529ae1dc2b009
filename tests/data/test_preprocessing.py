"""Tests of alexnet_tf.data.preprocessing on real JPEGs, eagerly and inside tf.data."""

import io

import numpy as np
import pytest
import tensorflow as tf
from tfrecord_fixtures import natural_image

from alexnet_tf.data import preprocessing

MEAN = np.asarray(preprocessing.MEAN_RGB, np.float32)
EIGVAL = np.asarray(preprocessing.PCA_EIGVAL, np.float32) * 255.0
EIGVEC = np.asarray(preprocessing.PCA_EIGVEC, np.float32)


def _square_np(image):
    """NumPy reference of the paper's central 256 square of an image whose shorter side is 256."""
    h, w = image.shape[:2]
    top, left = (h - 256) // 2, (w - 256) // 2
    return image[top : top + 256, left : left + 256]


def _in_map(fn, *inputs):
    """Runs fn inside Dataset.map (graph mode, unknown shapes where the input had them)."""
    dataset = tf.data.Dataset.from_tensors(inputs).map(fn)
    return next(iter(dataset))


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
