"""Owns the LiteRT (TFLite) export: one `.tflite` file for phones and edge devices, builtin ops only.

    python -m alexnet_tf.export --format=tflite --checkpoint=run/ --export_dir=model.tflite \
        [--quantize=none|float16|dynamic_range|int8] [--representative_data=DIR]

The input convention, the same for every quantisation: `images`, RGB pixels in [0, 255] of the
evaluation crop, [N, S, S, 3] (N free, S the model's image size): the central square of the
image's shorter side, rescaled to 256 x 256 (bilinear, antialiased), then its central S x S
crop, exactly what `alexnet_tf.data.preprocessing.center_crop` gives. Inside the file come the
ImageNet mean subtraction (`preprocessing.subtract_mean`) and the model, with its own
`InputConversion` layer for imported weights (Caffe's BGR mean pixel, torchvision's [0, 1]
mean/std): from pixels to logits the file computes what the SavedModel's `predict_images`
signature computes before its softmax (`alexnet_tf.serving.signatures`). The output is
`logits` [N, C], no softmax.

Quantisations (`QUANTIZATIONS`):
- "none": float32 weights and arithmetic; float32 input and output.
- "float16": float16 weights (half the file), dequantised to float32 when the interpreter
  loads them (GPU delegates keep them in float16); float32 input and output.
- "dynamic_range": int8 weights, float32 activations, the matrix products quantise their
  input on the fly; float32 input and output.
- "int8": full-integer post-training quantisation, int8 weights and activations calibrated
  on `representative` crops (`alexnet_tf.data.representative`). The input is uint8 with
  scale 1 and zero point 0, so the app passes the crop's pixels as they are (exact). The
  output is int8 logits (its scale and zero point are the output tensor's quantisation
  parameters): edge accelerators (Edge TPU, NPUs behind NNAPI) run integer graphs end to end,
  and an int8 output keeps the last op on them; the argmax needs no dequantisation, and
  `alexnet_tf.serving.litert.LiteRTModel` dequantises for the rest.

Every variant converts with `TFLITE_BUILTINS` only (never `SELECT_TF_OPS`): the file runs on
the standalone LiteRT interpreter without the Flex delegate; `op_counts` lists what a file holds.

- Grouped convolutions (paper, caffe: conv2, conv4, conv5) are traced with the "split"
  implementation of `alexnet_tf.layers.GroupedConv2D`: SPLIT, one CONV_2D per group,
  CONCATENATION, then an ADD of the bias (with the ReLU fused). Every TFLite kernel, delegate
  and the int8 quantiser know these ops; a single CONV_2D with a grouped filter is not
  supported by older runtimes, XNNPACK's int8 path or most delegates.
- LRN (paper, caffe: after conv1 and conv2): TFLite's LOCAL_RESPONSE_NORMALIZATION has a
  float kernel only. In the int8 file it stays a float island: DEQUANTIZE -> LRN (float32)
  -> QUANTIZE, which the converter inserts when it gets `TFLITE_BUILTINS_INT8` plus
  `TFLITE_BUILTINS`. The LRN then computes exactly the float formula on the dequantised conv
  output. The cost: two elementwise conversions and a float LRN over conv1's and conv2's
  outputs per image (55x55x96 and 27x27x256 values at 224), and on an integer-only
  accelerator the graph is cut at each island (those three ops run on the CPU). An int8
  expression of LRN (square, a banded 1x1 convolution for the window sum, a power) was not
  chosen: the squares of int8 activations span a range int8 cannot hold without losing the
  small values that dominate the sum, and TFLite's POW has no int8 kernel.

What a phone app needs travels in the file: a flatbuffer `metadata` entry named
`METADATA_NAME` ("alexnet_tf") whose buffer is UTF-8 JSON (`describe`): the input convention
(size, channel order, range, dtype, the mean subtracted inside, the crop recipe), the
variant, the quantisation and the labels; `X.labels.txt` (one label per line, class order) is
written beside the file as well. `alexnet_tf.serving.litert.read_metadata` reads it back.
"""

import json
import os

import numpy as np
import tensorflow as tf

from alexnet_tf import model as alexnet_model
from alexnet_tf.config import ConfigError
from alexnet_tf.data import preprocessing, schema
from alexnet_tf.layers import grouped_conv_implementation
from alexnet_tf.serving import litert

