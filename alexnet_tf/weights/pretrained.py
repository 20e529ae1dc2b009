"""Weights matched by path ("conv3/kernel"): all a model needs or a refusal, and copying another model's.

A source is any model `checkpointing.load_model` reads: a `.keras` file (what
python -m alexnet_tf.import_weights writes for Caffe's bvlc_alexnet or torchvision's AlexNet, or
`model.save`) or a training checkpoint or model dir. Its weights are matched to the target's
by path, the layer name and the weight's ("conv3/kernel"). Layer names are the same in every
variant and in imported models (conv1..conv5, fc6..fc8), so neither the layers' positions nor
weightless layers (dropout, the InputConversion layer) matter. Every target weight must come
from a source weight of the same shape; source weights the target has no layer for (fc6..fc8
when the target has no top) are left out. Whether the two compute the same thing with those
weights is the callers' check: the same variant (`model.variant_of`) and input convention
(`model.input_conversion_of`), which `describe` reads.

`assign_weights` is where every weight loaded by name is written, whatever it comes from (a
training checkpoint, another model, an imported Caffe or torchvision file): it refuses, before
writing anything, unless each weight of the model gets a value of its shape, so no loader can
hand back a model with weights left at their initialisation (zeros, where the model was built
with zero kernels because every weight was about to be overwritten).
"""

import dataclasses
from typing import Optional

import keras

from alexnet_tf.config import ConfigError
from alexnet_tf.model import HEAD_LAYER, input_conversion_of, variant_of


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What a source model is: enough to build a model its weights fit."""

    variant: Optional[str]  # a model.VARIANTS key; None: not an AlexNet build_alexnet makes
    input_conversion: Optional[dict]  # build_alexnet's input_conversion argument, or None
    input_shape: tuple  # (height, width, 3); None where the input size is free
    num_classes: Optional[int]  # fc8's width; None without a top


def describe(model):
    """SourceInfo of a loaded model."""
    names = {layer.name for layer in model.layers}
    num_classes = int(model.get_layer(HEAD_LAYER).kernel.shape[-1]) if HEAD_LAYER in names else None
    return SourceInfo(
        variant_of(model), input_conversion_of(model), tuple(model.input_shape[1:]), num_classes
    )


def source_weights(model):
    """{path: weight} of every weight of `model` ("fc8/kernel": the variable)."""
    return {variable.path: variable for variable in model.weights}


def copy_weights(source, target, skip=(), where="the weights"):
    """Assigns each weight of `target` the value of the `source` weight with the same path.

    Args:
      source: the model whose weights are read.
      target: the model whose weights are written (under its strategy's scope, if any).
      skip: names of layers of `target` left as they are (e.g. a new fc8).
      where: how messages name the source ("--init_from=models/bvlc_alexnet.keras").

    Returns:
      The paths of the weights copied, in target order.

    Raises:
      ConfigError: as `assign_weights`; nothing is assigned then.
    """
    return assign_weights(target, source_weights(source), where, skip)


def assign_weights(model, values, where, skip=()):
    """Writes `values[variable.path]` into each weight of `model`; refuses unless every one has a value.

    Args:
      model: the model whose weights are written (under its strategy's scope, if any).
      values: {path: array or Keras variable} ("conv3/kernel": its value); entries the model
        has no weight for are left out.
      where: how messages name the source (a file, a flag and its value).
      skip: names of layers of `model` left as they are (e.g. a new fc8).

    Returns:
      The paths of the weights written, in model order.

    Raises:
      ConfigError: a weight has no value in `values` (naming the first ones missing) or one
        of another shape (naming both shapes); nothing is written then.
    """
    targets = [variable for variable in model.weights if variable.path.split("/")[0] not in skip]
    for position, variable in enumerate(targets):  # the first problem in model order
        found = values.get(variable.path)
        if found is None:
            others = [v.path for v in targets[position + 1 :] if v.path not in values]
            nor = f"; nor {', '.join(others[:3])}" if others else ""
            nor += f" and {len(others) - 3} more" if len(others) > 3 else ""
            raise ConfigError(
                f"{where}: no weight {variable.path} there (shape {tuple(variable.shape)} here){nor}"
            )
        if tuple(found.shape) != tuple(variable.shape):
            raise ConfigError(
                f"{where}: {variable.path} has shape {tuple(found.shape)} there "
                f"but {tuple(variable.shape)} here" + (_FC6_HINT if variable.path.startswith("fc6/") else "")
            )
    for variable in targets:
        # NumPy in between: `assign` writes into the variables of every Keras backend.
        variable.assign(keras.ops.convert_to_numpy(values[variable.path]))
    return [variable.path for variable in targets]


# fc6's input is pool5's maps flattened, whose size follows the input size in the paper and
# caffe variants (one_weird_trick pools them to 6x6 first).
_FC6_HINT = (
    " (fc6's input follows the image size in the paper and caffe variants: use the weights' image size)"
)
