"""Tests of alexnet_tf.explain: Grad-CAM against finite differences, a corner that lights up, errors.

The maps are checked against a computation that shares nothing with `grad_cam` but the forward
pass of the model's layers: the Grad-CAM weight of map k is the mean over positions of
d logit / d A[:, :, k], which is the derivative of the logit along the direction that adds the
same amount to every position of map k, divided by h * w; central differences along each of
those K directions give every weight, and NumPy forms the map from them. A miniature AlexNet
(grouped convolutions, LRN, max pooling, dense) keeps that to one batch of 2 K heads per image.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import explain
from alexnet_tf.layers import GroupedConv2D, LocalResponseNormalization
from alexnet_tf.model import build_alexnet

SIZE = 24
CLASSES = 4


def tiny_alexnet():
    """AlexNet's kinds of layer at 24 px: pad, conv, LRN, pool, grouped conv, LRN, conv, pool, dense."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3), name="images")
    x = keras.layers.ZeroPadding2D(2, name="pad1")(inputs)
    x = GroupedConv2D(8, 5, strides=2, activation="relu", bias_initializer="ones", name="conv1")(x)
    x = LocalResponseNormalization(name="lrn1")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = GroupedConv2D(8, 3, groups=2, padding="same", activation="relu", name="conv2")(x)
    x = LocalResponseNormalization(name="lrn2")(x)
    x = GroupedConv2D(8, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool3")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc7")(x)
    logits = keras.layers.Dense(CLASSES, name="fc8")(x)
    return keras.Model(inputs, logits)


def run_layers(layers, x):
    """The layers applied one after the other: the model's own graph is not used."""
    for layer in layers:
        x = layer(x, training=False) if isinstance(layer, keras.layers.Dropout) else layer(x)
    return np.asarray(x, np.float64)


def finite_difference_cam(model, image, class_index, layer, steps=(1e-3, 3e-4, 1e-4)):
    """Grad-CAM of one image from central differences of the layers after `layer` (NumPy map).

    ReLUs and max pools make the logit piecewise smooth: a step that crosses a kink shows as a
    forward and a backward difference that disagree. Each direction's derivative is taken at
    the step (a fraction of the largest activation) where they agree best.
    """
    layers = model.layers[1:]  # without the InputLayer
    cut = [layer_.name for layer_ in layers].index(layer) + 1
    maps = run_layers(layers[:cut], image[None])[0]  # [h, w, K]
    height, width, channels = maps.shape
    sizes = np.array(steps) * max(maps.max(), 1e-3)
    directions = np.zeros([len(sizes), channels, height, width, channels], np.float32)
    for s, size in enumerate(sizes):
        for k in range(channels):
            directions[s, k, :, :, k] = size
    directions = directions.reshape(-1, height, width, channels)
    batch = np.concatenate([maps[None], maps[None] + directions, maps[None] - directions]).astype(np.float32)
    logits = run_layers(layers[cut:], batch)[:, class_index]
    centre, up, down = logits[0], logits[1 : 1 + len(directions)], logits[1 + len(directions) :]
    up, down = up.reshape(len(sizes), channels), down.reshape(len(sizes), channels)
    forward, backward = (up - centre) / sizes[:, None], (centre - down) / sizes[:, None]
    best = np.argmin(np.abs(forward - backward), axis=0)
    derivative = ((up - down) / (2 * sizes[:, None]))[best, np.arange(channels)]
    weights = derivative / (height * width)
    heatmap = np.maximum(np.tensordot(maps, weights, axes=([2], [0])), 0.0)
    return heatmap / heatmap.max() if heatmap.max() > 0 else heatmap, weights


@pytest.fixture(scope="module")
def tiny():
    return tiny_alexnet()


