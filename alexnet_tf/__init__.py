"""alexnet_tf: the 2012 AlexNet, faithful to the paper, on Keras 3 with the TensorFlow backend."""

__version__ = "0.1.0"

# Importing the package registers every Keras serialisable it defines (the layers, and the
# optimizer the trainer saves), so `keras.saving.load_model` reads any `.keras` file this
# project writes after a plain `import alexnet_tf`.
from alexnet_tf.applications import AlexNet, decode_predictions, preprocess_input
from alexnet_tf.layers import GroupedConv2D, InputConversion, LocalResponseNormalization, ReplicaDropout
from alexnet_tf.model import build_alexnet
from alexnet_tf.optim import MomentumSGD

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
