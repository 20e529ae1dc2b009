"""Caffe's bvlc_alexnet as the ONNX model zoo ships it, checked node by node and loaded.

    model = import_onnx("bvlcalexnet-12.onnx")  # -> variant "caffe"

The graph must be one chain from its single input, in this order: Conv, Relu, LRN, MaxPool,
Conv, Relu, LRN, MaxPool, Conv, Relu, Conv, Relu, Conv, Relu, MaxPool, Reshape|Flatten, then
three fully connected layers (Gemm with transB 0 or 1, or MatMul + Add) with Relu after the
first two; Dropout/Identity anywhere and a final Softmax are ignored. Conv and Gemm weights and
biases must be initialisers (or Constant nodes); every attribute that changes the result
(strides, pads, groups, LRN size/alpha/beta/bias, pool size, stride, padding or ceil_mode) is
checked against the "caffe" variant. The model starts with an `input_conversion` layer
(`CAFFE_INPUT`: BGR minus the mean pixel of Caffe's ilsvrc_2012_mean.npy). `onnx` and
`onnxruntime` are imported only when a file needs them.
"""

import dataclasses

import numpy as np

from alexnet_tf.data import preprocessing
from alexnet_tf.model import VARIANTS
from alexnet_tf.weights import pretrained
from alexnet_tf.weights.mapping import (
    DEFAULT_CLASSES,
    WeightImportError,
    build_target,
    check_file,
    check_shape,
    keras_values,
    require,
    source_shapes,
)

# Per-channel mean of Caffe's ilsvrc_2012_mean.npy (BGR, [0, 255]): the mean pixel Caffe's
# own classifier subtracts for bvlc_alexnet.
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
CAFFE_INPUT = {
    "input_mean": preprocessing.MEAN_RGB,
    "channel_order": "bgr",
    "scale": 1.0,
    "mean": CAFFE_MEAN_BGR,
    "std": (1.0, 1.0, 1.0),
}

_ONNX_KINDS = {
    "Conv": "conv",
    "Relu": "relu",
    "LRN": "lrn",
    "MaxPool": "pool",
    "Reshape": "flatten",
    "Flatten": "flatten",
    "Gemm": "dense",
    "MatMul": "dense",
    "Softmax": "softmax",
}
_ONNX_IGNORED = ("Dropout", "Identity")
_KIND_OPS = {
    "conv": "a Conv",
    "relu": "a Relu",
    "lrn": "an LRN",
    "pool": "a MaxPool",
    "flatten": "a Reshape or Flatten",
    "dense": "a Gemm (or MatMul + Add)",
}


@dataclasses.dataclass
class _OnnxLayer:
    kind: str  # a value of _ONNX_KINDS
    node: str  # node name for messages
    op: str
    attrs: dict
    output: str
    weight: np.ndarray = None  # OIHW (conv) or (out, in) (dense)
    bias: np.ndarray = None
    weight_name: str = ""
    extra: np.ndarray = None  # Reshape's target shape
    expected_name: str = ""  # the Keras layer it maps to, once checked


def import_onnx(path, input_conversion=None):
    """Loads Caffe's bvlc_alexnet from an ONNX file into `build_alexnet(variant="caffe")`.

    Args:
        path: the `.onnx` file (the ONNX model zoo's bvlcalexnet-{3..12}.onnx or any graph of
            the same structure, see the module docstring).
        input_conversion: `InputConversion` arguments; None uses `CAFFE_INPUT`.

    Returns:
        A float32 Keras model from this project's input to fc8's logits (no softmax).

    Raises:
        WeightImportError: the graph is not Caffe's AlexNet (the message names the layer).
        ConfigError: a weight of the model got no value from the file
            (`pretrained.assign_weights`).
        ImportError: the `onnx` package is missing.
    """
    proto = _load_onnx(path)
    input_name, input_shape, layers = read_onnx_layers(proto)
    height, width = input_shape
    dense = [layer for layer in layers if layer.kind == "dense"]
    fc8 = dense[2].weight if len(dense) >= 3 else None
    num_classes = fc8.shape[0] if fc8 is not None and fc8.ndim == 2 else DEFAULT_CLASSES
    model = build_target(
        "caffe", num_classes, (height, width), input_conversion or CAFFE_INPUT, f"ONNX input {input_name!r}"
    )
    _check_onnx_layers(model, layers)
    values = {}
    for layer in layers:
        if layer.kind in ("conv", "dense"):
            values.update(keras_values(model, layer.expected_name, layer.weight, layer.bias))
    pretrained.assign_weights(model, values, where=path)
    return model


