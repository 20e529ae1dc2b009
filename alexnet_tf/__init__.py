"""alexnet_tf: the 2012 AlexNet, faithful to the paper, on Keras 3 with the TensorFlow backend."""

__version__ = "0.1.0"

__all__ = ["GroupedConv2D", "LocalResponseNormalization", "build_alexnet", "__version__"]

# The public names are resolved on first use (PEP 562), so that `python -m alexnet_tf.X`
# entry points and data-conversion worker processes can set up logging and devices
# before TensorFlow is imported, and importing a light submodule stays light.
_LAZY = {
    "GroupedConv2D": "alexnet_tf.layers",
    "LocalResponseNormalization": "alexnet_tf.layers",
    "build_alexnet": "alexnet_tf.model",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'alexnet_tf' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
