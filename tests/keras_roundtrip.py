"""Serialisation round-trip checks for Keras layers (the shape of keras' own
`run_class_serialization_test`, written here rather than importing private test code)."""

import json

import keras
import numpy as np


def assert_layer_roundtrip(layer_cls, init_kwargs, input_shape, tmp_path, atol=0.0):
    """Checks config, JSON and `.keras` round-trips of a layer give identical outputs.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments.
        input_shape: input shape including the batch dimension.
        tmp_path: a pathlib.Path for the `.keras` file.
        atol: allowed absolute difference of outputs after the round trip.
    """
    layer = layer_cls(**init_kwargs)
    x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    inputs = keras.Input(shape=input_shape[1:])
    model = keras.Model(inputs, layer(inputs))
    expected = np.asarray(model(x))

    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config

    revived = keras.layers.deserialize(json.loads(json.dumps(keras.layers.serialize(layer))))
    assert type(revived) is layer_cls
    assert revived.get_config() == config

    path = tmp_path / f"{layer_cls.__name__}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[-1]) is layer_cls
    np.testing.assert_allclose(np.asarray(loaded(x)), expected, atol=atol, rtol=0)
