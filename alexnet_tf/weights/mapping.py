"""What both importers share: WeightImportError, the model a file fills, and layouts converted.

The parameters of ONNX graphs and torchvision state_dicts come in PyTorch layout: conv kernels
OIHW, dense weights (out, in), fc6's rows in channels-first (c, y, x) order. `keras_values`
turns them into this model's HWIO kernels, (in, out) weights and channels-last fc6 rows;
`source_shapes` gives the shapes a file must hold for a Keras layer, `check_shape` refuses
others with a message naming the layer.
"""

import importlib
import os

import numpy as np

from alexnet_tf.model import build_alexnet

DEFAULT_CLASSES = 1000


class WeightImportError(ValueError):
    """A weights file does not hold the expected AlexNet; the message names the layer."""


def build_target(variant, num_classes, size, input_conversion, source):
    """An AlexNet of `variant` with zero weights, for a file's weights; `source` words the error."""
    try:
        return build_alexnet(
            num_classes=int(num_classes),
            variant=variant,
            input_shape=(*size, 3),
            input_conversion=dict(input_conversion),
            kernel_initializer="zeros",
        )
    except ValueError as e:
        raise WeightImportError(f"{source}: cannot build the {variant!r} AlexNet for it: {e}") from None


def source_shapes(layer):
    """(weight, bias) shapes of a Keras conv/dense layer in PyTorch/ONNX layout."""
    kernel = tuple(layer.kernel.shape)
    weight = (kernel[3], kernel[2], kernel[0], kernel[1]) if len(kernel) == 4 else (kernel[1], kernel[0])
    return weight, (kernel[-1],)


def check_shape(what, array, expected):
    """Raises WeightImportError unless `array` exists and has the `expected` shape."""
    if array is None:
        raise WeightImportError(f"{what} is missing; expected shape {expected}")
    if tuple(array.shape) != tuple(expected):
        raise WeightImportError(f"{what} has shape {tuple(array.shape)}, expected {tuple(expected)}")


def keras_values(model, name, weight, bias):
    """{weight path: value} of the Keras layer `name` from its PyTorch-layout parameters."""
    layer = model.get_layer(name)
    if weight.ndim == 4:
        kernel = weight.transpose(2, 3, 1, 0)
    else:
        kernel = weight.T
        if name == "fc6":
            # Rows in channels-first (c, y, x) order -> this model's channels-last (y, x, c).
            h, w, c = model.get_layer("flatten").input.shape[1:]
            kernel = kernel.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(h * w * c, -1)
    bias = np.zeros(layer.bias.shape) if bias is None else bias  # a Conv or Gemm without one adds 0
    return {
        layer.kernel.path: np.ascontiguousarray(kernel, np.float32),
        layer.bias.path: np.asarray(bias, np.float32),
    }


def check_file(path):
    """Raises WeightImportError unless `path` is a file."""
    if not os.path.isfile(path):
        raise WeightImportError(f"{path}: no such file")


def require(module, purpose, package=None):
    """Imports an optional package, or raises ImportError saying what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{purpose} needs the {package or module} package: pip install {package or module}"
        ) from None