def onnxruntime_logits(path, images):
    """fc8's output (logits, before any Softmax) of an ONNX AlexNet, run by onnxruntime.

    Args:
        path: the `.onnx` file.
        images: float32 [N, 3, H, W] in the graph's own input convention.

    Returns:
        float32 [N, num_classes]. Images run one at a time (the zoo graph has batch 1).
    """
    onnx = require("onnx", "reading ONNX files")
    ort = require("onnxruntime", "running ONNX graphs")
    proto = _load_onnx(path)
    input_name, _, layers = read_onnx_layers(proto)
    logits_name = [layer for layer in layers if layer.kind == "dense"][-1].output
    if logits_name not in [o.name for o in proto.graph.output]:
        proto.graph.output.append(
            onnx.helper.make_tensor_value_info(logits_name, onnx.TensorProto.FLOAT, None)
        )
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate(
        [session.run([logits_name], {input_name: image[None].astype(np.float32)})[0] for image in images]
    )


def compare_with_onnxruntime(model, path, num_images=2, seed=0):
    """Compares `model` with onnxruntime running `path` on the same random images.

    The images are drawn in this project's input convention, fed to `model` as they are and
    to the ONNX graph through the model's `input_conversion` (redone in NumPy).

    Returns:
        (max |logit difference|, max |onnxruntime logit|).
    """
    height, width = model.input_shape[1:3]
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (num_images, height, width, 3)) - np.asarray(preprocessing.MEAN_RGB)
    images = images.astype(np.float32)
    conversion = model.get_layer("input_conversion").get_config()
    expected = onnxruntime_logits(path, to_source_input(images, conversion))
    actual = np.asarray(model(images, training=False))
    return float(np.max(np.abs(actual - expected))), float(np.max(np.abs(expected)))


def to_source_input(images, conversion):
    """NumPy twin of `InputConversion`: project-convention NHWC images -> the source's NCHW."""
    x = np.asarray(images, np.float64) + np.asarray(conversion["input_mean"])
    if conversion["channel_order"] == "bgr":
        x = x[..., ::-1]
    x = (x * conversion["scale"] - np.asarray(conversion["mean"])) / np.asarray(conversion["std"])
    return x.transpose(0, 3, 1, 2).astype(np.float32)


def _load_onnx(path):
    onnx = require("onnx", "reading ONNX files")
    check_file(path)
    try:
        return onnx.load(path)
    except Exception as e:  # noqa: BLE001  protobuf raises several types for a file that is not ONNX
        raise WeightImportError(f"{path}: not a readable ONNX model ({e})") from None


