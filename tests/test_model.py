"""Tests of alexnet_tf.model: the paper's numbers, exactly, and a model that learns."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf.layers import GroupedConv2D, LocalResponseNormalization
from alexnet_tf.model import build_alexnet

PAPER_LAYER_PARAMS = {
    "conv1": 34_944,
    "conv2": 307_456,
    "conv3": 885_120,
    "conv4": 663_936,
    "conv5": 442_624,
    "fc6": 37_752_832,
    "fc7": 16_781_312,
    "fc8": 4_097_000,
}


@pytest.fixture(scope="module")
def paper_model():
    keras.utils.set_random_seed(0)
    return build_alexnet()


def test_build_alexnet_is_reexported():
    assert alexnet_tf.build_alexnet is build_alexnet


def test_paper_variant_parameter_counts(paper_model):
    assert paper_model.count_params() == 60_965_224
    for name, params in PAPER_LAYER_PARAMS.items():
        assert paper_model.get_layer(name).count_params() == params, name


@pytest.mark.parametrize(
    "variant, num_classes, expected",
    [
        ("one_weird_trick", 1000, 61_100_840),
        ("paper", 10, 60_965_224 - 4_097_000 + 4096 * 10 + 10),
        ("one_weird_trick", 10, 61_100_840 - 4_097_000 + 4096 * 10 + 10),
    ],
)
def test_parameter_counts(variant, num_classes, expected):
    assert build_alexnet(num_classes=num_classes, variant=variant).count_params() == expected


def test_paper_variant_layout(paper_model):
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in paper_model.layers}
    assert shapes["pad1"] == (228, 228, 3)
    assert shapes["conv1"] == shapes["lrn1"] == (55, 55, 96)
    assert shapes["pool1"] == (27, 27, 96)
    assert shapes["conv2"] == (27, 27, 256)
    assert shapes["pool2"] == (13, 13, 256)
    assert shapes["conv3"] == shapes["conv4"] == (13, 13, 384)
    assert shapes["pool5"] == (6, 6, 256)
    assert shapes["flatten"] == (9216,)
    assert shapes["logits"] == (1000,)
    groups = {layer.name: layer.groups for layer in paper_model.layers if isinstance(layer, GroupedConv2D)}
    assert groups == {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}
    lrn = [layer.name for layer in paper_model.layers if isinstance(layer, LocalResponseNormalization)]
    assert lrn == ["lrn1", "lrn2"]
    order = [layer.name for layer in paper_model.layers]
    # LRN after the ReLU'd conv and before the overlapping 3x3/2 pool; dropout after fc6/fc7.
    assert order.index("conv1") < order.index("lrn1") < order.index("pool1")
    assert order.index("fc6") + 1 == order.index("dropout6")
    assert order.index("fc7") + 1 == order.index("dropout7")
    pool = paper_model.get_layer("pool1")
    assert pool.pool_size == (3, 3) and pool.strides == (2, 2)


def _inbound(model, name):
    return model.get_layer(name).input._keras_history.operation.name  # noqa: SLF001  Keras keeps no public link


@pytest.mark.parametrize(
    "variant, inbound",
    [
        # The paper (section 4.2) and Caffe's bvlc_alexnet drop the outputs of fc6 and fc7
        # (fc6's Dense applies the ReLU); torchvision's classifier drops their inputs.
        ("paper", {"dropout6": "fc6", "fc7": "dropout6", "dropout7": "fc7", "fc8": "dropout7"}),
        ("caffe", {"dropout6": "fc6", "fc7": "dropout6", "dropout7": "fc7", "fc8": "dropout7"}),
        (
            "one_weird_trick",
            {"dropout6": "flatten", "fc6": "dropout6", "dropout7": "fc6", "fc7": "dropout7", "fc8": "fc7"},
        ),
    ],
)
def test_dropout_placement_follows_each_variants_reference(variant, inbound):
    model = build_alexnet(variant=variant, kernel_initializer="zeros")
    assert {name: _inbound(model, name) for name in inbound} == inbound
    assert model.get_layer("fc6").activation is keras.activations.relu
    without = build_alexnet(variant=variant, dropout_rate=0.0, kernel_initializer="zeros")
    assert _inbound(without, "fc7") == "fc6" and _inbound(without, "fc8") == "fc7"
    assert not [layer for layer in without.layers if isinstance(layer, keras.layers.Dropout)]


def test_paper_initialisation(paper_model):
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        kernel = paper_model.get_layer(name).kernel.numpy()
        assert abs(kernel.std() - 0.01) < 0.001, name
        assert abs(kernel.mean()) < 0.001, name
    for name in ("conv2", "conv4", "conv5", "fc6", "fc7"):
        np.testing.assert_array_equal(paper_model.get_layer(name).bias.numpy(), 1.0)
    for name in ("conv1", "conv3", "fc8"):
        np.testing.assert_array_equal(paper_model.get_layer(name).bias.numpy(), 0.0)


def test_hidden_bias_is_configurable():
    model = build_alexnet(num_classes=10, hidden_bias=0.1)
    np.testing.assert_allclose(model.get_layer("fc6").bias.numpy(), 0.1)
    np.testing.assert_array_equal(model.get_layer("conv3").bias.numpy(), 0.0)


def test_weight_decay_is_the_papers_gradient_term():
    """L2 inside the gradient: d(penalty)/dw = weight_decay * w on every kernel, not biases."""
    model = build_alexnet(num_classes=10, weight_decay=5e-4)
    kernels = [model.get_layer(n).kernel for n in ("conv1", "conv2", "fc6", "fc8")]
    with tf.GradientTape() as tape:
        penalty = tf.add_n(model.losses)
    grads = tape.gradient(penalty, kernels + [model.get_layer("fc6").bias])
    for kernel, grad in zip(kernels, grads):
        np.testing.assert_allclose(grad.numpy(), 5e-4 * kernel.numpy(), rtol=1e-5, atol=1e-12)
    assert grads[-1] is None
    assert len(model.losses) == 8
    assert build_alexnet(num_classes=10, weight_decay=0.0).losses == []


def test_one_weird_trick_layout():
    model = build_alexnet(variant="one_weird_trick")
    filters = [model.get_layer(f"conv{i}").filters for i in range(1, 6)]
    assert filters == [64, 192, 384, 256, 256]
    assert all(model.get_layer(f"conv{i}").groups == 1 for i in range(1, 6))
    assert not any(isinstance(layer, LocalResponseNormalization) for layer in model.layers)
    assert tuple(model.get_layer("avgpool").output.shape[1:]) == (6, 6, 256)


def test_one_weird_trick_accepts_other_input_sizes():
    model = build_alexnet(num_classes=5, variant="one_weird_trick", input_shape=(160, 192, 3))
    assert model(np.zeros((2, 160, 192, 3), "float32")).shape == (2, 5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variant": "vgg"}, "unknown variant 'vgg'"),
        ({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
        ({"dropout_rate": 1.0}, r"dropout_rate must be in \[0, 1\), got 1.0"),
        ({"weight_decay": -1.0}, "weight_decay must be >= 0, got -1.0"),
        ({"input_shape": (224, 224, 1)}, "input_shape must be"),
        ({"input_shape": (128, 128, 3)}, "needs input height and width >= 224"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_alexnet(**kwargs)


def test_keras_save_load_gives_identical_logits(tmp_path):
    keras.utils.set_random_seed(1)
    model = build_alexnet(num_classes=10)
    x = np.random.default_rng(0).normal(scale=50.0, size=(2, 224, 224, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "alexnet.keras")
    loaded = keras.saving.load_model(tmp_path / "alexnet.keras")
    assert loaded.count_params() == model.count_params()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)


def test_xla_forward_matches_graph(paper_model):
    x = np.random.default_rng(2).normal(scale=50.0, size=(2, 224, 224, 3)).astype("float32")
    plain = paper_model(x, training=False).numpy()
    compiled = tf.function(lambda t: paper_model(t, training=False), jit_compile=True)(x).numpy()
    np.testing.assert_allclose(compiled, plain, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", ["paper", "one_weird_trick"])
def test_sgd_steps_reduce_the_loss(variant):
    """A few of the paper's SGD steps on one fixed batch lower its loss."""
    keras.utils.set_random_seed(3)
    model = build_alexnet(num_classes=4, variant=variant, dropout_rate=0.0, hidden_bias=0.1)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(3)
    x = rng.normal(scale=60.0, size=(4, 224, 224, 3)).astype("float32")  # one image per class
    y = np.arange(4)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def data_loss():  # without the L2 penalty, which model.evaluate would add
        return float(cross_entropy(y, model.predict(x, verbose=0)))

    before = data_loss()
    model.fit(x, y, batch_size=4, epochs=8, verbose=0)
    after = data_loss()
    # N(0, 0.01) makes the first steps slow (the reason Caffe moved biases to 0.1): ask
    # for a clear drop, not convergence.
    assert np.isfinite(after) and after < before - 0.05, (before, after)


def test_mixed_bfloat16_logits_are_float32():
    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_alexnet(num_classes=10)
        assert model.get_layer("conv2").compute_dtype == "bfloat16"
        assert model.get_layer("conv2").kernel.dtype == "float32"
        logits = model(np.ones((2, 224, 224, 3), "float32"))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert logits.dtype == "float32"
    assert np.all(np.isfinite(logits.numpy()))
