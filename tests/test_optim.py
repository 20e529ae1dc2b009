"""MomentumSGD: Keras SGD's arithmetic through one fused kernel, interchangeable with Keras SGD."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.optim import MomentumSGD, l2_loss


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


@pytest.mark.parametrize(
    "kwargs",
    [
        {"momentum": 0.9},
        {"momentum": 0.9, "nesterov": True},
        {"momentum": 0.0},
        {"momentum": 0.9, "weight_decay": 5e-4},
    ],
)
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
                loss = tf.reduce_sum(w**3)
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
    optimizer = MomentumSGD(0.05, momentum=0.8, nesterov=True, l2=5e-4)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, MomentumSGD)
    assert restored.momentum == pytest.approx(0.8) and restored.nesterov and restored.l2 == 5e-4


def _train_with_l2(optimizer, l2_in_loss, steps=4, seed=0):
    """A kernel and a bias trained with the decay either in the optimizer or as an L2 loss."""
    rng = np.random.default_rng(seed)
    kernel = keras.Variable(rng.normal(size=(6, 3)).astype(np.float32), name="kernel")
    bias = keras.Variable(np.ones(3, np.float32), name="bias")
    optimizer.build([kernel, bias])
    x = tf.constant(rng.normal(size=(8, 6)).astype(np.float32))
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.matmul(x, kernel) + bias))
            if l2_in_loss:
                loss += l2_in_loss / 2 * tf.reduce_sum(tf.square(kernel))
        optimizer.apply_gradients(zip(tape.gradient(loss, [kernel, bias]), [kernel, bias]))
    return kernel.numpy(), bias.numpy()


@pytest.mark.parametrize(
    "kwargs", [{"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}, {"momentum": 0.0}]
)
def test_l2_in_the_update_equals_the_papers_l2_loss(kwargs):
    """v <- m v - lr (g + wd w) on kernels only: what an L2 loss wd/2 |w|^2 on the kernels gives."""
    fused = _train_with_l2(MomentumSGD(0.01, l2=0.05, **kwargs), l2_in_loss=0.0)
    reference = _train_with_l2(keras.optimizers.SGD(0.01, **kwargs), l2_in_loss=0.05)
    undecayed = _train_with_l2(MomentumSGD(0.01, **kwargs), l2_in_loss=0.0)
    np.testing.assert_allclose(fused[0], reference[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused[1], reference[1], rtol=1e-5, atol=1e-6)
    assert np.abs(fused[0] - undecayed[0]).max() > 1e-4  # the decay did something


def test_l2_loss_is_half_wd_times_the_kernels_squared_norm():
    kernel = keras.Variable(np.full((2, 2), 3.0, np.float32), name="kernel")
    bias = keras.Variable(np.full(2, 100.0, np.float32), name="bias")
    assert float(l2_loss(0.1, [kernel, bias])) == pytest.approx(0.5 * 0.1 * 4 * 9.0)
    assert float(l2_loss(0.0, [kernel, bias])) == 0.0


def test_negative_l2_is_refused():
    with pytest.raises(ValueError, match="l2 must be >= 0, got -0.1"):
        MomentumSGD(0.01, momentum=0.9, l2=-0.1)


def test_trainer_reports_the_loss_with_its_decay_term_and_applies_the_decay():
    """Total loss = cross-entropy + wd/2 |kernels|^2 before the update; the step leaves the decay
    term out (a square-and-sum over 61 M weights), `weight_decay_loss` gives it at log time."""
    from alexnet_tf.config import TrainConfig
    from alexnet_tf.training import step as steps

    keras.utils.set_random_seed(0)
    config = TrainConfig(num_classes=10, batch_size=2, dropout_rate=0.0, precision="float32")
    strategy = tf.distribute.get_strategy()
    state = steps.build_state(config, strategy, 10, steps_per_epoch=10, total_steps=10, loss_scaling=False)
    assert state.model.losses == []  # no regulariser: the optimizer owns the decay
    assert state.optimizer.l2 == config.weight_decay
    kernels = [v for v in state.model.trainable_variables if v.name == "kernel"]
    expected_l2 = 0.5 * config.weight_decay * sum(float(np.sum(np.square(k.numpy()))) for k in kernels)
    rng = np.random.default_rng(0)
    images = rng.normal(scale=50.0, size=(2, 224, 224, 3)).astype(np.float32)
    labels = np.array([1, 7], np.int32)
    iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
    train = steps.make_train_function(strategy, state, 2, jit_compile=False, loss_scaling=False)
    decay = steps.weight_decay_loss(state)
    assert decay == pytest.approx(expected_l2, rel=1e-5)
    sums = train(iterator, tf.constant(1), tf.constant(0.0)).numpy()
    cross_entropy, loss = sums[0] / 2, sums[1]
    assert loss == pytest.approx(cross_entropy, rel=1e-6)  # no decay term computed in the step


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_lr_multipliers_scale_one_layers_whole_step_under_a_strategy(momentum):
    """Caffe's lr_mult: {"head": 10} makes head's step (gradient and decay) 10 times the
    others', per replica."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])  # distributed variables and merge_call
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(4, 5)).astype(np.float32))

    def one_step(**kwargs):
        with strategy.scope():
            optimizer = MomentumSGD(0.01, momentum=momentum, l2=0.05, **kwargs)
            model = keras.Sequential(
                [keras.Input((5,)), keras.layers.Dense(3, name="body"), keras.layers.Dense(2, name="head")]
            )
            model.set_weights(initial)
            optimizer.build(model.trainable_variables)

        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(model(x)))
            variables = model.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

        strategy.run(tf.function(step))
        return {
            "/".join(v.path.split("/")[-2:]): v.numpy() - start for v, start in zip(model.weights, initial)
        }

    initial = [rng.normal(size=shape).astype(np.float32) for shape in ((5, 3), (3,), (3, 2), (2,))]
    scaled, plain = one_step(lr_multipliers={"head": 10}), one_step()
    for path in plain:
        factor = 10.0 if path.startswith("head/") else 1.0
        assert np.abs(plain[path]).min() > 0, path
        np.testing.assert_allclose(scaled[path], factor * plain[path], rtol=1e-5, err_msg=path)
    config = MomentumSGD(0.01, lr_multipliers={"head": 10}).get_config()
    assert MomentumSGD.from_config(config).lr_multipliers == {"head": 10.0}
    with pytest.raises(ValueError, match="lr_multipliers must be > 0"):
        MomentumSGD(0.01, lr_multipliers={"head": 0})
