"""Generic Keras layers AlexNet needs and Keras lacks: local response normalisation, a
grouped 2-D convolution that runs everywhere (CPU with or without oneDNN, GPU, eager/graph,
XLA on or off, SavedModel, TF Serving, ONNX), the input-convention conversion that
lets imported weights take this project's preprocessed images, and a dropout whose masks
differ between the replicas of a tf.distribute strategy.

Nothing here knows AlexNet's shape; `alexnet_tf.model` composes these layers.

Every layer runs on each Keras 3 backend (TensorFlow, JAX, PyTorch) with the same results.
On the TensorFlow backend they keep their TensorFlow-specific kernels (the XLA-compiled LRN
and its hand-written gradient, the grouped convolution chosen for the running kernels,
stateless per-replica dropout); on the others they compute with `keras.ops` and the
backend's own gradients. TensorFlow is imported only when a TensorFlow path runs, so the
layers do not need it installed under `KERAS_BACKEND=jax` or `torch`.
"""

import contextlib
import functools
import importlib

import keras
from keras import ops
import numpy as np

from alexnet_tf import hardware


class _TensorFlowOnFirstUse:
    """The `tensorflow` module, imported when an attribute is first read.

    Only the TensorFlow backend's code paths (and `replica_id`/`replica_seed`) read it, so
    importing this module under another Keras backend neither imports nor needs TensorFlow.
    """

    def __getattr__(self, name):
        return getattr(importlib.import_module("tensorflow"), name)


tf = _TensorFlowOnFirstUse()


def _tensorflow_backend():
    """True when Keras runs on TensorFlow (fixed when Keras is imported)."""
    return keras.backend.backend() == "tensorflow"


_FLOAT16_TYPES = ("float16", "bfloat16")

GROUPED_CONV_IMPLEMENTATIONS = ("auto", "native", "split")
_grouped_conv_implementation = "auto"


@contextlib.contextmanager
def grouped_conv_implementation(name):
    """Chooses how `GroupedConv2D` layers traced inside the block compute (not thread-safe).

    - "auto" (the default): "native" where the running kernels have a grouped convolution
      (a GPU, or oneDNN on the CPU in float32, or in bfloat16 on CPUs with native bfloat16),
      else "split".
    - "native": one Conv2D op with a grouped kernel. Fast, but TensorFlow's Eigen CPU kernels
      (oneDNN off) have neither its gradient nor its Conv2D+BiasAdd+ReLU fusion, and oneDNN
      has no bfloat16 filter gradient for it on CPUs without native bfloat16.
    - "split": one Conv2D per group and a concat: runs on every kernel family. Exports use it
      (`alexnet_tf.export`), so a SavedModel written anywhere serves anywhere.

    The choice is made when a function is traced: eager calls and new traces inside the block
    see it, functions traced before it keep theirs. TensorFlow backend only: JAX and PyTorch
    run every grouped convolution as one op.
    """
    global _grouped_conv_implementation
    if name not in GROUPED_CONV_IMPLEMENTATIONS:
        raise ValueError(
            f"grouped convolution implementation must be one of "
            f"{', '.join(GROUPED_CONV_IMPLEMENTATIONS)}; got {name!r}"
        )
    saved, _grouped_conv_implementation = _grouped_conv_implementation, name
    try:
        yield
    finally:
        _grouped_conv_implementation = saved


def resolve_grouped_conv_implementation(dtype, name=None):
    """The implementation ("native" or "split") a grouped convolution in `dtype` uses here (TensorFlow)."""
    name = _grouped_conv_implementation if name is None else name
    if name != "auto":
        return name
    if hardware.has_gpu():  # cuDNN has grouped convolutions in every precision
        return "native"
    if not hardware.onednn_enabled():
        return "split"
    native_dtype = tf.as_dtype(dtype) == tf.float32 or (
        tf.as_dtype(dtype) == tf.bfloat16 and hardware.cpu_has_native_bfloat16()
    )
    return "native" if native_dtype else "split"


FILTER_GRADIENT_IMPLEMENTATIONS = ("auto", "native", "gemm")
_filter_gradient_implementation = "auto"


