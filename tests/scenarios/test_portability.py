"""What must run on every CPU TensorFlow runs on, with oneDNN's kernels on or off.

TensorFlow turns oneDNN on by default only on CPUs with AVX512_VNNI, AVX512_BF16 or AMX; its
Eigen kernels elsewhere have no grouped-convolution gradient and no fused grouped
Conv2D+BiasAdd+ReLU. The README's test command runs this file a second time with
`TF_ENABLE_ONEDNN_OPTS=0` (`-m portability`), so both kernel families pass it on any machine;
the commands run as fresh processes that inherit the setting. The commands on one trained
model are in tests/scenarios/test_portability_commands.py (two files, so that `pytest -n 2 --dist
loadfile` runs them beside these).
"""

import json
import os
import textwrap

from conftest import run_command
import keras
import numpy as np
import pytest
import tensorflow as tf
from tiny_dataset import write_tiny_dataset

from alexnet_tf import hardware, layers

pytestmark = pytest.mark.portability

ONEDNN_SETTING = os.environ.get("TF_ENABLE_ONEDNN_OPTS")


def test_the_process_runs_the_kernels_the_environment_asks_for():
    if ONEDNN_SETTING in ("0", "1"):
        assert hardware.onednn_enabled() == (ONEDNN_SETTING == "1")
    expected = "native" if hardware.onednn_enabled() or hardware.has_gpu() else "split"
    assert layers.resolve_grouped_conv_implementation(tf.float32) == expected


def test_auto_precision_is_bfloat16_only_where_it_is_native_and_onednn_runs():
    from alexnet_tf.training import devices

    if hardware.has_gpu():
        pytest.skip("on a GPU the choice follows its compute capability")
    chosen = devices.resolve_precision("auto")
    if not hardware.onednn_enabled() or not hardware.cpu_has_native_bfloat16():
        assert chosen == "float32"  # emulated bfloat16 is many times slower than float32
    else:
        assert chosen == "mixed_bfloat16"


