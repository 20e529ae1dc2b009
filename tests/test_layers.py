"""Tests of alexnet_tf.layers against NumPy references of the formulas."""

import os
import subprocess
import sys
import textwrap

import keras
from keras_roundtrip import assert_layer_roundtrip
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import hardware, layers
from alexnet_tf.layers import GroupedConv2D, LocalResponseNormalization


@pytest.fixture
def policy():
    """Sets a global dtype policy for one test and restores float32 after it."""
    previous = keras.config.dtype_policy()
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy(previous)


def lrn_reference(a, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75):
    """docs/paper.md's formula, literally, in float64."""
    a = a.astype(np.float64)
    n_channels = a.shape[-1]
    out = np.empty_like(a)
    for i in range(n_channels):
        lo, hi = max(0, i - depth_radius), min(n_channels - 1, i + depth_radius)
        denom = (bias + alpha * np.sum(a[..., lo : hi + 1] ** 2, axis=-1)) ** beta
        out[..., i] = a[..., i] / denom
    return out


def conv2d_reference(x, kernel, stride, padding):
    """Plain NumPy NHWC/HWIO convolution ("valid" or "same"), float64."""
    x = x.astype(np.float64)
    kernel = kernel.astype(np.float64)
    kh, kw, _, cout = kernel.shape
    n, h, w, _ = x.shape
    if padding == "same":
        out_h, out_w = -(-h // stride), -(-w // stride)
        pad_h = max((out_h - 1) * stride + kh - h, 0)
        pad_w = max((out_w - 1) * stride + kw - w, 0)
        x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    else:
        out_h, out_w = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, out_h, out_w, cout))
    for i in range(out_h):
        for j in range(out_w):
            patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j, :] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out


def grouped_reference(x, kernel, bias, groups, stride, padding):
    """`groups` independent convolutions on contiguous channel slices, concatenated."""
    xs = np.split(x, groups, axis=-1)
    ks = np.split(kernel, groups, axis=-1)
    out = np.concatenate([conv2d_reference(a, k, stride, padding) for a, k in zip(xs, ks)], axis=-1)
    return out + bias


# --- LocalResponseNormalization -------------------------------------------------------


def test_lrn_defaults_are_the_papers():
    config = LocalResponseNormalization().get_config()
    assert (config["depth_radius"], config["bias"], config["alpha"], config["beta"]) == (2, 2.0, 1e-4, 0.75)