@pytest.mark.parametrize("layer", ["conv1", "conv2", "conv3"])
def test_maps_match_finite_differences_through_lrn_and_grouped_convolutions(tiny, layer):
    images = np.random.default_rng(0).uniform(-10, 10, [2, SIZE, SIZE, 3]).astype(np.float32)
    classes = [2, 3]  # the top-1 class, and another
    heatmaps, indices, logits = explain.grad_cam(tiny, images, class_index=classes, layer=layer)
    assert indices.tolist() == classes
    np.testing.assert_allclose(logits, tiny(images), rtol=1e-5, atol=1e-5)
    for n in range(2):
        expected, weights = finite_difference_cam(tiny, images[n], classes[n], layer)
        assert np.abs(weights).max() > 0  # a gradient reached this layer through what follows it
        assert heatmaps[n].shape == expected.shape and heatmaps[n].max() == pytest.approx(1.0)
        np.testing.assert_allclose(heatmaps[n], expected, atol=1e-2)


def test_class_index_none_explains_each_images_top_one_and_an_int_every_image(tiny):
    images = np.random.default_rng(1).uniform(-100, 100, [3, SIZE, SIZE, 3]).astype(np.float32)
    top, indices, logits = explain.grad_cam(tiny, images, layer="conv3")
    assert indices.tolist() == np.argmax(logits, axis=-1).tolist()
    for n in range(3):
        one, _, _ = explain.grad_cam(tiny, images[n : n + 1], class_index=int(indices[n]), layer="conv3")
        np.testing.assert_allclose(one[0], top[n], atol=1e-6)
    _, indices, _ = explain.grad_cam(tiny, images, class_index=2, layer="conv3")
    assert indices.tolist() == [2, 2, 2]


