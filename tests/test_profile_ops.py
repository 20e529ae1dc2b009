"""tools/profile_ops.py on a real profiler trace of a small Keras model's training steps."""

import os
import subprocess
import sys

from conftest import REPO
import keras
import numpy as np
import tensorflow as tf


def test_profile_ops_sums_a_real_trace_by_layer_and_direction(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, name="conv1", activation="relu")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="fc8")(x))
    variables = model.trainable_variables
    images = tf.constant(np.random.default_rng(0).normal(size=(32, 16, 16, 3)).astype(np.float32))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(images, training=True)))
        return tape.gradient(loss, variables)

    step()
    tf.profiler.experimental.start(str(tmp_path))
    for _ in range(2):
        step()
    tf.profiler.experimental.stop()

    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "profile_ops.py"), str(tmp_path), "--steps=2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {
        line.split("|")[1].strip(): float(line.split("|")[2])
        for line in result.stdout.splitlines()
        if line.startswith("| ") and line.count("|") == 4 and "ms/step" not in line
    }
    assert rows.get("conv1 forward", 0) > 0 and rows.get("conv1 backward", 0) > 0, result.stdout
    assert "fc8 forward" in rows, result.stdout


def test_profile_ops_names_the_directory_without_a_trace(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "profile_ops.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert f"no *.xplane.pb under {tmp_path}" in result.stderr
