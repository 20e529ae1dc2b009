"""Owns the ONNX export of the pixel signature (tf2onnx), for onnxruntime and other ONNX servers.

    python -m alexnet_tf.export --checkpoint=alexnet.keras --export_dir=models/alexnet.onnx --format=onnx

The graph takes `images`: float32 [N, R, R, 3] pixels in [0, 255], R = 256 (the shorter-side
size of the eval preprocessing), and returns `probabilities` float32 [N, C]. Inside it are the
rest of `preprocessing.preprocess_for_eval` (centre crop, mean subtraction), the network (grouped
convolutions and LRN included) and the softmax, so on a 256 x 256 input it computes what the
SavedModel's `predict_images` does. The resize to 256 stays outside: TensorFlow's antialiased
bilinear resize (ScaleAndTranslate) has no tf2onnx conversion. `to_onnx_input` does that
step with the very function evaluation uses.
"""

import os

import numpy as np
import tensorflow as tf

from alexnet_tf.config import ConfigError
from alexnet_tf.data import preprocessing

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
OPSET = 17


def to_onnx_input(image, resize_shorter=preprocessing.RESIZE_SHORTER):
    """Decoded image [H, W, 3] (uint8 or float, any size) -> float32 [R, R, 3] central square.

    This is `preprocessing.center_crop` with crop size R: the first half of
    `preprocessing.preprocess_for_eval`.
    """
    return tf.cast(preprocessing.center_crop(image, resize_shorter, resize_shorter), tf.float32)


def onnx_function(model, resize_shorter=preprocessing.RESIZE_SHORTER):
    """The tf.function that is converted: 256-square pixels -> probabilities."""
    image_size = int(model.input_shape[1])
    offset = (resize_shorter - image_size) // 2

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, resize_shorter, resize_shorter, 3], tf.float32, name=INPUT_NAME)
        ]
    )
    def probabilities(images):
        crops = preprocessing.subtract_mean(
            images[:, offset : offset + image_size, offset : offset + image_size]
        )
        logits = tf.cast(model(crops, training=False), tf.float32)
        return {OUTPUT_NAME: tf.nn.softmax(logits, axis=-1)}

    return probabilities


def require_tf2onnx():
    """tf2onnx, an optional dependency; a ConfigError that says how to install it when missing."""
    try:
        import tf2onnx
    except ImportError:
        raise ConfigError(
            '--format=onnx needs tf2onnx, which is not installed: pip install "alexnet_tf[onnx]" '
            "(or pip install tf2onnx onnx onnxruntime)"
        ) from None
    return tf2onnx


def export_onnx(model, path, resize_shorter=preprocessing.RESIZE_SHORTER, opset=OPSET):
    """Converts `model` with its eval preprocessing and softmax to an ONNX file.

    Args:
      model: Keras classifier from float32 [N, S, S, 3] mean-subtracted crops to logits.
      path: the .onnx file to write (its folder is created).
      resize_shorter: R, the input's side.
      opset: ONNX opset.

    Returns:
      `path`.
    """
    tf2onnx = require_tf2onnx()
    function = onnx_function(model, resize_shorter)
    proto, _ = tf2onnx.convert.from_function(
        function, input_signature=function.input_signature, opset=opset, output_path=None
    )
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return path


def onnxruntime_probabilities(path, images):
    """Runs the ONNX file on float32 [N, R, R, 3] pixels with onnxruntime (CPU); returns [N, C]."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: np.asarray(images, np.float32)})[0]
