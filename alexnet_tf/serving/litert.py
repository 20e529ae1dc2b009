"""Reads and runs the `.tflite` files of `alexnet_tf.serving.tflite_export` with the LiteRT interpreter.

    model = LiteRTModel("model.tflite", num_threads=2)
    logits = model(crops)   # uint8 or float [N, S, S, 3] RGB evaluation crops in [0, 255]

`LiteRTModel` runs `ai_edge_litert.interpreter.Interpreter` (the `ai-edge-litert` wheel, the
maintained successor of `tf.lite.Interpreter`; `pip install "alexnet_tf[tflite]"`), resizes the
batch dimension to each call's batch, quantises the input and dequantises the output as the
file needs, and returns float32 logits [N, C]. Its attributes come from the file's
`alexnet_tf` metadata entry (`read_metadata`): `image_size`, `num_classes`, `labels`,
`quantize`. Reading the metadata and the op list (`op_counts`) needs only the `flatbuffers`
package and a generated TFLite schema (ai-edge-litert's, else TensorFlow's), no TensorFlow
when ai-edge-litert is installed.
"""

import json
import os
import struct

import numpy as np

METADATA_NAME = "alexnet_tf"
FILE_IDENTIFIER = b"TFL3"
CUSTOM_PREFIX = "CUSTOM:"
INSTALL_HINT = 'pip install "alexnet_tf[tflite]" (or pip install ai-edge-litert)'


def flatbuffer_schema():
    """The generated TFLite flatbuffer schema module: ai-edge-litert's, else TensorFlow's."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def is_tflite(path):
    """True when `path` is a file in the TFLite flatbuffer format (its "TFL3" identifier)."""
    try:
        if not os.path.isfile(path):
            return False
        with open(path, "rb") as f:
            return f.read(8)[4:8] == FILE_IDENTIFIER
    except (OSError, TypeError):
        return False


def _read(path_or_bytes):
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    with open(path_or_bytes, "rb") as f:
        return f.read()


def _root(data):
    return flatbuffer_schema().Model.GetRootAs(data, 0)


def builtin_code(opcode):
    """The builtin operator code of an OperatorCode (table or object form of the schema).

    Files keep small codes in the int8 `deprecated_builtin_code` and large ones in
    `builtin_code`; the larger of the two is the operator.
    """
    if hasattr(opcode, "BuiltinCode"):
        return max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode())
    return max(opcode.builtinCode, opcode.deprecatedBuiltinCode)


def op_counts(path_or_bytes):
    """{op name: count} over every subgraph of a `.tflite` file (path or bytes).

    Builtin ops are named as TFLite names them (CONV_2D, LOCAL_RESPONSE_NORMALIZATION, ...);
    a custom op (Flex ops included: FlexConv2D, ...) as "CUSTOM:<its code>".
    """
    schema = flatbuffer_schema()
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = _root(_read(path_or_bytes))
    counts = {}
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for o in range(graph.OperatorsLength()):
            opcode = model.OperatorCodes(graph.Operators(o).OpcodeIndex())
            code = builtin_code(opcode)
            if code == schema.BuiltinOperator.CUSTOM:
                name = CUSTOM_PREFIX + (opcode.CustomCode() or b"").decode("utf-8", "replace")
            else:
                name = names.get(code, f"BUILTIN_{code}")
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def is_builtin_op_name(name):
    """False for custom ops (Flex ops included), as `op_counts` names them."""
    return not name.startswith(CUSTOM_PREFIX)


def op_summary(counts):
    """`op_counts` as one line: "CONV_2D x8, FULLY_CONNECTED x3, ..."."""
    return ", ".join(f"{name} x{count}" for name, count in counts.items())


def read_metadata(path_or_bytes):
    """The `alexnet_tf` metadata (a dict) of a `.tflite` file (path or bytes), or None without one."""
    model = _root(_read(path_or_bytes))
    try:
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() == METADATA_NAME.encode():
                return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode("utf-8"))
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as e:  # truncated or damaged
        where = path_or_bytes if isinstance(path_or_bytes, str) else "the file"
        raise ValueError(
            f"{where} is a damaged TFLite file (truncated or corrupt: {type(e).__name__}); "
            "export it again with python -m alexnet_tf.export --format=tflite"
        ) from None
    return None


def require_litert():
    """`ai_edge_litert.interpreter`, or an ImportError that says how to install it."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        raise ImportError(f"running a .tflite model needs the LiteRT interpreter: {INSTALL_HINT}") from None
    return interpreter