LRN_CASES = [{}, {"depth_radius": 1, "bias": 1.0, "alpha": 2e-3, "beta": 0.5}, {"depth_radius": 0}]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("kwargs", LRN_CASES)
def test_lrn_matches_numpy_float32(kwargs, training):
    # ReLU-like magnitudes (up to ~60) make the alpha * sum term matter, not just `bias`.
    a = np.abs(np.random.default_rng(1).normal(scale=30.0, size=(2, 5, 7, 16))).astype("float32")
    got = LocalResponseNormalization(**kwargs)(a, training=training)
    assert got.dtype == "float32"
    np.testing.assert_allclose(np.asarray(got), lrn_reference(a, **kwargs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", LRN_CASES)
def test_lrn_training_gradient_matches_core_op(kwargs):
    """The hand-written backward pass equals TensorFlow's LRNGrad of the same formula."""
    rng = np.random.default_rng(8)
    a = tf.constant(rng.normal(scale=30.0, size=(2, 4, 5, 12)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(2, 4, 5, 12)).astype("float32"))
    layer = LocalResponseNormalization(**kwargs)
    config = layer.get_config()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(a)
        ours = tf.reduce_sum(layer(a, training=True) * upstream)
        core = tf.reduce_sum(
            upstream
            * tf.nn.local_response_normalization(
                a, config["depth_radius"], config["bias"], config["alpha"], config["beta"]
            )
        )
    np.testing.assert_allclose(
        tape.gradient(ours, a).numpy(), tape.gradient(core, a).numpy(), rtol=1e-5, atol=1e-6
    )


def test_lrn_under_mixed_bfloat16_computes_in_float32(policy):
    policy("mixed_bfloat16")
    layer = LocalResponseNormalization()
    a = np.abs(np.random.default_rng(2).normal(scale=40.0, size=(2, 6, 6, 32)))
    a_bf16 = tf.cast(tf.constant(a, tf.float32), tf.bfloat16)
    got = layer(a_bf16, training=True)
    assert got.dtype == tf.bfloat16
    inference = layer(a_bf16, training=False)
    np.testing.assert_array_equal(tf.cast(inference, tf.float32).numpy(), tf.cast(got, tf.float32).numpy())
    # The float32 computation rounded once to bfloat16 is what a float32-internal layer
    # returns; computing the sum of squares in bfloat16 would drift by several ulps.
    expected = tf.cast(
        tf.constant(lrn_reference(tf.cast(a_bf16, tf.float32).numpy()), tf.float32), tf.bfloat16
    )
    got32 = tf.cast(got, tf.float32).numpy()
    exp32 = tf.cast(expected, tf.float32).numpy()
    np.testing.assert_allclose(got32, exp32, rtol=2.0**-7)
    assert np.mean(got32 == exp32) > 0.99


def test_lrn_bfloat16_training_gradient_is_float32_math_rounded_once(policy):
    """The bf16 kernels upcast inside XLA: the gradient is LRNGrad's float32 result, rounded once."""
    policy("mixed_bfloat16")
    rng = np.random.default_rng(9)
    a = tf.cast(tf.constant(np.abs(rng.normal(scale=40.0, size=(2, 5, 5, 32))), tf.float32), tf.bfloat16)
    upstream = tf.cast(tf.constant(rng.normal(size=(2, 5, 5, 32)), tf.float32), tf.bfloat16)
    layer = LocalResponseNormalization()
    with tf.GradientTape() as tape:
        tape.watch(a)
        out = layer(a, training=True)
        loss = tf.reduce_sum(tf.cast(out, tf.float32) * tf.cast(upstream, tf.float32))
    got = tape.gradient(loss, a)
    assert out.dtype == tf.bfloat16 and got.dtype == tf.bfloat16
    a32, up32 = tf.cast(a, tf.float32), tf.cast(upstream, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(a32)
        core = tf.reduce_sum(up32 * tf.nn.local_response_normalization(a32, 2, 2.0, 1e-4, 0.75))
    expected = tf.cast(tf.cast(tape.gradient(core, a32), tf.bfloat16), tf.float32).numpy()
    got32 = tf.cast(got, tf.float32).numpy()
    np.testing.assert_allclose(got32, expected, rtol=2.0**-7, atol=1e-6)
    assert np.mean(got32 == expected) > 0.95


def test_lrn_under_mixed_bfloat16_inside_xla(policy):
    policy("mixed_bfloat16")
    layer = LocalResponseNormalization()
    a = tf.cast(tf.random.stateless_uniform((2, 4, 4, 8), seed=(1, 2), maxval=50.0), tf.bfloat16)
    eager = layer(a)
    compiled = tf.function(layer, jit_compile=True)(a)
    np.testing.assert_array_equal(tf.cast(compiled, tf.float32).numpy(), tf.cast(eager, tf.float32).numpy())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"depth_radius": -1}, "depth_radius must be an integer >= 0, got -1"),
        ({"depth_radius": 2.5}, "depth_radius must be an integer >= 0, got 2.5"),
        ({"bias": 0.0}, "bias must be > 0, got 0.0"),
        ({"alpha": -1e-4}, "alpha must be >= 0, got -0.0001"),
        ({"beta": -0.75}, "beta must be >= 0, got -0.75"),
    ],
)
def test_lrn_rejects_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LocalResponseNormalization(**kwargs)


def test_lrn_rejects_non_4d_input():
    with pytest.raises(ValueError, match="4-D channels-last"):
        LocalResponseNormalization()(np.ones((2, 3, 4), "float32"))


def test_lrn_serialisation_roundtrip(tmp_path):
    assert_layer_roundtrip(
        LocalResponseNormalization,
        {"depth_radius": 3, "bias": 1.5, "alpha": 1e-3, "beta": 0.6},
        (2, 5, 5, 12),
        tmp_path,
    )


# --- GroupedConv2D ---------------------------------------------------------------------

GROUPED_CASES = [
    # (input shape, filters, kernel, groups, stride, padding)
    ((2, 9, 9, 8), 6, 3, 2, 1, "same"),
    ((2, 11, 10, 6), 9, 5, 3, 2, "valid"),
    ((1, 7, 7, 4), 4, 1, 4, 1, "valid"),
    ((2, 8, 8, 3), 5, 3, 1, 2, "same"),
]