def read_onnx_layers(proto):
    """(input name, (H, W), layers in graph order) of a plain-chain ONNX graph."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            value = [a for a in node.attribute if a.name == "value"]
            if value:
                consts[node.output[0]] = numpy_helper.to_array(value[0].t)
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise WeightImportError(
            f"the graph has {len(inputs)} data inputs {[i.name for i in inputs]}; "
            "Caffe's AlexNet has one image input [N, 3, H, W]"
        )
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] not in (3, None):
        raise WeightImportError(f"ONNX input {inputs[0].name!r} has shape {dims}; expected [N, 3, H, W]")
    size = (dims[2] or 224, dims[3] or 224)

    layers, current = [], inputs[0].name
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        name = node.name or node.output[0]
        data_inputs = [i for i in node.input if i and i not in consts]
        if data_inputs != [current]:
            raise WeightImportError(
                f"ONNX node {name!r} ({node.op_type}) does not take exactly the previous layer's output "
                f"{current!r} (it takes {list(node.input)}): not the single chain of Caffe's AlexNet"
            )
        current = node.output[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in _ONNX_IGNORED:
            continue
        if node.op_type == "Add" and layers and layers[-1].op == "MatMul" and layers[-1].bias is None:
            (bias_name,) = [i for i in node.input if i in consts]
            layers[-1].bias, layers[-1].output = consts[bias_name], current
            continue
        if node.op_type not in _ONNX_KINDS:
            raise WeightImportError(
                f"ONNX node {name!r} is a {node.op_type}, which Caffe's AlexNet does not have"
            )
        layer = _OnnxLayer(_ONNX_KINDS[node.op_type], name, node.op_type, attrs, current)
        if layer.kind in ("conv", "dense"):
            _read_onnx_parameters(layer, node, consts)
        elif node.op_type == "Reshape" and len(node.input) > 1:
            layer.extra = consts.get(node.input[1])
        layers.append(layer)
    if layers and layers[-1].kind == "softmax":
        layers.pop()
    return inputs[0].name, size, layers


def _read_onnx_parameters(layer, node, consts):
    """Fills the weight in PyTorch layout (OIHW, or (out, in)) and the bias of a Conv/Gemm/MatMul."""
    weight_name = node.input[1] if len(node.input) > 1 else ""
    if weight_name not in consts:
        raise WeightImportError(
            f"ONNX node {layer.node!r} ({node.op_type}): its weight {weight_name!r} "
            "is not an initializer; the importer needs constant weights"
        )
    weight = consts[weight_name].astype(np.float32, copy=False)
    bias = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    bias = None if bias is None else bias.astype(np.float32).reshape(-1)
    if node.op_type == "Gemm":
        if layer.attrs.get("transA", 0):
            raise WeightImportError(f"ONNX node {layer.node!r} (Gemm) has transA=1; Caffe's AlexNet has none")
        weight = weight if layer.attrs.get("transB", 0) else weight.T
        if layer.attrs.get("alpha", 1.0) != 1.0:
            weight = weight * np.float32(layer.attrs["alpha"])
        if bias is not None and layer.attrs.get("beta", 1.0) != 1.0:
            bias = bias * np.float32(layer.attrs["beta"])
    elif node.op_type == "MatMul":
        weight = weight.T
    layer.weight, layer.bias, layer.weight_name = weight, bias, weight_name


def _expected_kinds(spec):
    """[(kind, layer name)] of a variant, in graph order."""
    kinds = []
    for i, conv in enumerate(spec.convs, start=1):
        kinds += [("conv", f"conv{i}"), ("relu", f"the ReLU of conv{i}")]
        kinds += [("lrn", f"lrn{i}")] if conv.lrn else []
        kinds += [("pool", f"pool{i}")] if conv.pool else []
    kinds.append(("flatten", "flatten"))
    last = 6 + len(spec.fc_units)
    for i in range(6, last):
        kinds += [("dense", f"fc{i}"), ("relu", f"the ReLU of fc{i}")]
    return kinds + [("dense", f"fc{last}")]


def _check_onnx_layers(model, layers):
    """Checks every ONNX layer against the "caffe" model, in order; names them for `keras_values`."""
    expected = _expected_kinds(VARIANTS["caffe"])
    for position, (kind, name) in enumerate(expected):
        if position >= len(layers):
            after = f" after node {layers[-1].node!r}" if layers else ""
            raise WeightImportError(
                f"{name}: missing; the graph ends{after}, expected {_KIND_OPS[kind]} "
                f"node{_shape_hint(model, name)}"
            )
        layer = layers[position]
        if layer.kind != kind:
            raise WeightImportError(
                f"{name}: expected {_KIND_OPS[kind]} node{_shape_hint(model, name)}, "
                f"found {layer.op} node {layer.node!r}"
            )
        layer.expected_name = name
        where = f"{name} (ONNX node {layer.node!r})"
        if kind in ("conv", "dense"):
            weight_shape, bias_shape = source_shapes(model.get_layer(name))
            check_shape(f"{where}: weight {layer.weight_name!r}", layer.weight, weight_shape)
            if layer.bias is not None:
                check_shape(f"{where}: bias", layer.bias, bias_shape)
        if kind == "conv":
            _check_onnx_conv(where, layer.attrs, VARIANTS["caffe"].convs[int(name[4:]) - 1])
        elif kind == "lrn":
            _check_onnx_lrn(where, layer.attrs, model.get_layer(name))
        elif kind == "pool":
            _check_onnx_pool(where, layer.attrs, model, int(name[4:]))
        elif kind == "flatten" and layer.extra is not None and len(layer.extra) != 2:
            raise WeightImportError(f"{where}: reshapes to {list(layer.extra)}; expected [N, features]")
    if len(layers) > len(expected):
        extra = layers[len(expected)]
        raise WeightImportError(f"unexpected {extra.op} node {extra.node!r} after fc8: not Caffe's AlexNet")


def _check_attr(where, attr, actual, expected):
    if list(actual) != list(expected):
        raise WeightImportError(
            f"{where}: {attr}={list(actual)}, expected {list(expected)} (Caffe's AlexNet)"
        )


def _check_onnx_conv(where, attrs, conv):
    k, s, p = conv.kernel_size, conv.strides, conv.padding
    _check_attr(where, "kernel_shape", attrs.get("kernel_shape", [k, k]), [k, k])
    _check_attr(where, "strides", attrs.get("strides", [1, 1]), [s, s])
    _check_attr(where, "pads", attrs.get("pads", [0] * 4), [p] * 4)
    _check_attr(where, "group", [attrs.get("group", 1)], [conv.groups])
    _check_attr(where, "dilations", attrs.get("dilations", [1, 1]), [1, 1])
    _check_auto_pad(where, attrs)


def _check_auto_pad(where, attrs):
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad not in ("NOTSET", "VALID", ""):
        raise WeightImportError(f"{where}: auto_pad={auto_pad}; the importer needs explicit pads")


def _check_onnx_lrn(where, attrs, lrn):
    size = attrs.get("size")
    # ONNX (like Caffe) divides alpha by the window size; LocalResponseNormalization does not.
    actual = {
        "size": size,
        "alpha / size": attrs.get("alpha", 1e-4) / (size or 1),
        "beta": attrs.get("beta", 0.75),
        "bias": attrs.get("bias", 1.0),
    }
    expected = {
        "size": 2 * lrn.depth_radius + 1,
        "alpha / size": lrn.alpha,
        "beta": lrn.beta,
        "bias": lrn.bias,
    }
    for key, value in expected.items():
        if actual[key] is None or not np.isclose(actual[key], value, rtol=1e-5, atol=0):
            shown = "missing" if actual[key] is None else f"{actual[key]:.6g}"
            raise WeightImportError(f"{where}: LRN {key}={shown}, expected {value:.6g} (Caffe's AlexNet)")


def _check_onnx_pool(where, attrs, model, index):
    _check_attr(where, "kernel_shape", attrs.get("kernel_shape", []), [3, 3])
    _check_attr(where, "strides", attrs.get("strides", [1, 1]), [2, 2])
    _check_attr(where, "dilations", attrs.get("dilations", [1, 1]), [1, 1])
    _check_auto_pad(where, attrs)
    pads = list(attrs.get("pads", [0] * 4))
    if pads[:2] != [0, 0]:
        raise WeightImportError(f"{where}: pads={pads}; Caffe's pooling only extends past the bottom/right")
    rounding = np.ceil if attrs.get("ceil_mode", 0) else np.floor
    size_in = model.get_layer(f"conv{index}").output.shape[1:3]
    actual = [int(rounding((n + end - 3) / 2)) + 1 for n, end in zip(size_in, pads[2:])]
    expected = list(model.get_layer(f"pool{index}").output.shape[1:3])
    if actual != expected:
        raise WeightImportError(
            f"{where}: pools {list(size_in)} to {actual} (pads={pads}, "
            f"ceil_mode={attrs.get('ceil_mode', 0)}); Caffe's rounded-up pooling gives {expected}"
        )


def _shape_hint(model, name):
    if name in [layer.name for layer in model.layers] and hasattr(model.get_layer(name), "kernel"):
        return f" with weight shape {source_shapes(model.get_layer(name))[0]}"
    return ""
