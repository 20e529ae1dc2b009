"""MomentumSGD: Keras SGD's arithmetic through one fused kernel, interchangeable with Keras SGD."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.optim import MomentumSGD


def _train(optimizer, steps=4, seed=0):
    """A few steps on a small dense model; returns its weights and the optimizer's variables."""
    rng = np.random.default_rng(seed)
    w = tf.Variable(rng.normal(size=(6, 3)).astype(np.float32))
    b = tf.Variable(np.ones(3, np.float32))
    optimizer.build([w, b])
    x = tf.constant(rng.normal(size=(8, 6)).astype(np.float32))
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.matmul(x, w) + b)) + 5e-4 * tf.reduce_sum(w * w)
        optimizer.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b]))
    return [w.numpy(), b.numpy()], [v.numpy() for v in optimizer.variables]


@pytest.mark.parametrize("kwargs", [
    {"momentum": 0.9},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.0},
    {"momentum": 0.9, "weight_decay": 5e-4},
])
def test_momentum_sgd_matches_keras_sgd(kwargs):
    learning_rate = keras.optimizers.schedules.ExponentialDecay(0.01, 2, 0.5)
    ours, ours_slots = _train(MomentumSGD(learning_rate, **kwargs))
    keras_, keras_slots = _train(keras.optimizers.SGD(learning_rate, **kwargs))
    for got, expected in zip(ours + ours_slots, keras_ + keras_slots):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(ours[0], _train(MomentumSGD(0.0, momentum=0.9), steps=0)[0][0])  # it trained


def test_momentum_sgd_under_tf_function_matches_eager():
    def run(compiled):
        w = tf.Variable([[1.0, -2.0], [0.5, 3.0]])
        optimizer = MomentumSGD(0.1, momentum=0.9)
        optimizer.build([w])

        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(w ** 3)
            optimizer.apply_gradients([(tape.gradient(loss, w), w)])

        step = tf.function(step) if compiled else step
        for _ in range(3):
            step()
        return w.numpy()

    np.testing.assert_allclose(run(True), run(False), rtol=1e-6)


def test_keras_sgd_checkpoint_restores_into_momentum_sgd(tmp_path):
    """Checkpoints written before the fused optimizer existed still resume."""
    w = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    old = keras.optimizers.SGD(0.01, momentum=0.9)
    old.build([w])
    old.apply_gradients([(tf.ones_like(w), w)])
    path = tf.train.Checkpoint(w=w, optimizer=old).save(str(tmp_path / "ckpt"))

    w2 = tf.Variable(tf.zeros_like(w))
    new = MomentumSGD(0.01, momentum=0.9)
    new.build([w2])
    tf.train.Checkpoint(w=w2, optimizer=new).restore(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(w2.numpy(), w.numpy())
    np.testing.assert_array_equal(new.momentums[0].numpy(), old.momentums[0].numpy())
    assert int(new.iterations.numpy()) == 1


def test_momentum_sgd_config_roundtrip():
    optimizer = MomentumSGD(0.05, momentum=0.8, nesterov=True)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, MomentumSGD)
    assert restored.momentum == pytest.approx(0.8) and restored.nesterov