@contextlib.contextmanager
def filter_gradient_implementation(name):
    """Chooses how `GroupedConv2D` layers traced inside the block compute their kernel gradient
    in training (not thread-safe).

    - "auto" (the default): "gemm" for stride-1 float32 convolutions on CPUs without AVX-512
      running oneDNN's kernels, else "native".
    - "native": TensorFlow's Conv2DBackpropFilter. On AVX2-only CPUs oneDNN runs it with its
      older direct kernel (`jit:avx2`, not the brgemm kernels its forward and input-gradient
      passes use); inside AlexNet's train step it reached about half of a same-run float32 GEMM.
    - "gemm": the gradient as one matrix multiply per group: one Gather collects the k*k
      windows of the input into image patches (N*H*W rows of kh*kw*C/groups values), which
      are multiplied by the output gradient. The same sums in another order (float32 rounding
      apart), at the cost of the patches' memory while the layer's gradient is computed
      (about 0.2-0.6 GB per layer at batch 128). float32, stride 1, a bias and spatial sizes
      known when traced only; other layers stay native. Works with either grouped-convolution
      implementation.

    Only training traces (`training=True`) use "gemm"; inference, exports and TF Serving run
    the same forward ops either way. Chosen when a function is traced, as
    `grouped_conv_implementation`. TensorFlow backend only. Measurements:
    docs/design/performance-notes.md.
    """
    global _filter_gradient_implementation
    if name not in FILTER_GRADIENT_IMPLEMENTATIONS:
        raise ValueError(
            f"filter gradient implementation must be one of "
            f"{', '.join(FILTER_GRADIENT_IMPLEMENTATIONS)}; got {name!r}"
        )
    saved, _filter_gradient_implementation = _filter_gradient_implementation, name
    try:
        yield
    finally:
        _filter_gradient_implementation = saved


def resolve_filter_gradient_implementation(dtype, strides=(1, 1), name=None):
    """The kernel-gradient implementation ("native" or "gemm") a convolution uses in training here.

    "gemm" is for float32 stride-1 convolutions: anything else runs "native", whatever is asked
    (16-bit sums over N*H*W terms lose precision that oneDNN's kernel keeps in float32).
    """
    name = _filter_gradient_implementation if name is None else name
    if tuple(strides) != (1, 1) or tf.as_dtype(dtype) != tf.float32:
        return "native"
    if name != "auto":
        return name
    if hardware.has_gpu() or not hardware.onednn_enabled():
        return "native"
    # Measured on an AVX2 EPYC only; AVX-512 CPUs have oneDNN's brgemm kernels for this gradient.
    return "native" if hardware.cpu_has_avx512() else "gemm"