def test_import_alone_loads_every_keras_file_the_project_writes(tmp_path):
    """A fresh process that imports nothing but `alexnet_tf` and keras: every custom layer
    (GroupedConv2D, LRN, the InputConversion of imported weights) must be registered."""
    from alexnet_tf import build_alexnet

    model = build_alexnet(
        num_classes=3,
        variant="caffe",
        input_conversion={
            "input_mean": (123.0, 117.0, 104.0),
            "channel_order": "bgr",
            "mean": (104.0, 117.0, 123.0),
        },
    )
    path = str(tmp_path / "imported.keras")
    model.save(path)
    x = np.random.default_rng(0).uniform(-100, 100, (1, 224, 224, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = model(x, training=False).numpy()
    result = run_command(
        [
            "-c",
            textwrap.dedent(f"""
        import json, numpy as np, keras, alexnet_tf
        model = keras.saving.load_model({path!r})
        print(json.dumps(model(np.load({str(tmp_path / "x.npy")!r}), training=False).numpy().tolist()))
    """),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "input_conversion" in [layer.name for layer in model.layers]
    np.testing.assert_allclose(
        json.loads(result.stdout.strip().splitlines()[-1]), expected, rtol=1e-4, atol=1e-4
    )


def _block_diagonal(kernel, groups):
    """The dense kernel equal to a grouped one: group g's filters see only group g's channels."""
    kh, kw, per_group, filters = kernel.shape
    dense = np.zeros((kh, kw, per_group * groups, filters), kernel.dtype)
    out = filters // groups
    for g in range(groups):
        dense[:, :, g * per_group : (g + 1) * per_group, g * out : (g + 1) * out] = kernel[
            ..., g * out : (g + 1) * out
        ]
    return dense


def _diagonal_blocks(dense, groups):
    """The grouped kernel inside a block-diagonal dense one (the inverse of `_block_diagonal`)."""
    per_group, out = dense.shape[2] // groups, dense.shape[3] // groups
    return np.concatenate(
        [dense[:, :, g * per_group : (g + 1) * per_group, g * out : (g + 1) * out] for g in range(groups)],
        axis=-1,
    )


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("implementation", ["auto", "split"])
def test_grouped_conv_forward_and_gradients_in_tf_function(implementation, jit_compile):
    """Against an ungrouped convolution with the equivalent block-diagonal kernel: every kernel
    family has that one, forward and backward, so it is an independent reference."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 13, 13, 8)), tf.float32)
    layer = layers.GroupedConv2D(12, 3, groups=2, padding="same", activation="relu")
    layer.build(x.shape)
    kernel = rng.normal(size=layer.kernel.shape).astype(np.float32)
    layer.kernel.assign(kernel)
    layer.bias.assign(rng.normal(size=12).astype(np.float32))
    weights = tf.constant(rng.normal(size=(2, 13, 13, 12)), tf.float32)

    @tf.function(jit_compile=jit_compile)
    def grouped(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * weights)
        return y, tape.gradient(loss, [x, layer.kernel, layer.bias])

    dense_kernel = tf.Variable(_block_diagonal(kernel, 2))

    @tf.function
    def reference(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.relu(tf.nn.conv2d(x, dense_kernel, 1, "SAME") + layer.bias)
            loss = tf.reduce_sum(y * weights)
        return y, tape.gradient(loss, [x, dense_kernel, layer.bias])

    with layers.grouped_conv_implementation(implementation):
        y, (dx, dkernel, dbias) = grouped(x)
    y_ref, (dx_ref, dkernel_ref, dbias_ref) = reference(x)
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx.numpy(), dx_ref.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        dkernel.numpy(), _diagonal_blocks(dkernel_ref.numpy(), 2), rtol=1e-4, atol=1e-3
    )
    np.testing.assert_allclose(dbias.numpy(), dbias_ref.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_paper_model_trains_in_bfloat16_in_tf_function(jit_compile):
    """mixed_bfloat16 picks the grouped convolution that this process's kernels have."""
    from alexnet_tf import build_alexnet

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        model = build_alexnet(num_classes=3, variant="paper", input_shape=(224, 224, 3))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    x = tf.random.stateless_uniform([2, 224, 224, 3], [1, 2], -100.0, 100.0)
    y = tf.constant([0, 2])

    @tf.function(jit_compile=jit_compile)
    def gradients(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        return loss, tape.gradient(loss, model.trainable_variables)

    before = [v.numpy() for v in model.trainable_variables]
    loss, grads = gradients(x, y)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    assert np.isfinite(loss.numpy())
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    conv2 = model.get_layer("conv2").kernel
    assert not np.array_equal(
        before[[v.path for v in model.trainable_variables].index(conv2.path)], conv2.numpy()
    )


def test_lrn_training_kernels_match_the_core_op_and_its_gradient():
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 5, 5, 16)) * 10, tf.float32)
    layer = layers.LocalResponseNormalization()

    @tf.function
    def both(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            ours = layer(x, training=True)
            core = tf.nn.local_response_normalization(x, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)
            w = tf.sin(x)
            ours_loss, core_loss = tf.reduce_sum(ours * w), tf.reduce_sum(core * w)
        return ours, core, tape.gradient(ours_loss, x), tape.gradient(core_loss, x)

    ours, core, d_ours, d_core = both(x)
    np.testing.assert_allclose(ours.numpy(), core.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_ours.numpy(), d_core.numpy(), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- a command


@pytest.mark.slow
def test_train_command_in_mixed_bfloat16(tmp_path):
    """Slow where bfloat16 is emulated (no AVX512_BF16/AMX, or oneDNN off), but it must work."""
    data_dir = write_tiny_dataset(tmp_path / "data", train_records=4, validation_records=2, num_classes=2)
    result = run_command(
        [
            "-m",
            "alexnet_tf.train",
            f"--data_dir={data_dir}",
            f"--model_dir={tmp_path / 'm'}",
            "--batch_size=1",
            "--train_steps=2",
            "--precision=mixed_bfloat16",
            "--noexport",  # the export the commands check is test_portability_commands.py's
        ]
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Trained 2 steps" in result.stdout
