"""Tests of alexnet_tf.export on a small stand-in classifier (the export takes any Keras model)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import data, export
from tiny_dataset import write_jpeg

LABELS = [f"label {c}" for c in range(7)]


def small_classifier(num_classes=7, image_size=224):
    """Crops -> logits that depend on colour and layout, so the preprocessing matters."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(4, 8, strides=8, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = small_classifier()
    base = str(tmp_path_factory.mktemp("export"))
    path = export.export_saved_model(model, base, labels=LABELS)
    return model, base, path, tf.saved_model.load(path)


def expected_probabilities(model, image):
    return tf.nn.softmax(model(data.preprocess_for_eval(image)[tf.newaxis])).numpy()


def test_layout_is_tf_serving_versioned_and_complete(exported):
    _, base, path, _ = exported
    assert path == os.path.join(base, "1")
    assert sorted(os.listdir(base)) == ["1"]  # no staging folder left behind
    assert {"saved_model.pb", "variables", "assets"} <= set(os.listdir(path))
    with open(os.path.join(path, "assets", export.LABELS_ASSET)) as f:
        assert f.read().splitlines() == LABELS
    assert export.next_version(base) == 2
    assert export.next_version(os.path.join(base, "missing")) == 1


def test_serving_default_takes_image_bytes_and_returns_named_outputs(exported, tmp_path):
    model, _, _, loaded = exported
    signature = loaded.signatures[export.SERVING_SIGNATURE]
    (name, spec), = signature.structured_input_signature[1].items()
    assert (name, spec.dtype, spec.shape.as_list()) == ("image_bytes", tf.string, [None])
    jpeg = write_jpeg(tmp_path / "a.jpg", 300, 451)
    png = tf.io.encode_png(tf.io.decode_jpeg(jpeg)).numpy()
    out = signature(image_bytes=tf.constant([jpeg, png]))
    assert {k: (v.dtype, v.shape.as_list()) for k, v in out.items()} == {
        "probabilities": (tf.float32, [2, 7]), "top_k_classes": (tf.int32, [2, 5]),
        "top_k_scores": (tf.float32, [2, 5]), "top_k_labels": (tf.string, [2, 5])}
    expected = expected_probabilities(model, tf.io.decode_jpeg(jpeg))
    np.testing.assert_allclose(out["probabilities"].numpy()[0], expected[0], atol=1e-6)
    np.testing.assert_allclose(out["probabilities"].numpy()[1], expected[0], atol=1e-6)  # same pixels
    order = np.argsort(-expected[0])[:5]
    assert out["top_k_classes"].numpy()[0].tolist() == order.tolist()
    assert out["top_k_labels"].numpy()[0].astype(str).tolist() == [LABELS[c] for c in order]


def test_predict_images_takes_uint8_or_float32_pixels_of_any_size(exported):
    model, _, _, loaded = exported
    pixels = np.random.default_rng(1).integers(0, 256, size=(2, 260, 300, 3)).astype(np.uint8)
    expected = np.concatenate([expected_probabilities(model, p) for p in pixels])
    as_uint8 = loaded.predict_images(tf.constant(pixels))["probabilities"].numpy()
    as_float = loaded.signatures[export.PIXELS_SIGNATURE](images=tf.constant(pixels, tf.float32))
    np.testing.assert_allclose(as_uint8, expected, atol=1e-6)
    np.testing.assert_allclose(as_float["probabilities"].numpy(), expected, atol=1e-4)
    assert int(loaded.image_size.numpy()) == 224 and int(loaded.num_classes.numpy()) == 7
    crops = tf.stack([data.preprocess_for_eval(p) for p in pixels])
    np.testing.assert_allclose(loaded.logits(crops).numpy(), model(crops).numpy(), atol=1e-5)


def test_versions_count_up_and_labels_default_to_class_numbers(tmp_path):
    model = small_classifier(num_classes=3)
    base = str(tmp_path)
    first = export.export_saved_model(model, base)
    second = export.export_saved_model(model, base)
    assert (first, second) == (os.path.join(base, "1"), os.path.join(base, "2"))
    assert export.export_saved_model(model, base, version=7) == os.path.join(base, "7")
    loaded = tf.saved_model.load(second)
    out = loaded.predict_images(tf.zeros([1, 240, 240, 3], tf.uint8))
    assert out["top_k_classes"].shape == (1, 3)  # top-k stops at the number of classes
    assert sorted(out["top_k_labels"].numpy()[0].astype(str)) == ["0", "1", "2"]
    with pytest.raises(ValueError, match="already exists"):
        export.export_saved_model(model, base, version=2)
    with pytest.raises(ValueError, match="2 labels for a model with 3 classes"):
        export.export_saved_model(model, base, labels=["a", "b"])