def _same_padding(kernel):
    """(before, after) padding of a stride-1 "same" convolution."""
    return (kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2


def _patch_rows(height, width, out_height, out_width, kh, kw):
    """Row indices into a [height * width] image of each output position's kh*kw window.

    Ordered (output row, output column, i, j): gathering them from an image flattened to
    [N, height * width, C] gives [N, out_height * out_width * kh * kw, C], which reshapes to
    the patches [N * out_height * out_width, kh * kw * C] in the kernel's (i, j, channel) order.
    """
    rows = np.arange(out_height)[:, None, None, None] + np.arange(kh)[None, None, :, None]
    cols = np.arange(out_width)[None, :, None, None] + np.arange(kw)[None, None, None, :]
    return (rows * width + cols).reshape(-1).astype(np.int32)


def _filter_gradient_gemm(x, dy, kernel_shape, padding, groups):
    """Conv2DBackpropFilter of a stride-1 convolution, as one matmul over image patches per group.

    The patches come from one Gather of whole channel rows per group (1.5-1.75x faster than
    slicing the kh*kw windows and concatenating them on channels), and the matmul computes
    dy^T @ patches, whose [filters, kh*kw*cg] result is then transposed: on oneDNN's AVX2 GEMM
    that is up to 1.2x faster than patches^T @ dy for the grouped layers' shapes
    (docs/design/performance-notes.md).
    """
    kh, kw, cg, filters = kernel_shape
    fg = filters // groups
    if padding == "SAME":
        x = tf.pad(x, [[0, 0], _same_padding(kh), _same_padding(kw), [0, 0]])
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    rows = tf.constant(_patch_rows(height, width, dy.shape[1], dy.shape[2], kh, kw))
    image = tf.reshape(x, [-1, height * width, channels])

    def group_gradient(group_image, group_dy):
        patches = tf.reshape(tf.gather(group_image, rows, axis=1), [-1, kh * kw * cg])
        return tf.transpose(tf.matmul(tf.reshape(group_dy, [-1, fg]), patches, transpose_a=True))

    grad = _per_group(group_gradient, groups, image, dy)
    return tf.reshape(grad, [kh, kw, cg, filters])


def _per_group(fn, groups, *tensors):
    """fn applied to the g-th channel slice of each tensor, for each group, concatenated on channels."""
    slices = [tf.split(t, groups, axis=-1) for t in tensors]
    return tf.concat([fn(*group) for group in zip(*slices)], axis=-1)


def _conv2d(x, kernel, strides, padding, groups, split):
    """The grouped convolution, as one Conv2D with the grouped kernel or, where `split`, one per group."""
    if not split:
        # One Conv2D op whose kernel has in_channels // groups input channels: TensorFlow infers
        # the group count from the shapes (oneDNN on CPU, cuDNN on GPU, feature_group_count in
        # XLA, the `group` attribute in ONNX).
        return tf.nn.conv2d(x, kernel, strides=strides, padding=padding)
    # Group g's input channels meet group g's filters: the kernel's last axis is grouped.
    return _per_group(lambda a, k: tf.nn.conv2d(a, k, strides=strides, padding=padding), groups, x, kernel)


def _conv2d_gemm_filter_gradient(x, kernel, bias, padding, groups, relu, split):
    """relu?(conv2d(x, kernel) + bias), stride 1, whose kernel gradient is `_filter_gradient_gemm`.

    The forward ops are those of the other path (`_conv2d`, BiasAdd, Relu, which oneDNN fuses);
    the gradient is ReluGrad, Conv2DBackpropInput (per group where `split`), the bias sum and
    the patches' matmul.
    """

    def input_gradient(dy, k, a):
        return tf.raw_ops.Conv2DBackpropInput(
            input_sizes=tf.shape(a), filter=k, out_backprop=dy, strides=[1, 1, 1, 1], padding=padding
        )

    @tf.custom_gradient
    def conv(x, kernel, bias):
        y = tf.nn.bias_add(_conv2d(x, kernel, 1, padding, groups, split), bias)
        if relu:
            y = tf.nn.relu(y)

        def grad(dy):
            if relu:
                dy = tf.raw_ops.ReluGrad(gradients=dy, features=y)
            dx = _per_group(input_gradient, groups, dy, kernel, x) if split else input_gradient(dy, kernel, x)
            dw = _filter_gradient_gemm(x, dy, kernel.shape, padding, groups)
            return dx, dw, tf.reduce_sum(dy, axis=[0, 1, 2])

        return y, grad

    return conv(x, kernel, bias)


@keras.saving.register_keras_serializable(package="alexnet_tf")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalisation across channels (Krizhevsky et al. 2012, section 3.3).

    Computes, for channels-last input `a` with `N` channels:

        b[..., i] = a[..., i] / (bias + alpha * sum_{j=max(0, i-r)}^{min(N-1, i+r)} a[..., j]^2) ** beta

    with `r = depth_radius`. The defaults are the paper's values (k=2, n=5 so r=2,
    alpha=1e-4, beta=0.75). As in `tf.nn.local_response_normalization`, `alpha` is NOT
    divided by the window size; PyTorch's and Caffe's LRN divide it by `n = 2r + 1`, so
    their `alpha` is `n` times this one for the same result.

    Under a 16-bit precision policy the sum of squares is computed in float32 (it loses
    accuracy in 16 bits, and TensorFlow's LRN op has no bfloat16 kernel) and the result is
    cast back to the layer's compute dtype.

    On the TensorFlow backend inference runs TensorFlow's LRN op and training an
    XLA-compiled kernel with a hand-written gradient; on JAX and PyTorch the same formula
    runs in `keras.ops` and the backend differentiates it.

    Args:
        depth_radius: int >= 0, half-width `r` of the channel window (window size 2r+1).
        bias: float > 0, the paper's `k`.
        alpha: float >= 0, scale of the sum of squares.
        beta: float >= 0, exponent.
        **kwargs: standard Keras layer arguments (name, dtype, ...).
    """

    def __init__(self, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        if isinstance(depth_radius, bool) or not isinstance(depth_radius, int) or depth_radius < 0:
            raise ValueError(
                f"LocalResponseNormalization: depth_radius must be an integer >= 0, got {depth_radius!r}."
            )
        if not bias > 0:
            raise ValueError(f"LocalResponseNormalization: bias must be > 0, got {bias!r}.")
        if not alpha >= 0:
            raise ValueError(f"LocalResponseNormalization: alpha must be >= 0, got {alpha!r}.")
        if not beta >= 0:
            raise ValueError(f"LocalResponseNormalization: beta must be >= 0, got {beta!r}.")
        self.depth_radius = depth_radius
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"LocalResponseNormalization expects a 4-D channels-last input (N, H, W, C), "
                f"got shape {tuple(input_shape)}."
            )
        self.built = True

    def call(self, inputs, training=None):
        # The sums and powers are computed in float32 and the result returned in the compute
        # dtype: 16-bit sums of squares lose accuracy, and TF's LRN op has no bfloat16 kernel.
        if not _tensorflow_backend():
            y = _lrn(ops.cast(inputs, "float32"), self.depth_radius, self.bias, self.alpha, self.beta)
            return ops.cast(y, inputs.dtype)
        if training:
            return self._lrn_for_training(inputs)
        # Inference uses the one core op that every consumer knows (TF Serving without XLA,
        # the ONNX `LRN` op through tf2onnx, cuDNN on GPU).
        y = tf.nn.local_response_normalization(
            tf.cast(inputs, tf.float32),
            depth_radius=self.depth_radius,
            bias=self.bias,
            alpha=self.alpha,
            beta=self.beta,
        )
        return tf.cast(y, inputs.dtype)

    def _lrn_for_training(self, x):
        """The same formula with an XLA-compiled forward and hand-written backward pass.

        TensorFlow's `LRNGrad` CPU kernel is a scalar loop: for conv1's output at batch
        128 it took several times longer than the forward pass
        (docs/design/performance-notes.md). With d = bias + alpha * window_sum(a**2) and
        b = a * d**-beta:

            dL/da = g * d**-beta - 2 * alpha * beta * a * window_sum(g * b / d)

        (the window is symmetric, so the transposed window sum is the same window sum).
        Both kernels take and return the compute dtype and upcast inside the XLA fusion,
        so a 16-bit policy moves 16-bit tensors through memory (25% faster than casting
        around the kernels under mixed_bfloat16, docs/design/performance-notes.md) while the
        arithmetic stays float32.
        """
        radius, bias, alpha, beta = self.depth_radius, self.bias, self.alpha, self.beta
        lrn_forward, lrn_backward = _tf_lrn_kernels()

        @tf.custom_gradient
        def lrn(a):
            def grad(g):
                return lrn_backward(a, g, radius, bias, alpha, beta)

            return lrn_forward(a, radius, bias, alpha, beta), grad

        return lrn(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "depth_radius": self.depth_radius,
                "bias": self.bias,
                "alpha": self.alpha,
                "beta": self.beta,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="alexnet_tf")
class GroupedConv2D(keras.layers.Layer):
    """2-D convolution split into `groups` independent convolutions (AlexNet's two towers).

    Input channels are cut into `groups` contiguous slices; slice `g` is convolved with its
    own `filters // groups` kernels and the outputs are concatenated in group order. This is
    exactly PyTorch's / Caffe's `groups=` and Keras' `Conv2D(groups=...)`, and the weights
    use the same layout as Keras' grouped Conv2D: one kernel of shape
    (kh, kw, in_channels // groups, filters) whose last axis is grouped, and one bias.

    Keras' own `Conv2D(groups>1)` runs on CPU through an XLA-compiled inner function that
    tf2onnx cannot convert. This layer calls `tf.nn.conv2d` with a grouped kernel where the
    running kernels support it (cuDNN, oneDNN), and one convolution per group plus a concat
    elsewhere (TensorFlow's Eigen CPU kernels, which have no grouped gradient); see
    `grouped_conv_implementation`, docs/design/grouped-convolution.md and portability.md.
    On JAX and PyTorch it is `keras.ops.conv` with the grouped kernel, which both backends
    run as one grouped convolution (`feature_group_count`, `groups=`).

    Args:
        filters: int, total output channels; divisible by `groups`.
        kernel_size: int or (int, int).
        groups: int >= 1; the input channel count must be divisible by it.
        strides: int or (int, int).
        padding: "valid" or "same".
        activation: activation name or callable applied after the bias.
        use_bias: whether to add a bias.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer:
            as in `keras.layers.Conv2D`.
        **kwargs: standard Keras layer arguments.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        groups=1,
        strides=(1, 1),
        padding="valid",
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(f"GroupedConv2D: filters must be a positive integer, got {filters!r}.")
        if not isinstance(groups, int) or groups <= 0:
            raise ValueError(f"GroupedConv2D: groups must be a positive integer, got {groups!r}.")
        if filters % groups:
            raise ValueError(f"GroupedConv2D: filters ({filters}) must be divisible by groups ({groups}).")
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(f"GroupedConv2D: padding must be 'valid' or 'same', got {padding!r}.")
        self.filters = filters
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.groups = groups
        self.strides = _pair(strides, "strides")
        self.padding = padding
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"GroupedConv2D expects a 4-D channels-last input (N, H, W, C), got shape "
                f"{tuple(input_shape)}."
            )
        in_channels = input_shape[-1]
        if in_channels is None or in_channels % self.groups:
            raise ValueError(
                f"GroupedConv2D: input channels ({in_channels}) must be known and divisible by "
                f"groups ({self.groups})."
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, in_channels // self.groups, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        else:
            self.bias = None
        self.built = True

    def call(self, inputs, training=None):
        if not _tensorflow_backend():
            # Both backends infer the group count from the kernel's input channels.
            outputs = ops.conv(inputs, ops.cast(self.kernel, inputs.dtype), self.strides, self.padding)
            if self.use_bias:
                outputs = ops.add(outputs, ops.cast(self.bias, outputs.dtype))
            return outputs if self.activation is None else self.activation(outputs)
        kernel = tf.cast(self.kernel, inputs.dtype)
        strides, padding = self.strides, self.padding.upper()
        split = self.groups > 1 and resolve_grouped_conv_implementation(inputs.dtype) == "split"
        if (
            training
            and self.use_bias
            and inputs.shape[1] is not None
            and inputs.shape[2] is not None
            and resolve_filter_gradient_implementation(inputs.dtype, strides) == "gemm"
        ):
            relu = self.activation is keras.activations.relu
            outputs = _conv2d_gemm_filter_gradient(
                inputs, kernel, tf.cast(self.bias, inputs.dtype), padding, self.groups, relu, split
            )
            return outputs if relu or self.activation is None else self.activation(outputs)
        outputs = _conv2d(inputs, kernel, strides, padding, self.groups, split)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, outputs.dtype))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (
            n,
            _conv_length(h, self.kernel_size[0], self.strides[0], self.padding),
            _conv_length(w, self.kernel_size[1], self.strides[1], self.padding),
            self.filters,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "groups": self.groups,
                "strides": self.strides,
                "padding": self.padding,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="alexnet_tf")
class InputConversion(keras.layers.Layer):
    """Converts this project's input images into the convention of imported weights.

    The input is what `alexnet_tf.data.pipelines` produces: RGB pixels in [0, 255] minus the per-channel
    mean `input_mean`. For output channel j this layer computes

        y[..., j] = ((x[..., c] + input_mean[c]) * scale - mean[j]) / std[j]

    with c = j for `channel_order="rgb"` and c = 2 - j for "bgr"; `mean` and `std` are in the
    target's channel order and units (after `scale`). Caffe's bvlc_alexnet: "bgr", scale 1,
    its mean pixel, std 1. torchvision: "rgb", scale 1/255, mean (0.485, 0.456, 0.406), std
    (0.229, 0.224, 0.225). Computed in float32, returned in the compute dtype.

    Args:
        input_mean: 3 floats, the RGB mean already subtracted from the input ([0, 255] units).
        channel_order: "rgb" or "bgr", the order the weights expect.
        scale: float > 0, multiplies the [0, 255] pixels (1/255 for [0, 1] inputs).
        mean: 3 floats subtracted after scaling, in `channel_order`.
        std: 3 floats > 0 dividing the result, in `channel_order`.
        **kwargs: standard Keras layer arguments.
    """

    def __init__(
        self,
        input_mean=(0.0, 0.0, 0.0),
        channel_order="rgb",
        scale=1.0,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.input_mean = _triple(input_mean, "input_mean")
        self.channel_order = str(channel_order).lower()
        if self.channel_order not in ("rgb", "bgr"):
            raise ValueError(f"InputConversion: channel_order must be 'rgb' or 'bgr', got {channel_order!r}.")
        if not scale > 0:
            raise ValueError(f"InputConversion: scale must be > 0, got {scale!r}.")
        self.scale = float(scale)
        self.mean = _triple(mean, "mean")
        self.std = _triple(std, "std")
        if not all(s > 0 for s in self.std):
            raise ValueError(f"InputConversion: std must be > 0, got {std!r}.")

    def build(self, input_shape):
        if input_shape[-1] != 3:
            raise ValueError(f"InputConversion expects 3 channels last, got shape {tuple(input_shape)}.")
        self.built = True

    def call(self, inputs):
        # keras.ops on every backend: on TensorFlow the same Cast/ReverseV2/Const ops as ever.
        x = ops.cast(inputs, "float32") + ops.convert_to_tensor(self.input_mean, "float32")
        if self.channel_order == "bgr":
            x = ops.flip(x, axis=-1)
        x = (x * self.scale - ops.convert_to_tensor(self.mean, "float32")) / ops.convert_to_tensor(
            self.std, "float32"
        )
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "input_mean": list(self.input_mean),
                "channel_order": self.channel_order,
                "scale": self.scale,
                "mean": list(self.mean),
                "std": list(self.std),
            }
        )
        return config


def replica_id():
    """This replica's index among all replicas in sync (all workers'): an int32 scalar tensor.

    0 outside any strategy, in the default strategy and in a cross-replica context;
    `replica_id_in_sync_group` inside `strategy.run` of MirroredStrategy (the local device's
    index) and MultiWorkerMirroredStrategy (global: worker index * local replicas + device).
    """
    context = tf.distribute.get_replica_context()
    if context is None:
        return tf.constant(0, tf.int32)
    return tf.cast(context.replica_id_in_sync_group, tf.int32)


def replica_seed(seed):
    """This replica's seed for stateless random ops: `seed` ([2], any int dtype), replica id folded in.

    int32, as XLA needs for stateless random ops (Keras reduces its int64 seeds the same way).
    """
    seed = tf.convert_to_tensor(seed)
    if seed.dtype != tf.int32:
        seed = tf.cast(tf.math.floormod(tf.cast(seed, tf.int64), tf.int32.max - 1), tf.int32)
    return tf.random.experimental.stateless_fold_in(seed, replica_id())


@keras.saving.register_keras_serializable(package="alexnet_tf")
class ReplicaDropout(keras.layers.Dropout):
    """`keras.layers.Dropout` whose masks are independent between replicas and workers.

    Keras' Dropout draws its mask from the layer's `SeedGenerator`, whose state is a variable;
    under MirroredStrategy or MultiWorkerMirroredStrategy that variable is mirrored (its
    initial value broadcast from worker 0), so every replica drew the same mask at every step
    and N replicas dropped the same units of their N different images. This layer draws its
    mask with TensorFlow's stateless dropout from

        fold_in(seed_generator.next(), replica_id())

    so the mask is a function of (the layer's seed, how many times the layer has dropped
    before, the replica's index in sync): distinct on every replica, the same on replica 0 as
    on a single device, and reproducible wherever the seeds are (`keras.utils.set_random_seed`
    fixes the layer's seed when `seed` is None). The call count is the seed generator's
    state, which is not among the model's weights; the trainer's checkpoints hold it
    (`checkpointing.random_state`), so a resumed run continues the count and its masks are
    a function of (seed, step, replica). Arguments, config and behaviour otherwise as
    `keras.layers.Dropout`: it drops at `rate` and scales what it keeps by `1 / (1 - rate)`
    when `training`, and passes its input through otherwise. Works eagerly, in tf.function
    and under XLA. On the JAX and PyTorch backends, which have no tf.distribute replicas, it
    is Keras' Dropout.
    """

    def call(self, inputs, training=False):
        if not _tensorflow_backend():
            return super().call(inputs, training=training)
        if not (training and self.rate > 0):
            return inputs
        if self.rate == 1.0:
            return tf.zeros_like(inputs)
        return tf.nn.experimental.stateless_dropout(
            inputs,
            rate=self.rate,
            noise_shape=self._concrete_noise_shape(inputs),
            seed=replica_seed(self.seed_generator.next()),
        )

    def _concrete_noise_shape(self, inputs):
        if self.noise_shape is None:
            return tf.shape(inputs)
        shape = tf.shape(inputs)
        return [shape[i] if size is None else size for i, size in enumerate(self.noise_shape)]


def _triple(values, name):
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"InputConversion: {name} must have 3 values, got {values!r}.")
    return values