QUANTIZATIONS = ("none", "float16", "dynamic_range", "int8")
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
METADATA_NAME = litert.METADATA_NAME
FORMAT_VERSION = 1
LABELS_SUFFIX = ".labels.txt"  # X.tflite -> X.labels.txt: files exported to one folder keep their own


def labels_path(path):
    """Where the labels of the .tflite file `path` go: `X.labels.txt` beside `X.tflite`."""
    return os.path.splitext(path)[0] + LABELS_SUFFIX


def tflite_function(model):
    """The tf.function that is converted: crops' RGB pixels [N, S, S, 3] in [0, 255] -> logits.

    Grouped convolutions are traced with the "split" implementation (see the module docstring).
    """
    image_size = int(model.input_shape[1])
    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def logits(images):
        crops = preprocessing.subtract_mean(images)
        return {OUTPUT_NAME: tf.cast(model(crops, training=False), tf.float32)}

    with grouped_conv_implementation("split"):
        concrete = logits.get_concrete_function()
    # The converter freezes the variables it finds on a trackable object; Keras 3 variables
    # wrap tf.Variables that must be tracked too (as in serving.signatures.ServingModule).
    holder = tf.Module()
    holder.variables_of_model = [v.value for v in model.variables]
    holder.logits = logits
    return concrete, holder


def label_texts(labels, num_classes):
    """C label strings (strings or `schema.LabelEntry`s), or None; ValueError when they do not fit."""
    if labels is None:
        return None
    texts = [x.text if isinstance(x, schema.LabelEntry) else str(x) for x in labels]
    if len(texts) != num_classes:
        raise ValueError(f"export: {len(texts)} labels for a model with {num_classes} classes")
    if any("\n" in t or "\r" in t for t in texts):
        raise ValueError("export: labels must not contain line breaks")
    return texts


def describe(model, quantize, labels=None):
    """The metadata JSON object of a `.tflite` file of `model` (what a phone app needs)."""
    image_size = int(model.input_shape[1])
    num_classes = int(model.output_shape[-1])
    return {
        "format": "alexnet_tf.tflite",
        "format_version": FORMAT_VERSION,
        "variant": alexnet_model.variant_of(model),
        "quantize": quantize,
        "image_size": image_size,
        "num_classes": num_classes,
        "input": {
            "name": INPUT_NAME,
            "shape": [None, image_size, image_size, 3],
            "layout": "NHWC",
            "channel_order": "RGB",
            "dtype": "uint8" if quantize == "int8" else "float32",
            "range": [0, 255],
            "crop": {
                "resize_shorter": preprocessing.RESIZE_SHORTER,
                "crop_size": image_size,
                "recipe": (
                    "take the central square of the image's shorter side, resize it to "
                    f"{preprocessing.RESIZE_SHORTER}x{preprocessing.RESIZE_SHORTER} (bilinear, "
                    f"antialiased), then take its central {image_size}x{image_size} crop"
                ),
            },
            "mean_subtracted_inside": list(preprocessing.MEAN_RGB),
            "input_conversion_inside": alexnet_model.input_conversion_of(model),
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": [None, num_classes],
            "dtype": "int8" if quantize == "int8" else "float32",
            "meaning": "logits (no softmax); int8: dequantise with the output tensor's scale and zero point",
        },
        "grouped_convolution": "SPLIT, one CONV_2D per group, CONCATENATION",
        "lrn": (
            "float island DEQUANTIZE -> LOCAL_RESPONSE_NORMALIZATION -> QUANTIZE"
            if quantize == "int8"
            else "LOCAL_RESPONSE_NORMALIZATION (float32)"
        ),
        "labels": labels,
    }