def _quantise(values, dtype, scale, zero_point):
    info = np.iinfo(dtype)
    q = np.rint(values / scale + zero_point) if scale else np.rint(values)
    return np.clip(q, info.min, info.max).astype(dtype)


class LiteRTModel:
    """A `.tflite` file of `alexnet_tf.serving.tflite_export`, run by the LiteRT interpreter.

    Args:
      path: the .tflite file.
      num_threads: the interpreter's CPU threads (None: LiteRT's default).

    Attributes:
      path, num_threads, metadata (the file's `alexnet_tf` metadata dict), image_size (int),
      num_classes (int), labels (list of str, or None), quantize ("none", "float16",
      "dynamic_range" or "int8").

    Raises:
      ValueError: `path` is not a TFLite file, or not one alexnet_tf exported (naming it).
      ImportError: ai-edge-litert is not installed (saying how to install it).
    """

    def __init__(self, path, num_threads=None):
        self.path = path
        self.num_threads = num_threads
        if not is_tflite(path):
            raise ValueError(
                f"{path} is not a TFLite model (no such file, or not a .tflite flatbuffer); "
                "export one with python -m alexnet_tf.export --format=tflite"
            )
        metadata = read_metadata(path)
        if not isinstance(metadata, dict) or "image_size" not in metadata:
            raise ValueError(
                f"{path} is a TFLite model but not one alexnet_tf exported (no {METADATA_NAME!r} "
                "metadata); export it with python -m alexnet_tf.export --format=tflite"
            )
        interpreter = require_litert()
        self.metadata = metadata
        self.image_size = int(metadata["image_size"])
        self.num_classes = int(metadata["num_classes"])
        self.labels = metadata.get("labels")
        self.quantize = metadata.get("quantize", "none")
        self._interpreter = interpreter.Interpreter(model_path=path, num_threads=num_threads)
        (self._input,) = self._interpreter.get_input_details()
        (self._output,) = self._interpreter.get_output_details()
        self._batch = None

    def __repr__(self):
        return (
            f"LiteRTModel({self.path!r}, quantize={self.quantize!r}, image_size={self.image_size}, "
            f"num_classes={self.num_classes}, num_threads={self.num_threads})"
        )

    def _resize(self, batch):
        if batch != self._batch:
            shape = [batch, self.image_size, self.image_size, 3]
            self._interpreter.resize_tensor_input(self._input["index"], shape)
            self._interpreter.allocate_tensors()
            self._batch = batch

    def __call__(self, pixels):
        """float32 logits [N, C] of uint8 or float RGB evaluation crops [N, S, S, 3] in [0, 255]."""
        pixels = np.asarray(pixels)
        size = self.image_size
        if pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
            raise ValueError(
                f"{self.path} takes RGB evaluation crops [N, {size}, {size}, 3], got shape {pixels.shape}"
            )
        if len(pixels) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        self._resize(len(pixels))
        dtype = self._input["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero_point = self._input["quantization"]
            values = _quantise(pixels.astype(np.float32), dtype, scale, zero_point)
        else:
            values = pixels.astype(dtype)
        self._interpreter.set_tensor(self._input["index"], values)
        self._interpreter.invoke()
        out = self._interpreter.get_tensor(self._output["index"])
        if np.issubdtype(out.dtype, np.integer):
            scale, zero_point = self._output["quantization"]
            return ((out.astype(np.float32) - zero_point) * scale).astype(np.float32)
        return out.astype(np.float32, copy=True)
