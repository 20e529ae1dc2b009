"""Tests of alexnet_tf.applications: AlexNet() in keras.applications' conventions, preprocess_input and
decode_predictions, and the weight matching behind `weights=` (alexnet_tf.weights.pretrained).

One saved model serves every weights test: torchvision's layout at 95 x 95 with 3 classes and
torchvision's input convention, as python -m alexnet_tf.import_weights would write it, saved as a `.keras`
file and as a training checkpoint the way the trainer writes one.
"""

import io
import json
import os
import shutil
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf import config, model
from alexnet_tf.data import preprocessing
from alexnet_tf.weights import onnx_zoo, pretrained, torchvision_state
from alexnet_tf.weights.checkpointing import (
    CHECKPOINT_SUBDIR,
    MODEL_SPEC_FILENAME,
    Checkpointer,
    check_model_spec,
    load_model,
    model_weights,
    restore_model,
)

SIZE, CLASSES = 95, 3


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(source model, its .keras path, its model dir) with random weights."""
    root = tmp_path_factory.mktemp("weights")
    keras.utils.set_random_seed(1)
    source = model.build_alexnet(
        num_classes=CLASSES,
        variant="one_weird_trick",
        input_shape=(SIZE, SIZE, 3),
        input_conversion=torchvision_state.TORCHVISION_INPUT,
    )
    keras_path = str(root / "imported.keras")
    source.save(keras_path)
    model_dir = str(root / "run")
    write_checkpoint(model_dir, model_weights(source), model.input_conversion_of(source))
    return source, keras_path, model_dir


def write_checkpoint(model_dir, variables, input_conversion):
    """Writes `variables` ({path: variable}) as the trainer writes a checkpoint, its model spec beside it."""
    checkpoint_dir = os.path.join(model_dir, CHECKPOINT_SUBDIR)
    spec = {
        "variant": "one_weird_trick",
        "num_classes": CLASSES,
        "image_size": SIZE,
        "input_conversion": input_conversion,
    }
    check_model_spec(checkpoint_dir, spec, write=True)
    Checkpointer(tf.train.Checkpoint(model=variables), checkpoint_dir, True, 1).save(7)


def _assert_same_weights(expected, actual, layers=None):
    mine = {v.path: v.numpy() for v in actual.weights}
    theirs = {v.path: v.numpy() for v in expected.weights if layers is None or v.path.split("/")[0] in layers}
    assert sorted(mine) == sorted(theirs)
    for path, value in theirs.items():
        assert np.array_equal(mine[path], value), path


def test_the_trainable_choices_are_the_models():
    assert set(config.TRAINABLE) == set(model.TRAINABLE_LAYERS)


def test_no_top_is_the_trunk_to_pool5_and_pooling_makes_it_a_vector():
    zeros = dict(kernel_initializer="zeros")  # shapes and counts only: skip drawing 61 M numbers
    trunk = alexnet_tf.AlexNet(include_top=False, **zeros)
    assert trunk.output_shape == (None, 6, 6, 256)
    # conv1..conv5 of the paper: 96*363+96 + 256*1200+256 + 384*2304+384 + 384*1728+384 + 256*1728+256
    assert trunk.count_params() == 2_334_080
    assert [layer.name for layer in trunk.layers if layer.weights] == [f"conv{i}" for i in range(1, 6)]
    for pooling in ("avg", "max"):
        pooled = alexnet_tf.AlexNet(include_top=False, pooling=pooling, **zeros)
        assert pooled.output_shape == (None, 256) and pooled.count_params() == 2_334_080
    # torchvision's layout at 128 x 128: pool5 is 3 x 3 (the adaptive pool belongs to the top).
    small = alexnet_tf.AlexNet(
        include_top=False, variant="one_weird_trick", input_shape=(128, 128, 3), **zeros
    )
    assert small.output_shape == (None, 3, 3, 256) and small.count_params() == 2_469_696
    free = alexnet_tf.AlexNet(include_top=False, pooling="max", input_shape=(None, None, 3), **zeros)
    assert free(np.zeros((1, 300, 260, 3), np.float32)).shape == (1, 256)

    full = alexnet_tf.AlexNet(**zeros)
    assert full.count_params() == 60_965_224 and full.output_shape == (None, 1000)
    ten = alexnet_tf.AlexNet(classes=10, classifier_activation="softmax", **zeros)
    assert ten.count_params() == 60_965_224 - 4097 * 990
    names = [layer.name for layer in ten.layers]
    assert {f"conv{i}" for i in range(1, 6)} | {"fc6", "fc7", "fc8"} <= set(names)
    assert names[-1] == "predictions" and ten.output.dtype == "float32"


def test_weights_from_a_keras_file_or_a_checkpoint_load_exactly(saved):
    source, keras_path, model_dir = saved
    images = preprocessing.subtract_mean(np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)))
    expected = source(images, training=False).numpy()
    for path in (keras_path, model_dir):
        loaded = alexnet_tf.AlexNet(weights=path)  # variant, classes, size and convention: the weights'
        assert model.variant_of(loaded) == "one_weird_trick" and loaded.output_shape == (None, CLASSES)
        assert model.input_conversion_of(loaded) == model.input_conversion_of(source)
        _assert_same_weights(source, loaded)
        np.testing.assert_array_equal(loaded(images, training=False).numpy(), expected)

    trunk = alexnet_tf.AlexNet(include_top=False, pooling="max", weights=model_dir)
    _assert_same_weights(source, trunk, layers={f"conv{i}" for i in range(1, 6)})
    assert trunk.output_shape == (None, 256)
    probabilities = alexnet_tf.AlexNet(weights=model_dir, classes=CLASSES, classifier_activation="softmax")
    np.testing.assert_allclose(probabilities(images).numpy().sum(axis=1), 1.0, atol=1e-6)


def test_contradicting_arguments_and_unusable_weights_raise_clear_value_errors(saved, tmp_path):
    _, _, model_dir = saved
    cases = [
        (dict(weights=model_dir, classes=10), f"classes=10 but weights={model_dir!r} have classes=3"),
        (dict(weights=model_dir, variant="paper"), "variant='paper' but weights="),
        (dict(weights=model_dir, input_conversion=onnx_zoo.CAFFE_INPUT), "input_conversion="),
        (dict(weights="imagenet"), "python -m alexnet_tf.import_weights"),
        (dict(weights=str(tmp_path / "missing.keras")), "no such file"),
        (dict(weights=str(tmp_path)), "no checkpoint in"),
        (dict(pooling="avg"), "pooling applies to include_top=False"),
        (dict(include_top=False, pooling="sum"), "pooling must be None, 'avg' or 'max'"),
        (dict(include_top=False, classifier_activation="softmax"), "classifier_activation applies to"),
    ]
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc8")])
    dense.save(tmp_path / "dense.keras")
    cases.append((dict(weights=str(tmp_path / "dense.keras")), "are not an AlexNet"))
    for arguments, message in cases:
        with pytest.raises(ValueError) as raised:
            alexnet_tf.AlexNet(**arguments)
        assert message in str(raised.value), arguments
        assert "\n" not in str(raised.value)


def test_a_weight_of_another_shape_is_named_with_both_shapes():
    # fc6 takes pool5's maps flattened: 6*6*256 rows at 224 x 224, 7*7*256 at 256 x 256 (paper variant).
    at_224 = model.build_alexnet(num_classes=5, kernel_initializer="zeros")
    at_256 = model.build_alexnet(num_classes=5, input_shape=(256, 256, 3), kernel_initializer="zeros")
    before = at_256.get_layer("conv1").kernel.numpy().copy()
    at_224.get_layer("conv1").kernel.assign(np.ones((11, 11, 3, 96), np.float32))
    with pytest.raises(
        ValueError, match=r"w: fc6/kernel has shape \(9216, 4096\) there but \(12544, 4096\) here"
    ):
        pretrained.copy_weights(at_224, at_256, where="w")
    np.testing.assert_array_equal(at_256.get_layer("conv1").kernel.numpy(), before)  # nothing assigned
    copied = pretrained.copy_weights(at_224, at_256, skip=("fc6",))
    assert "fc6/kernel" not in copied and "conv1/kernel" in copied
    assert at_256.get_layer("conv1").kernel.numpy().min() == 1.0


def test_assign_weights_names_the_source_and_the_first_missing_weights_and_assigns_nothing():
    target = model.build_alexnet(
        num_classes=CLASSES,
        variant="one_weird_trick",
        input_shape=(SIZE, SIZE, 3),
        kernel_initializer="zeros",
    )
    values = {v.path: np.ones(v.shape, np.float32) for v in target.weights}
    for path in ("fc8/bias", "fc7/bias", "conv2/kernel", "conv1/bias", "conv1/kernel"):
        del values[path]
    with pytest.raises(config.ConfigError) as raised:
        pretrained.assign_weights(target, values, where="f.npz")
    assert str(raised.value) == (
        "f.npz: no weight conv1/kernel there (shape (11, 11, 3, 64) here); "
        "nor conv1/bias, conv2/kernel, fc7/bias and 1 more"
    )
    assert all(not v.numpy().any() for v in target.weights)  # nothing assigned
    assert (
        len(pretrained.assign_weights(target, values, where="f.npz", skip=("conv1", "conv2", "fc7", "fc8")))
        == 8
    )


def test_a_checkpoint_without_every_weight_is_refused_in_one_line(saved, tmp_path):
    """Not loaded with zeros where a weight is missing, nor an AssertionError (TensorFlow's restore)."""
    source, _, model_dir = saved
    partial = {path: v for path, v in model_weights(source).items() if path != "fc8/bias"}
    write_checkpoint(str(tmp_path / "partial"), partial, model.input_conversion_of(source))
    prefix = str(tmp_path / "partial" / CHECKPOINT_SUBDIR / "ckpt-7")
    with pytest.raises(config.ConfigError) as raised:
        restore_model(str(tmp_path / "partial"))
    assert str(raised.value).startswith(f"{prefix}: no weight fc8/bias there (shape (3,) here)")
    with pytest.raises(ValueError) as raised:
        alexnet_tf.AlexNet(weights=str(tmp_path / "partial"))
    assert f"{prefix}: no weight fc8/bias there" in str(raised.value) and "\n" not in str(raised.value)

    # A model spec that describes another model than the checkpoint holds.
    for name, claim, message in (
        ("classes", {"num_classes": 4}, "fc8/kernel has shape (4096, 3) there but (4096, 4) here"),
        (
            "variant",
            {"variant": "paper", "image_size": 224},
            "conv1/kernel has shape (11, 11, 3, 64) there but (11, 11, 3, 96) here",
        ),
    ):
        other = tmp_path / name
        shutil.copytree(model_dir, other)
        spec_path = other / CHECKPOINT_SUBDIR / MODEL_SPEC_FILENAME
        spec_path.write_text(json.dumps({**json.loads(spec_path.read_text()), **claim}))
        with pytest.raises(config.ConfigError) as raised:
            load_model(str(other))
        assert message in str(raised.value) and "\n" not in str(raised.value), name
        assert "model_spec.json beside it" in str(raised.value), name


def _rewrite_weights(keras_path, out, edit):
    """Copies a .keras file with `edit(h5py.File)` applied to its model.weights.h5."""
    with zipfile.ZipFile(keras_path) as archive, zipfile.ZipFile(out, "w") as copy:
        for item in archive.namelist():
            blob = archive.read(item)
            if item == "model.weights.h5":
                buffer = io.BytesIO(blob)
                with h5py.File(buffer, "a") as h5:
                    edit(h5)
                blob = buffer.getvalue()
            copy.writestr(item, blob)
    return str(out)


@keras.saving.register_keras_serializable("test_applications")
class Nested(keras.layers.Layer):
    """A layer holding a layer in a list inside a list: Keras saves it in a nested container."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [[keras.layers.Dense(2, kernel_initializer="zeros", name="inner")]]

    def build(self, input_shape):
        self.blocks[0][0].build(input_shape)

    def call(self, inputs):
        return self.blocks[0][0](inputs)


def test_a_keras_file_without_every_weight_is_refused_in_one_line(saved, tmp_path):
    _, keras_path, _ = saved
    not_zip = tmp_path / "notes.keras"
    not_zip.write_text("plain text")

    def drop_fc8_bias(h5):
        # Keras files name layer groups by class ("dense_2"), not by layer: fc8's has its kernel shape.
        (group,) = [
            g for g in h5["layers"].values() if g["vars"].get("0", np.zeros(0)).shape == (4096, CLASSES)
        ]
        del group["vars/1"]

    damaged = _rewrite_weights(keras_path, tmp_path / "no_fc8_bias.keras", drop_fc8_bias)
    # Keras 3.15 loads this one with a warning only: the inner layer keeps its zeros.
    inputs = keras.Input((3,))
    nested = keras.Model(inputs, Nested(name="nested")(inputs))
    nested.get_layer("nested").blocks[0][0].kernel.assign(np.ones((3, 2), np.float32))
    nested.save(tmp_path / "nested.keras")
    old_layout = _rewrite_weights(
        tmp_path / "nested.keras",
        tmp_path / "old_layout.keras",
        lambda h5: h5.__delitem__(
            "layers/nested/blocks"
        ),  # as older Keras wrote it, without container groups
    )
    cases = {
        str(not_zip): f"{not_zip} is not a Keras file (not a zip archive)",
        damaged: f"{damaged}: cannot load it (weights of fc8 not read: Layer 'fc8' expected 2 variables",
        old_layout: f"{old_layout}: Keras left weights of the model unread (Skipping nested container",
    }
    for path, message in cases.items():
        with pytest.raises(config.ConfigError) as raised:
            load_model(path)
        assert str(raised.value).startswith(message) and "\n" not in str(raised.value), path
    with pytest.raises(ValueError, match="is not a Keras file"):
        alexnet_tf.AlexNet(weights=str(not_zip))


def test_preprocess_input_is_the_evaluation_crop_and_mean():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (2, 227, 227, 3), dtype=np.uint8)
    out = alexnet_tf.preprocess_input(batch)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, batch.astype(np.float32) - np.float32(preprocessing.MEAN_RGB))
    assert tf.is_tensor(alexnet_tf.preprocess_input(tf.constant(batch)))

    photos = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((300, 400, 3), (256, 256, 3))]
    cropped = alexnet_tf.preprocess_input(photos, image_size=SIZE)
    assert cropped.shape == (2, SIZE, SIZE, 3)
    for photo, crop in zip(photos, cropped):
        np.testing.assert_array_equal(crop, preprocessing.preprocess_for_eval(photo, SIZE).numpy())
    np.testing.assert_array_equal(alexnet_tf.preprocess_input(photos[1], image_size=SIZE), cropped[1:])
    as_tensor = alexnet_tf.preprocess_input(tf.constant(photos[1][np.newaxis]), image_size=SIZE)
    np.testing.assert_array_equal(as_tensor.numpy(), cropped[1:])


def test_decode_predictions_ranks_and_labels_like_the_serving_signature(tmp_path):
    probabilities = np.array([[0.1, 0.3, 0.3, 0.3], [0.7, 0.1, 0.15, 0.05]], np.float32)
    rows = alexnet_tf.decode_predictions(probabilities, top=3)
    assert [c for _, _, c in rows[0]] == [1, 2, 3]  # ties: the lower class index first, as tf.math.top_k
    assert rows[1][0] == ("0", pytest.approx(0.7), 0)
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{c}\tn0000000{c}\tthing {c}\n" for c in range(4)))
    rows = alexnet_tf.decode_predictions(probabilities, top=9, labels=str(labels))
    assert len(rows[1]) == 4  # at most the classes there are
    assert rows[1][:2] == [
        ("n00000000 thing 0", pytest.approx(0.7), 0),
        ("n00000002 thing 2", pytest.approx(0.15), 2),
    ]
    with pytest.raises(ValueError, match="3 labels for 4 classes"):
        alexnet_tf.decode_predictions(probabilities, labels=["a", "b", "c"])


def test_preprocess_input_and_decode_predictions_name_a_bad_argument_in_a_value_error():
    """Not TensorFlow's InvalidArgumentError from inside, nor a silent broadcast of the mean."""
    bad_images = [
        (
            np.zeros((4, 5)),
            {},
            "images must be one image [H, W, 3] or a batch [N, H, W, 3] of RGB pixels, got shape (4, 5)",
        ),
        (np.zeros((4, 3)), {}, "got shape (4, 3)"),  # [H, 3] would broadcast against the mean
        (tf.zeros((2, 8, 8, 4)), {}, "got shape (2, 8, 8, 4)"),
        (np.zeros((4, 5)), {"image_size": SIZE}, "got shape (4, 5)"),
        (
            [np.zeros((40, 50, 3), np.uint8), np.zeros((40, 50))],
            {"image_size": SIZE},
            "images[1] must be one image [H, W, 3] of RGB pixels, got shape (40, 50)",
        ),
    ]
    for images, kwargs, message in bad_images:
        with pytest.raises(ValueError) as raised:
            alexnet_tf.preprocess_input(images, **kwargs)
        assert type(raised.value) is ValueError and message in str(raised.value), message
    probabilities = np.full((1, 4), 0.25, np.float32)
    for top in (-1, 0, 2.5, "3", True):
        with pytest.raises(ValueError) as raised:
            alexnet_tf.decode_predictions(probabilities, top=top)
        assert type(raised.value) is ValueError
        assert str(raised.value) == f"decode_predictions: top must be an int >= 1, got {top!r}."
    assert len(alexnet_tf.decode_predictions(probabilities, top=np.int64(2))[0]) == 2