def _grouped_layer(filters, kernel, groups, stride, padding, input_shape, activation=None):
    layer = GroupedConv2D(
        filters,
        kernel,
        groups=groups,
        strides=stride,
        padding=padding,
        activation=activation,
        kernel_initializer="glorot_normal",
        bias_initializer="random_normal",
    )
    layer.build(input_shape)
    return layer


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("shape, filters, kernel, groups, stride, padding", GROUPED_CASES)
def test_grouped_conv_matches_per_group_convolutions(
    shape, filters, kernel, groups, stride, padding, jit_compile
):
    x = np.random.default_rng(3).normal(size=shape).astype("float32")
    layer = _grouped_layer(filters, kernel, groups, stride, padding, shape)
    fn = tf.function(layer, jit_compile=True) if jit_compile else layer
    got = np.asarray(fn(x))
    expected = grouped_reference(x, layer.kernel.numpy(), layer.bias.numpy(), groups, stride, padding)
    assert got.shape == expected.shape == layer.compute_output_shape(shape)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_grouped_conv_gradients_match_per_group_convolutions(jit_compile):
    shape, groups = (2, 9, 9, 8), 2
    x = tf.constant(np.random.default_rng(4).normal(size=shape).astype("float32"))
    layer = _grouped_layer(6, 3, groups, 1, "same", shape)
    upstream = tf.constant(np.random.default_rng(5).normal(size=(2, 9, 9, 6)).astype("float32"))

    def grads_of_layer(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * upstream)
        return tape.gradient(loss, [x, layer.kernel, layer.bias])

    def grads_of_reference(x):
        kernel, bias = tf.identity(layer.kernel), tf.identity(layer.bias)
        with tf.GradientTape() as tape:
            tape.watch([x, kernel, bias])
            xs, ks = tf.split(x, groups, axis=-1), tf.split(kernel, groups, axis=-1)
            y = tf.concat([tf.nn.conv2d(a, k, 1, "SAME") for a, k in zip(xs, ks)], axis=-1) + bias
            loss = tf.reduce_sum(y * upstream)
        return tape.gradient(loss, [x, kernel, bias])

    run = tf.function(grads_of_layer, jit_compile=True) if jit_compile else grads_of_layer
    for got, want in zip(run(x), grads_of_reference(x)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=1e-5)


def _training_step_of(layer, jit_compile=False):
    """A function returning the training output and the gradients of (x, kernel, bias); the
    kernel-gradient implementation is the one in force where it is first traced."""

    def step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        return [y, *tape.gradient(loss, [x, layer.kernel, layer.bias])]

    return tf.function(step, jit_compile=jit_compile)


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize(
    "shape, filters, kernel, groups, padding, activation",
    [
        ((2, 9, 9, 8), 6, 3, 2, "same", "relu"),
        ((2, 11, 10, 6), 9, 5, 3, "valid", "relu"),
        ((1, 8, 8, 4), 4, 4, 1, "same", None),  # even kernel: TensorFlow pads one more after
        ((2, 7, 7, 6), 6, 2, 2, "valid", "tanh"),
    ],
)
def test_gemm_filter_gradient_matches_the_native_gradient(
    shape, filters, kernel, groups, padding, activation, jit_compile
):
    layer = _grouped_layer(filters, kernel, groups, 1, padding, shape, activation)
    rng = np.random.default_rng(11)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    upstream = tf.constant(rng.normal(size=layer.compute_output_shape(shape)).astype("float32"))
    results, graph_ops = {}, {}
    for implementation in ("native", "gemm"):
        fn = _training_step_of(layer, jit_compile)
        with layers.filter_gradient_implementation(implementation):
            results[implementation] = [t.numpy() for t in fn(x, upstream)]
            graph_ops[implementation] = {
                op.type for op in fn.get_concrete_function(x, upstream).graph.get_operations()
            }
    # The gemm trace really computes the kernel gradient as a matmul over gathered patches,
    # the native one does not.
    if not jit_compile:
        assert "Conv2DBackpropFilter" in graph_ops["native"] and "MatMul" not in graph_ops["native"]
        assert "Conv2DBackpropFilter" not in graph_ops["gemm"]
        assert {"MatMul", "GatherV2"} <= graph_ops["gemm"]
    for name, native, gemm in zip(("output", "x", "kernel", "bias"), results["native"], results["gemm"]):
        np.testing.assert_allclose(gemm, native, atol=1e-5, rtol=1e-5, err_msg=name)


def test_gemm_filter_gradient_is_for_training_traces_only():
    """Inference (exports, TF Serving, Grad-CAM) traces the plain ops whatever the choice."""
    layer = GroupedConv2D(4, 3, groups=2, padding="same", activation="relu")
    layer.build((1, 6, 6, 4))
    with layers.filter_gradient_implementation("gemm"):
        fn = tf.function(lambda x: layer(x, training=False))
        graph = fn.get_concrete_function(tf.TensorSpec((1, 6, 6, 4))).graph
    assert not any(op.type in ("IdentityN", "MatMul") for op in graph.get_operations())


