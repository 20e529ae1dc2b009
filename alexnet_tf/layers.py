"""Generic Keras layers AlexNet needs and Keras lacks: local response normalisation and a
grouped 2-D convolution that runs everywhere (CPU/GPU, eager/graph, XLA on or off,
SavedModel, ONNX).

Nothing here knows AlexNet's shape; `alexnet_tf.model` composes these layers.
"""

import keras
import tensorflow as tf

_FLOAT16_TYPES = ("float16", "bfloat16")


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
        if training:
            return self._lrn_for_training(inputs)
        # Inference uses the one core op that every consumer knows (TF Serving without XLA,
        # the ONNX `LRN` op through tf2onnx, cuDNN on GPU).
        y = tf.nn.local_response_normalization(
            tf.cast(inputs, tf.float32), depth_radius=self.depth_radius, bias=self.bias,
            alpha=self.alpha, beta=self.beta)
        return tf.cast(y, inputs.dtype)

    def _lrn_for_training(self, x):
        """The same formula with an XLA-compiled forward and hand-written backward pass.

        TensorFlow's `LRNGrad` CPU kernel is a scalar loop: for conv1's output at batch
        128 it took several times longer than the forward pass (BUILD.md, "Performance
        notes"). With d = bias + alpha * window_sum(a**2) and b = a * d**-beta:

            dL/da = g * d**-beta - 2 * alpha * beta * a * window_sum(g * b / d)

        (the window is symmetric, so the transposed window sum is the same window sum).
        Both kernels take and return the compute dtype and upcast inside the XLA fusion,
        so a 16-bit policy moves 16-bit tensors through memory (25% faster than casting
        around the kernels under mixed_bfloat16, BUILD.md) while the arithmetic stays float32.
        """
        radius, bias, alpha, beta = self.depth_radius, self.bias, self.alpha, self.beta

        @tf.custom_gradient
        def lrn(a):
            def grad(g):
                return _lrn_backward(a, g, radius, bias, alpha, beta)

            return _lrn_forward(a, radius, bias, alpha, beta), grad

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
    tf2onnx cannot convert; this layer calls `tf.nn.conv2d` with a grouped kernel instead
    (BUILD.md, "Grouped convolution", has the measurements behind that choice against a
    split-and-concat implementation).

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
            raise ValueError(
                f"GroupedConv2D: filters ({filters}) must be divisible by groups ({groups})."
            )
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

    def call(self, inputs):
        kernel = tf.cast(self.kernel, inputs.dtype)
        # One Conv2D op whose kernel has in_channels // groups input channels: TensorFlow
        # infers the group count from the shapes (oneDNN on CPU, cuDNN on GPU,
        # feature_group_count in XLA, the `group` attribute in ONNX). No XLA wrapper, so
        # it runs in any SavedModel consumer.
        outputs = tf.nn.conv2d(inputs, kernel, strides=self.strides, padding=self.padding.upper())
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, outputs.dtype))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, _conv_length(h, self.kernel_size[0], self.strides[0], self.padding),
                _conv_length(w, self.kernel_size[1], self.strides[1], self.padding), self.filters)

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
    padded = tf.pad(x, [[0, 0]] * (len(x.shape) - 1) + [[radius, radius]])
    return tf.add_n([padded[..., i:i + channels] for i in range(2 * radius + 1)])


@tf.function(jit_compile=True)
def _lrn_forward(a, radius, bias, alpha, beta):
    x = tf.cast(a, tf.float32)
    d = bias + alpha * _channel_window_sum(x * x, radius)
    return tf.cast(x * tf.exp(-beta * tf.math.log(d)), a.dtype)  # d ** -beta, with d >= bias > 0


@tf.function(jit_compile=True)
def _lrn_backward(a, g, radius, bias, alpha, beta):
    x, g32 = tf.cast(a, tf.float32), tf.cast(g, tf.float32)
    d = bias + alpha * _channel_window_sum(x * x, radius)
    scale = tf.exp(-beta * tf.math.log(d))
    grad = g32 * scale - (2.0 * alpha * beta) * x * _channel_window_sum(g32 * x * scale / d, radius)
    return tf.cast(grad, a.dtype)
