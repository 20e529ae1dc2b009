"""alexnet_tf: the 2012 AlexNet, faithful to the paper, on Keras 3 with the TensorFlow backend."""

__version__ = "0.1.0"

# Importing the package registers every Keras serialisable it defines (the layers, and the
# optimizer the trainer saves), so `keras.saving.load_model` reads any `.keras` file this
# project writes after a plain `import alexnet_tf`.
import keras

from alexnet_tf.layers import GroupedConv2D, InputConversion, LocalResponseNormalization, ReplicaDropout
from alexnet_tf.model import build_alexnet

if keras.backend.backend() == "tensorflow":
    from alexnet_tf.optim import MomentumSGD
else:
    # The model API runs on every Keras backend without TensorFlow; the optimizer is
    # TensorFlow's (fused TF kernels), imported with TensorFlow only when it is asked for.
    def __getattr__(name):
        if name == "MomentumSGD":
            from alexnet_tf.optim import MomentumSGD  # pylint: disable=g-import-not-at-top

            return MomentumSGD
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "GroupedConv2D",
    "InputConversion",
    "LocalResponseNormalization",
    "MomentumSGD",
    "ReplicaDropout",
    "build_alexnet",
    "__version__",
]
