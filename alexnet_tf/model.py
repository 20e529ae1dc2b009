"""AlexNet as a Keras functional model: `build_alexnet` and the table of variants.

References:
- "paper": Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional
  Neural Networks", NIPS 2012 (the two-tower network, LRN, groups=2, overlapping pooling).
- "one_weird_trick": Krizhevsky, "One weird trick for parallelizing convolutional neural
  networks", 2014; the layout of torchvision's `alexnet` (64-192-384-256-256, no LRN, no
  groups, adaptive average pool to 6x6).
- "caffe": Caffe's `models/bvlc_alexnet/deploy.prototxt` (BVLC), whose Caffe2 conversion is
  the ONNX model zoo's bvlc_alexnet: the paper's layers without input padding, Caffe's LRN
  (k=1) and Caffe's rounded-up pooling. `alexnet_tf.weights.importers` loads those weights into it.

Layer order and weight layout (for mapping pretrained weights from other frameworks):
every convolution is `conv{i}` with a kernel of shape (kh, kw, in_channels // groups,
out_channels) (TensorFlow HWIO; PyTorch/Caffe/ONNX OIHW kernels map with
`w.transpose(2, 3, 1, 0)`, grouped ones too, because both frameworks cut the output axis
into contiguous groups) and a bias; dense layers are `fc6`, `fc7`, `fc8` with kernels
(in, out) (PyTorch Linear weights map with `w.T`). `flatten` is channels-last: fc6's input
row for (y, x, c) is `(y * 6 + x) * 256 + c`, where PyTorch's is `(c * 6 + y) * 6 + x`, so
fc6's rows must be permuted when importing channels-first weights.

Dropout (no weights, so no effect on the layout) follows the reference of each variant:
`paper` and `caffe` apply it to the outputs of fc6 and fc7 (flatten -> fc6 -> ReLU ->
dropout6 -> fc7 -> ReLU -> dropout7 -> fc8: paper section 4.2, Caffe's drop6/drop7);
`one_weird_trick` to their inputs, as torchvision's classifier (flatten -> dropout6 -> fc6 ->
ReLU -> dropout7 -> fc7 -> ReLU -> fc8).
The dropout layers are `ReplicaDropout`: Keras' Dropout with masks that differ between the
replicas and workers of a tf.distribute strategy (Keras' own drew the same mask on all of
them); `.keras` files saved with `keras.layers.Dropout` still load.

Imported weights expect their own input convention (Caffe: BGR minus a mean pixel;
torchvision: RGB in [0, 1] normalised by mean/std). `build_alexnet(input_conversion=...)`
puts an `InputConversion` layer first that converts this project's input into that one, so
the model still takes what `alexnet_tf.data.pipelines` and the serving signatures produce, and the
`.keras` config records the convention.
"""

import dataclasses

import keras

