"""A small classifier the serving tests export in seconds, and its class names."""

import keras

LABELS = [f"label {c}" for c in range(7)]


def small_classifier(num_classes=7, image_size=224, fc7=True):
    """Crops -> logits that depend on colour and layout, so the preprocessing matters.

    With `fc7`, a hidden layer named like AlexNet's gives the export its `features` signature;
    it is the identity on the pooled (non-negative) activations, so the logits stay the same.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(4, 8, strides=8, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if fc7:
        x = keras.layers.Dense(4, activation="relu", kernel_initializer="identity", name="fc7")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))
