"""alexnet_tf: the 2012 AlexNet, faithful to the paper, on Keras 3 with the TensorFlow backend."""

from alexnet_tf.layers import GroupedConv2D, LocalResponseNormalization
from alexnet_tf.model import build_alexnet

__version__ = "0.1.0"

__all__ = ["GroupedConv2D", "LocalResponseNormalization", "build_alexnet", "__version__"]
