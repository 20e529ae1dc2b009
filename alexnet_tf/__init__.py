"""alexnet_tf: the 2012 AlexNet, faithful to the paper, on Keras 3 with the TensorFlow backend.

The public model API, what users import (these paths stay):

    layers.py          LRN, grouped convolutions, the input conversion and replica dropout
    model.py           `build_alexnet` and the table of variants (paper, one_weird_trick, caffe)
    optim.py           `MomentumSGD`: the paper's momentum and weight decay in one fused pass
    config.py          `TrainConfig`: the training configuration, the paper's recipe by default
    costs.py           a built model's layer table and the FLOPs of one training image
    applications.py    `AlexNet(weights=...)`, `preprocess_input`, `decode_predictions`
    explain.py         `grad_cam`: where a model looks for a class (Grad-CAM heat maps, overlays)

Helpers every stage shares:

    metrics.py         top-1/top-5 counts, ten-crop averaging, the sums the steps return
    hardware.py        the machine: oneDNN kernels, native bfloat16, GPUs
    cli.py             how a command reports a failure: one line and an exit status

Commands, `python -m alexnet_tf.<name>`: flags -> one library call -> exit status:

    train.py           trains a model (and is the library function `run`)
    evaluate.py        top-1/top-5 with the centre crop and the paper's ten crops
    export.py          a checkpoint or .keras file to a TF Serving SavedModel or ONNX
    predict.py         top-5 labels of image files from an exported SavedModel
    client.py          TF Serving's REST and gRPC predict requests for image files
    info.py            the layer table of a variant
    convert.py         image folders or ILSVRC tars to sharded TFRecords
    import_weights.py  Caffe's or torchvision's AlexNet weights into Keras
    data_service.py    the tf.data service dispatcher and workers
    benchmark/         how fast this machine trains, feeds and serves AlexNet
    features/          a layer's activations, nearest neighbours, top-5 and Grad-CAM pictures

The library, one folder per stage; each imports only the folders listed above it:

    data/              from images on disk to the batches a step reads
    serving/           what a trained model becomes for TF Serving, ONNX and other runtimes
    weights/           checkpoints, weight matching, imported weights
    training/          the trainer: strategy, steps, schedules, the loop, summaries
"""

__version__ = "0.1.0"

# The commands that compute with TensorFlow on the CPU run oneDNN's kernels where TensorFlow
# would leave them off; it reads TF_ENABLE_ONEDNN_OPTS when Keras imports it, just below.
from alexnet_tf import hardware as _hardware

_hardware.command_onednn_default()

# Importing the package registers every Keras serialisable it defines (the layers, and the
# optimizer the trainer saves), so `keras.saving.load_model` reads any `.keras` file this
# project writes after a plain `import alexnet_tf`. On JAX and PyTorch the optimizer, which
# runs TensorFlow kernels, is not there: load files saved with it with `compile=False`.
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