def test_filter_gradient_auto_picks_gemm_only_for_float32_on_avx2_onednn(monkeypatch):
    def machine(onednn=True, gpu=False, flags=("avx2", "fma")):
        monkeypatch.setattr(hardware, "onednn_enabled", lambda: onednn)
        monkeypatch.setattr(hardware, "has_gpu", lambda: gpu)
        monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))

    resolve = layers.resolve_filter_gradient_implementation
    machine()
    assert resolve("float32", name="auto") == "gemm"
    assert resolve("float32", strides=(2, 2), name="auto") == "native"
    assert resolve("float32", strides=(4, 4), name="gemm") == "native"  # stride 1 only
    assert resolve("bfloat16", name="auto") == "native"
    assert resolve("bfloat16", name="gemm") == "native"  # float32 only
    machine(onednn=False)
    assert resolve("float32", name="auto") == "native"
    machine(gpu=True)
    assert resolve("float32", name="auto") == "native"
    machine(flags=("avx2", "avx512f"))
    assert resolve("float32", name="auto") == "native"
    with pytest.raises(ValueError, match="filter gradient implementation must be one of"):
        with layers.filter_gradient_implementation("im2col"):
            pass


def test_grouped_conv_bfloat16_matches_float32(policy):
    shape = (2, 9, 9, 8)
    x = np.random.default_rng(6).normal(size=shape).astype("float32")
    layer32 = _grouped_layer(6, 3, 2, 1, "same", shape)
    policy("mixed_bfloat16")
    layer16 = GroupedConv2D(6, 3, groups=2, padding="same")
    layer16.build(shape)
    layer16.set_weights(layer32.get_weights())
    got = layer16(x)
    assert got.dtype == tf.bfloat16 and layer16.kernel.dtype == "float32"
    np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), layer32(x).numpy(), atol=0.05, rtol=0.02)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"filters": 6, "kernel_size": 3, "groups": 4}, r"filters \(6\) must be divisible by groups \(4\)"),
        ({"filters": 0, "kernel_size": 3}, "filters must be a positive integer, got 0"),
        ({"filters": 4, "kernel_size": 3, "groups": 0}, "groups must be a positive integer, got 0"),
        (
            {"filters": 4, "kernel_size": 0},
            r"kernel_size must be a positive int or a pair of them, got \(0, 0\)",
        ),
        (
            {"filters": 4, "kernel_size": 3, "padding": "causal"},
            "padding must be 'valid' or 'same', got 'causal'",
        ),
    ],
)
def test_grouped_conv_rejects_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GroupedConv2D(**kwargs)


def test_grouped_conv_rejects_indivisible_input_channels():
    with pytest.raises(ValueError, match=r"input channels \(5\) must be known and divisible by groups \(2\)"):
        GroupedConv2D(4, 3, groups=2)(np.ones((1, 6, 6, 5), "float32"))


def test_grouped_conv_serialisation_roundtrip(tmp_path):
    assert_layer_roundtrip(
        GroupedConv2D,
        {
            "filters": 8,
            "kernel_size": (3, 5),
            "groups": 2,
            "strides": 2,
            "padding": "same",
            "activation": "relu",
            "bias_initializer": "ones",
            "kernel_regularizer": keras.regularizers.L2(1e-3),
        },
        (2, 9, 9, 6),
        tmp_path,
    )
    config = GroupedConv2D(8, 3, groups=2).get_config()
    assert (config["filters"], config["kernel_size"], config["groups"]) == (8, (3, 3), 2)


def test_layers_in_saved_model_run_in_a_fresh_process_without_xla(tmp_path):
    """A SavedModel with both layers loads and runs in a process that never uses XLA."""
    inputs = keras.Input((16, 16, 8))
    y = GroupedConv2D(8, 3, groups=2, padding="same", activation="relu")(inputs)
    y = LocalResponseNormalization()(y)
    model = keras.Model(inputs, y)
    x = np.random.default_rng(7).normal(size=(3, 16, 16, 8)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", np.asarray(model(x)))
    model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        tf.config.optimizer.set_jit(False)
        loaded = tf.saved_model.load({str(tmp_path / "saved")!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        got = loaded.serve(tf.constant(x)).numpy()
        np.testing.assert_allclose(got, np.load({str(tmp_path / "expected.npy")!r}), atol=1e-5, rtol=1e-5)
        print("OK", got.shape)
    """)
    env = dict(os.environ, TF_XLA_FLAGS="--tf_xla_auto_jit=-1", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK (3, 16, 16, 8)" in result.stdout