def _pair(value, name):
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(f"GroupedConv2D: {name} must be a positive int or a pair of them, got {value!r}.")
    return value


def _conv_length(size, kernel, stride, padding):
    if size is None:
        return None
    if padding == "same":
        return -(-size // stride)
    return (size - kernel) // stride + 1


def _channel_window_sum(x, radius):
    """sum_{j=i-radius}^{i+radius} x[..., j] with zeros beyond the edges, for every i."""
    channels = x.shape[-1]
    padded = ops.pad(x, [[0, 0]] * (len(x.shape) - 1) + [[radius, radius]])
    return functools.reduce(ops.add, [padded[..., i : i + channels] for i in range(2 * radius + 1)])


def _lrn(x, radius, bias, alpha, beta):
    """The LRN formula on float32 `x` in `keras.ops`, for every backend."""
    d = bias + alpha * _channel_window_sum(x * x, radius)
    return x * ops.exp(-beta * ops.log(d))  # d ** -beta, with d >= bias > 0


def _tf_inverse_powers(d, beta):
    """(d ** -beta, 1 / d) for float32 d > 0, in TensorFlow ops.

    For the paper's beta = 0.75 on CPUs without AVX-512, d ** -0.75 = rsqrt(d) * sqrt(rsqrt(d)):
    two square roots where exp(-beta * log(d)) takes two polynomial evaluations. XLA's LRN
    kernels took 13-32% less time that way on an AVX2 EPYC, within 3e-7 of the exp/log result. On
    the AVX-512 EPYC a similar square-root form was slower than exp/log (140 vs 130 ms for lrn1
    in bfloat16), so AVX-512 CPUs keep exp/log (docs/design/performance-notes.md).
    """
    if beta == 0.75 and not hardware.cpu_has_avx512():
        r = tf.math.rsqrt(d)
        return r * tf.sqrt(r), r * r
    return tf.exp(-beta * tf.math.log(d)), 1.0 / d


@functools.cache
def _tf_lrn_kernels():
    """The TensorFlow backend's XLA-compiled LRN forward and backward kernels, made on first use."""

    @tf.function(jit_compile=True)
    def lrn_forward(a, radius, bias, alpha, beta):
        x = tf.cast(a, tf.float32)
        scale, _ = _tf_inverse_powers(bias + alpha * _channel_window_sum(x * x, radius), beta)
        return tf.cast(x * scale, a.dtype)

    @tf.function(jit_compile=True)
    def lrn_backward(a, g, radius, bias, alpha, beta):
        x, g32 = tf.cast(a, tf.float32), tf.cast(g, tf.float32)
        scale, inverse = _tf_inverse_powers(bias + alpha * _channel_window_sum(x * x, radius), beta)
        grad = g32 * scale - (2.0 * alpha * beta) * x * _channel_window_sum(g32 * x * scale * inverse, radius)
        return tf.cast(grad, a.dtype)

    return lrn_forward, lrn_backward
