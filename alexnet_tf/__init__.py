"""alexnet_tf: the 2012 AlexNet, faithful to the paper, on Keras 3 with the TensorFlow backend."""

__version__ = "0.1.0"

# The commands that compute with TensorFlow on the CPU run oneDNN's kernels where TensorFlow
# would leave them off; it reads TF_ENABLE_ONEDNN_OPTS when Keras imports it, just below.
from alexnet_tf import hardware as _hardware

_hardware.command_onednn_default()

# Importing the package registers every Keras serialisable it defines (the layers, and the
# optimizer the trainer saves), so `keras.saving.load_model` reads any `.keras` file this
# project writes after a plain `import alexnet_tf`.
import keras

from alexnet_tf.layers import GroupedConv2D, InputConversion, LocalResponseNormalization, ReplicaDropout
from alexnet_tf.model import build_alexnet

# Names whose modules import TensorFlow: the optimizer (fused TF kernels) and the applications
# API (weights= reads TensorFlow checkpoints). On other Keras backends they load on first use.
_TENSORFLOW_NAMES = {
    "MomentumSGD": "alexnet_tf.optim",
    "AlexNet": "alexnet_tf.applications",
    "decode_predictions": "alexnet_tf.applications",
    "preprocess_input": "alexnet_tf.applications",
}

if keras.backend.backend() == "tensorflow":
    from alexnet_tf.applications import AlexNet, decode_predictions, preprocess_input
    from alexnet_tf.optim import MomentumSGD
else:
    # The model API runs on every Keras backend without TensorFlow.
    def __getattr__(name):
        if name in _TENSORFLOW_NAMES:
            import importlib

            return getattr(importlib.import_module(_TENSORFLOW_NAMES[name]), name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AlexNet",
    "GroupedConv2D",
    "InputConversion",
    "LocalResponseNormalization",
    "MomentumSGD",
    "ReplicaDropout",
    "build_alexnet",
    "decode_predictions",
    "preprocess_input",
    "__version__",
]