from alexnet_tf.layers import GroupedConv2D, InputConversion, LocalResponseNormalization, ReplicaDropout


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One convolution stage: conv (+ReLU), optional LRN, optional max pool."""

    filters: int
    kernel_size: int
    strides: int
    padding: int  # explicit zero padding on each side, in pixels (PyTorch/Caffe style)
    groups: int
    bias_init: float  # the paper's bias 1 for conv2/4/5 is a variant fact, see below
    lrn: bool
    pool: bool


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    convs: tuple
    fc_units: tuple  # hidden fully-connected layers (fc6, fc7)
    fc_bias_init: float
    weight_init: str  # "paper": N(0, 0.01); "torch": PyTorch's default uniform fan-in init
    adaptive_pool: bool  # torchvision's AdaptiveAvgPool2d((6, 6)) before the classifier
    # LocalResponseNormalization arguments overriding the paper's (TF convention: alpha not
    # divided by the window size).
    lrn_params: dict = dataclasses.field(default_factory=dict)
    # Caffe's pooling: output size rounded up, the last window running past the bottom/right
    # edge (padded here; exact because pooled activations are >= 0 after ReLU).
    ceil_mode_pool: bool = False
    hidden_bias: float = 1.0  # the "bias 1" layers' default when build_alexnet gets none
    # Where dropout sits: False drops the outputs of fc6 and fc7 (the paper's section 4.2 and
    # Caffe's drop6/drop7 after relu6/relu7); True drops the inputs of fc6 and fc7 (pool5's
    # features and fc6's output), torchvision's order.
    dropout_before_fc: bool = False


VARIANTS = {
    # docs/paper.md's table: input zero-padded by 2 (a 224 crop then behaves as the 227 crop
    # Caffe uses), LRN after the ReLU of conv1/conv2 and before pooling, groups=2 where the
    # two GPUs did not talk (conv2, conv4, conv5), bias 1 in conv2/4/5 and fc6/fc7.
    "paper": VariantSpec(
        convs=(
            ConvSpec(96, 11, 4, 2, 1, 0.0, lrn=True, pool=True),
            ConvSpec(256, 5, 1, 2, 2, 1.0, lrn=True, pool=True),
            ConvSpec(384, 3, 1, 1, 1, 0.0, lrn=False, pool=False),
            ConvSpec(384, 3, 1, 1, 2, 1.0, lrn=False, pool=False),
            ConvSpec(256, 3, 1, 1, 2, 1.0, lrn=False, pool=True),
        ),
        fc_units=(4096, 4096),
        fc_bias_init=1.0,
        weight_init="paper",
        adaptive_pool=False,
    ),
    # torchvision.models.alexnet: conv1 stride 4 pad 2, then 5/2, 3/1, 3/1, 3/1.
    "one_weird_trick": VariantSpec(
        convs=(
            ConvSpec(64, 11, 4, 2, 1, 0.0, lrn=False, pool=True),
            ConvSpec(192, 5, 1, 2, 1, 0.0, lrn=False, pool=True),
            ConvSpec(384, 3, 1, 1, 1, 0.0, lrn=False, pool=False),
            ConvSpec(256, 3, 1, 1, 1, 0.0, lrn=False, pool=False),
            ConvSpec(256, 3, 1, 1, 1, 0.0, lrn=False, pool=True),
        ),
        fc_units=(4096, 4096),
        fc_bias_init=0.0,
        weight_init="torch",
        adaptive_pool=True,
        dropout_before_fc=True,
    ),
    # Caffe's bvlc_alexnet: the paper's layers (same 60,965,224 parameters) on 227x227 crops
    # without padding (the ONNX zoo's copy takes 224x224, which the rounded-up pool1 brings
    # back to 27x27), LRN with k=1 and alpha 1e-4 divided by n=5 (Caffe's convention), and
    # Caffe's 0.1 where the paper has bias 1.
    "caffe": VariantSpec(
        convs=(
            ConvSpec(96, 11, 4, 0, 1, 0.0, lrn=True, pool=True),
            ConvSpec(256, 5, 1, 2, 2, 1.0, lrn=True, pool=True),
            ConvSpec(384, 3, 1, 1, 1, 0.0, lrn=False, pool=False),
            ConvSpec(384, 3, 1, 1, 2, 1.0, lrn=False, pool=False),
            ConvSpec(256, 3, 1, 1, 2, 1.0, lrn=False, pool=True),
        ),
        fc_units=(4096, 4096),
        fc_bias_init=1.0,
        weight_init="paper",
        adaptive_pool=False,
        lrn_params={"depth_radius": 2, "bias": 1.0, "alpha": 1e-4 / 5, "beta": 0.75},
        ceil_mode_pool=True,
        hidden_bias=0.1,
    ),
}


def _pad_for_ceil_mode(x, pool_size, strides, name):
    """Zero-pads the bottom/right so a valid max pool gives Caffe's rounded-up output size.

    Caffe's pooling output is ceil((n - k) / s) + 1 where TensorFlow's valid pooling gives
    floor(...) + 1. Zeros are only exact because AlexNet pools ReLU (and LRN of ReLU)
    outputs, which are >= 0.
    """
    height, width = x.shape[1:3]
    if height is None or width is None:
        raise ValueError("build_alexnet: Caffe's rounded-up pooling needs a static input height and width.")
    extra = [-(-(n - pool_size) // strides) * strides + pool_size - n for n in (height, width)]
    if not any(extra):
        return x
    return keras.layers.ZeroPadding2D(((0, extra[0]), (0, extra[1])), name=name)(x)


def pytorch_kernel_initializer():
    """PyTorch's default for Conv2d/Linear weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    That is kaiming_uniform with a=sqrt(5), i.e. Keras' VarianceScaling(1/3, fan_in, uniform).
    """
    return keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform")


def build_alexnet(
    num_classes=1000,
    variant="paper",
    input_shape=(224, 224, 3),
    dropout_rate=0.5,
    weight_decay=5e-4,
    weight_init_stddev=0.01,
    hidden_bias=None,
    lrn_params=None,
    name=None,
    input_conversion=None,
    kernel_initializer=None,
    include_top=True,
):
    """Builds AlexNet as a functional Keras model that outputs float32 logits.

    Args:
        num_classes: number of output classes (fc8 width).
        variant: "paper" (NIPS 2012, 60,965,224 parameters at 1000 classes),
            "one_weird_trick" (torchvision's layout, 61,100,840 parameters) or "caffe"
            (Caffe's bvlc_alexnet, 60,965,224 parameters).
        input_shape: (height, width, 3) of the input images, channels-last. The "paper"
            and "caffe" variants need at least 224x224 for their 6x6 pool5 (Caffe itself
            used 227x227); "one_weird_trick" pools adaptively to 6x6 like torchvision and
            accepts 63x63 and up.
        dropout_rate: the paper's 0.5; 0 disables dropout. "paper" and "caffe" drop the
            outputs of fc6 and fc7 (fc6 -> ReLU -> dropout -> fc7 -> ReLU -> dropout -> fc8,
            layers `dropout6`, `dropout7`); "one_weird_trick" drops their inputs as
            torchvision does (dropout -> fc6 -> ReLU -> dropout -> fc7 -> ReLU -> fc8).
        weight_decay: the paper's weight decay `wd`, added to the gradient as `wd * w` on
            every conv and dense kernel (an L2 penalty of `wd / 2 * sum(w**2)` in the
            loss, i.e. Keras' `L2(wd / 2)`); 0 disables it (e.g. to use a decoupled
            decay from the optimizer instead). Biases are not decayed.
        weight_init_stddev: stddev of the N(0, s) kernel initialiser of the "paper"
            variant (0.01 in the paper).
        hidden_bias: bias initial value of conv2/4/5, fc6 and fc7 in the "paper" and
            "caffe" variants; None keeps the variant's (the paper's 1.0; Caffe found 1 can
            stall learning and used 0.1).
        lrn_params: dict overriding LocalResponseNormalization's arguments
            (depth_radius, bias, alpha, beta); None keeps the variant's values (the paper's,
            or Caffe's k=1, alpha=1e-4/5 for "caffe").
        name: model name; defaults to "alexnet_<variant>".
        input_conversion: None (the model takes this project's input as it is), or a dict
            of `InputConversion` arguments: a first layer `input_conversion` then converts
            the input into the convention of imported weights (see `alexnet_tf.weights.importers`).
        kernel_initializer: None keeps the variant's kernel initialiser; a Keras
            initialiser (or its name) replaces it, e.g. "zeros" when weights are about to be
            loaded (drawing 61 M random numbers takes seconds on a CPU).
        include_top: False stops after `pool5` (before one_weird_trick's adaptive pool): the
            model then maps images to the convolutional trunk's maps (N, h, w, 256) in the
            compute dtype, and `num_classes` and `dropout_rate` do not apply.

    Returns:
        An uncompiled `keras.Model` mapping float images (N, H, W, 3) to float32 logits
        (N, num_classes), whatever the global dtype policy (the trunk's maps with
        include_top=False).
    """
    if variant not in VARIANTS:
        raise ValueError(f"build_alexnet: unknown variant {variant!r}; choose one of {sorted(VARIANTS)}.")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"build_alexnet: num_classes must be a positive integer, got {num_classes!r}.")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"build_alexnet: dropout_rate must be in [0, 1), got {dropout_rate!r}.")
    if weight_decay < 0:
        raise ValueError(f"build_alexnet: weight_decay must be >= 0, got {weight_decay!r}.")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"build_alexnet: input_shape must be (height, width, 3), got {input_shape!r}.")
    spec = VARIANTS[variant]
    min_size = 63 if spec.adaptive_pool else 224
    if any(s is not None and s < min_size for s in input_shape[:2]):
        raise ValueError(
            f"build_alexnet: variant {variant!r} needs input height and width >= {min_size}, "
            f"got {input_shape[:2]}."
        )

    regularizer = keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None
    if kernel_initializer is not None:
        kernel_init = lambda: keras.initializers.get(kernel_initializer)  # noqa: E731
    elif spec.weight_init == "paper":
        kernel_init = lambda: keras.initializers.RandomNormal(0.0, weight_init_stddev)  # noqa: E731
    else:
        kernel_init = pytorch_kernel_initializer
    biased = spec.hidden_bias if hidden_bias is None else float(hidden_bias)
    lrn_kwargs = {**spec.lrn_params, **(lrn_params or {})}

    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    if input_conversion is not None:
        # float32 whatever the policy: mean and 1/std scaling lose digits in 16 bits.
        x = InputConversion(**input_conversion, dtype="float32", name="input_conversion")(x)
    for i, conv in enumerate(spec.convs, start=1):
        # Stride-1 convolutions with (k - 1) / 2 padding are exactly "same"; conv1's
        # 2-pixel input padding is not, so it stays an explicit ZeroPadding2D.
        same = conv.strides == 1 and 2 * conv.padding == conv.kernel_size - 1
        if conv.padding and not same:
            x = keras.layers.ZeroPadding2D(conv.padding, name=f"pad{i}")(x)
        bias_value = biased if (conv.bias_init and spec.weight_init == "paper") else conv.bias_init
        x = GroupedConv2D(
            conv.filters,
            conv.kernel_size,
            groups=conv.groups,
            strides=conv.strides,
            padding="same" if same else "valid",
            activation="relu",
            kernel_initializer=kernel_init(),
            bias_initializer=keras.initializers.Constant(bias_value),
            kernel_regularizer=regularizer,
            name=f"conv{i}",
        )(x)
        if conv.lrn:
            x = LocalResponseNormalization(**lrn_kwargs, name=f"lrn{i}")(x)
        if conv.pool:
            if spec.ceil_mode_pool:
                x = _pad_for_ceil_mode(x, 3, 2, name=f"poolpad{i}")
            x = keras.layers.MaxPooling2D(3, strides=2, name=f"pool{i}")(x)
    if not include_top:
        return keras.Model(inputs, x, name=name or f"alexnet_{variant}")
    if spec.adaptive_pool:
        x = keras.layers.AdaptiveAveragePooling2D((6, 6), name="avgpool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    fc_bias = biased if (spec.fc_bias_init and spec.weight_init == "paper") else spec.fc_bias_init
    for i, units in enumerate(spec.fc_units, start=6):
        if dropout_rate and spec.dropout_before_fc:
            x = ReplicaDropout(dropout_rate, name=f"dropout{i}")(x)
        x = keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=kernel_init(),
            bias_initializer=keras.initializers.Constant(fc_bias),
            kernel_regularizer=regularizer,
            name=f"fc{i}",
        )(x)
        if dropout_rate and not spec.dropout_before_fc:
            x = ReplicaDropout(dropout_rate, name=f"dropout{i}")(x)
    x = keras.layers.Dense(
        num_classes,
        kernel_initializer=kernel_init(),
        bias_initializer="zeros",
        kernel_regularizer=regularizer,
        name="fc8",
    )(x)
    # Softmax lives in the loss; logits leave the model in float32 under any policy so the
    # loss and metrics are computed in full precision.
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name or f"alexnet_{variant}")


# What `--trainable` (and `set_trainable`) lets train; every other layer with weights is frozen.
HEAD_LAYER = "fc8"  # the classifier that a new label set replaces
TRAINABLE_LAYERS = {"all": None, "fc": ("fc6", "fc7", "fc8"), "head": (HEAD_LAYER,)}


def set_trainable(model, trainable):
    """Freezes every layer with weights except those `trainable` names ("all", "fc" or "head").

    Frozen layers' variables leave `model.trainable_variables`, so they get no gradient, no
    optimizer slot, no update and no weight decay. AlexNet's layers with weights (convolutions,
    dense layers) compute the same in training and inference (there is no batch
    normalisation), so a frozen layer is exactly its inference self; dropout has no weights and
    is not frozen (Keras' `trainable` does not change it).
    """
    if trainable not in TRAINABLE_LAYERS:
        raise ValueError(f"trainable must be one of {sorted(TRAINABLE_LAYERS)}, got {trainable!r}.")
    names = TRAINABLE_LAYERS[trainable]
    for layer in model.layers:
        if layer.weights:
            layer.trainable = names is None or layer.name in names


def variant_of(model):
    """The `VARIANTS` key of a model `build_alexnet` made (with or without its top), or None.

    Read from the layers, not the model's name: the variants differ in what computes
    (one_weird_trick has no LRN; the paper pads the input by 2 pixels in `pad1`, Caffe does not).
    """
    names = {layer.name for layer in model.layers}
    if not {f"conv{i}" for i in range(1, 6)} <= names:
        return None
    if "lrn1" not in names:
        return "one_weird_trick"
    return "paper" if "pad1" in names else "caffe"


def input_conversion_of(model):
    """The `input_conversion` argument that rebuilds `model`'s InputConversion layer, or None.

    Lists and floats, as JSON holds them: equal dicts mean the same conversion.
    """
    for layer in model.layers:
        if isinstance(layer, InputConversion):
            config = layer.get_config()
            return {key: config[key] for key in ("input_mean", "channel_order", "scale", "mean", "std")}
    return None


def normalize_input_conversion(input_conversion):
    """`input_conversion` (InputConversion arguments, or None) as `input_conversion_of` returns it."""
    if input_conversion is None:
        return None
    return input_conversion_of(keras.Sequential([InputConversion(**input_conversion)]))