def corner_model():
    """Two colour detectors (red, green) whose mean activations are the two classes' logits.

    conv1's map 0 answers to red pixels and map 1 to green ones (zero on grey); conv2 mixes
    them through a grouped 1x1 convolution that keeps each; fc8 reads class 0 from map 0 and
    class 1 from map 1. Where a class's evidence sits is only in its map, not in the weights.
    """
    inputs = keras.Input((32, 32, 3), name="images")
    conv1 = GroupedConv2D(2, 3, padding="same", activation="relu", name="conv1")
    x = conv1(inputs)
    conv2 = GroupedConv2D(2, 1, groups=2, activation="relu", name="conv2")
    x = conv2(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    fc8 = keras.layers.Dense(2, name="fc8")
    model = keras.Model(inputs, fc8(pooled))
    kernel = np.zeros([3, 3, 3, 2], np.float32)
    kernel[1, 1, :, 0] = [1.0, -1.0, -1.0]  # red minus the rest
    kernel[1, 1, :, 1] = [-1.0, 1.0, -1.0]  # green minus the rest
    conv1.set_weights([kernel, np.zeros([2], np.float32)])
    conv2.set_weights([np.ones([1, 1, 1, 2], np.float32), np.zeros([2], np.float32)])
    fc8.set_weights([np.eye(2, dtype=np.float32), np.zeros([2], np.float32)])
    return model


def quadrant_shares(heatmap):
    """The share of the map's mass in each quadrant: top-left, top-right, bottom-left, bottom-right."""
    h, w = heatmap.shape[0] // 2, heatmap.shape[1] // 2
    parts = [heatmap[:h, :w], heatmap[:h, w:], heatmap[h:, :w], heatmap[h:, w:]]
    return np.array([part.sum() for part in parts]) / heatmap.sum()


def test_the_class_whose_evidence_sits_in_a_corner_lights_up_that_corner():
    model = corner_model()
    rng = np.random.default_rng(0)
    image = np.repeat(rng.uniform(0, 10, [32, 32, 1]), 3, axis=-1).astype(np.float32)  # grey noise
    image[2:12, 2:12] = [120.0, -60.0, -60.0]  # red evidence, top-left: the larger, so the top-1
    image[24:30, 24:30] = [-60.0, 120.0, -60.0]  # green, bottom-right
    heatmaps, classes, _ = explain.grad_cam(model, image[None], layer="conv2")
    assert classes.tolist() == [0]
    assert quadrant_shares(heatmaps[0])[0] > 0.95  # the top-left quadrant
    assert np.unravel_index(np.argmax(heatmaps[0]), (32, 32)) < (12, 12)
    heatmaps, classes, _ = explain.grad_cam(model, image[None], class_index=1, layer="conv1")
    assert classes.tolist() == [1]
    assert quadrant_shares(heatmaps[0])[3] > 0.95  # the bottom-right quadrant
    # Upsampled and overlaid, the corner is red (jet's top) and the opposite one blue.
    picture = explain.overlay(np.full([1, 64, 64, 3], 128, np.uint8), explain.upsample(heatmaps, 16))
    assert picture.shape == (1, 64, 64, 3) and picture.dtype == np.uint8
    red, blue = picture[0, 54, 54].astype(int), picture[0, 8, 8].astype(int)
    assert red[0] > red[2] + 50 and blue[2] > blue[0] + 50


def test_a_dense_layer_a_missing_layer_and_a_class_out_of_range_are_refused(tiny):
    images = np.zeros([1, SIZE, SIZE, 3], np.float32)
    choices = "conv1, conv2, conv3"
    with pytest.raises(ValueError, match=f"layer 'fc7' is a Dense, not a convolution: .*: {choices}$"):
        explain.grad_cam(tiny, images, layer="fc7")
    with pytest.raises(ValueError, match=f"the model has no layer 'conv5'; .*convolution layers: {choices}$"):
        explain.grad_cam(tiny, images)
    with pytest.raises(ValueError, match="class_index 4 is out of range: the model has 4 classes"):
        explain.grad_cam(tiny, images, class_index=4, layer="conv3")
    with pytest.raises(ValueError, match="one integer per image"):
        explain.grad_cam(tiny, images, class_index=[0, 1], layer="conv3")


@pytest.mark.parametrize(
    "variant, size, conversion",
    [
        ("paper", 224, None),
        # one_weird_trick's conv5 (no groups, no LRN) is explained in tests/features at 95 px.
        ("caffe", 227, dict(input_mean=(124, 117, 104), channel_order="bgr", mean=(104, 117, 124))),
    ],
)
def test_paper_and_caffe_conv5_is_the_13x13_last_convolution_and_the_split_is_the_model(
    variant, size, conversion
):
    keras.utils.set_random_seed(0)
    model = build_alexnet(
        num_classes=5,
        variant=variant,
        input_shape=(size, size, 3),
        dropout_rate=0.5,
        input_conversion=conversion,
        kernel_initializer=keras.initializers.RandomNormal(0.0, 0.02),
    )
    assert explain.convolution_layers(model) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    images = np.random.default_rng(2).uniform(-120, 120, [1, size, size, 3]).astype(np.float32)
    heatmaps, classes, logits = explain.grad_cam(model, images)
    assert heatmaps.shape == (1, 13, 13) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0.0 and heatmaps.max() == pytest.approx(1.0)
    np.testing.assert_allclose(logits, model(images, training=False), rtol=1e-4, atol=1e-4)
    # The same gradient taken through the whole model in one pass (the maps as a second output).
    both = keras.Model(model.inputs[0], [model.get_layer("conv5").output, model.outputs[0]])
    with tf.GradientTape() as tape:
        maps, whole = both(images, training=False)
        chosen = tf.gather(whole, classes, axis=1, batch_dims=1)
    weights = tf.reduce_mean(tape.gradient(chosen, maps), axis=[1, 2], keepdims=True)
    expected = explain.normalize(tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1)).numpy())
    np.testing.assert_allclose(heatmaps, expected, atol=1e-4)


def test_upsample_keeps_the_range_and_matches_tensorflows_bilinear_resize():
    maps = np.random.default_rng(3).uniform(0, 1, [2, 5, 7]).astype(np.float32)
    up = explain.upsample(maps, (20, 21))
    expected = tf.image.resize(maps[..., None], (20, 21), method="bilinear")[..., 0].numpy()
    np.testing.assert_allclose(up, expected, atol=1e-5)
    assert up.min() >= maps.min() - 1e-6 and up.max() <= maps.max() + 1e-6
    colours = explain.jet(np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(colours, [[0, 0, 0.5], [0.5, 1, 0.5], [0.5, 0, 0]])