def _converter(model, quantize, representative, progress):
    concrete, holder = tflite_function(model)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        images = np.asarray(representative)
        total = len(images)

        def calibration():
            for i, image in enumerate(images, 1):
                if progress is not None and (i == total or i % max(1, total // 8) == 0):
                    progress(f"calibrating: {i}/{total} images")
                yield [image[np.newaxis].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        # Integer kernels wherever one exists; LRN (float only) stays float between a
        # DEQUANTIZE and a QUANTIZE.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.int8
    return converter


def _check_representative(model, representative):
    if representative is None:
        raise ConfigError(
            "int8 quantisation needs representative images to calibrate on: pass "
            "--representative_data=DIR, a converted data dir"
        )
    images = np.asarray(representative)
    size = int(model.input_shape[1])
    if images.ndim != 4 or images.shape[1:] != (size, size, 3) or len(images) == 0:
        raise ValueError(
            f"representative images must be [N, {size}, {size}, 3] evaluation crops, got shape {images.shape}"
        )
    if images.dtype != np.uint8 and (images.min() < 0 or images.max() > 255):
        raise ValueError("representative images must be pixels in [0, 255]")
    return images


def _pin_uint8_input(flat_model):
    """Sets the uint8 input to scale 1, zero point 0 (and its int8 requantisation to 1, -128).

    The converter derives the input's parameters from the calibration images' range (e.g.
    scale 0.9 when no pixel above 229 was seen), so brighter pixels would saturate. The input
    feeds one QUANTIZE (uint8 -> int8) whose kernel computes its multiplier from the tensors'
    parameters when the interpreter prepares it, so scale 1 on both sides makes it the exact
    `q - 128` and every pixel value representable; the ops after it read the int8 tensor's
    parameters, which now say the same values.
    """
    from tensorflow.lite.python import schema_py_generated as schema_fb

    graph = flat_model.subgraphs[0]
    (index,) = graph.inputs
    tensor = graph.tensors[index]
    if tensor.type != schema_fb.TensorType.UINT8:
        raise AssertionError("int8 export: the converter did not make the input uint8")
    consumers = [op for op in graph.operators if index in list(op.inputs)]
    codes = [litert.builtin_code(flat_model.operatorCodes[op.opcodeIndex]) for op in consumers]
    if codes != [schema_fb.BuiltinOperator.QUANTIZE]:
        raise AssertionError(f"int8 export: the uint8 input feeds {codes}, not one QUANTIZE")
    (requantised,) = consumers[0].outputs
    for i, zero_point in ((index, 0), (requantised, -128)):
        quantization = graph.tensors[i].quantization
        quantization.scale = [1.0]
        quantization.zeroPoint = [zero_point]
        quantization.min = quantization.max = None


def _finish(data, metadata, quantize):
    """The converter's bytes with the metadata entry added (and the int8 input pinned)."""
    from tensorflow.lite.python import schema_py_generated as schema_fb
    from tensorflow.lite.tools import flatbuffer_utils

    flat_model = flatbuffer_utils.read_model_from_bytearray(data)
    if quantize == "int8":
        _pin_uint8_input(flat_model)
    buffer = schema_fb.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode("utf-8"), np.uint8)
    flat_model.buffers.append(buffer)
    entry = schema_fb.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(flat_model.buffers) - 1
    flat_model.metadata = [m for m in (flat_model.metadata or []) if m.name != METADATA_NAME.encode()]
    flat_model.metadata.append(entry)
    return flatbuffer_utils.convert_object_to_bytearray(flat_model)


def export_tflite(model, path, quantize="none", representative=None, labels=None, progress=None):
    """Converts `model` with the mean subtraction to a LiteRT `.tflite` file, builtin ops only.

    Args:
      model: Keras classifier from float32 [N, S, S, 3] mean-subtracted crops to logits [N, C]
        (an AlexNet of any variant, or any model of such layers).
      path: the .tflite file to write (its folder is created); `X.labels.txt` is written beside `X.tflite`
        when `labels` are given.
      quantize: one of QUANTIZATIONS (the module docstring says what each does).
      representative: int8 only (required there): uint8 (or float) [N, S, S, 3] evaluation crops
        in [0, 255], e.g. `alexnet_tf.data.representative.representative_images`.
      labels: None, or C labels in class order (strings or `schema.LabelEntry`s).
      progress: None, or a callable that takes a line (calibration progress).

    Returns:
      `path`.

    Raises:
      ConfigError: an unknown quantisation, or int8 without representative images.
      ValueError: labels or representative images that do not fit the model.
      RuntimeError: the converter emitted an op that is not a LiteRT builtin (never expected).
    """
    if quantize not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantisation {quantize!r}; choose one of {', '.join(QUANTIZATIONS)}")
    texts = label_texts(labels, int(model.output_shape[-1]))
    representative = _check_representative(model, representative) if quantize == "int8" else None
    data = _converter(model, quantize, representative, progress).convert()
    data = _finish(data, describe(model, quantize, texts), quantize)
    not_builtin = [name for name in litert.op_counts(data) if not litert.is_builtin_op_name(name)]
    if not_builtin:
        raise RuntimeError(f"the TFLite converter emitted non-builtin ops {not_builtin}")
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if texts is not None:
        with open(labels_path(path), "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
    return path
