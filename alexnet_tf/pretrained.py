"""Weights from another model, matched by layer name: what `AlexNet(weights=...)` and `--init_from` use.

A source is any model `checkpointing.load_model` reads: a `.keras` file (what
tools/import_weights.py writes for Caffe's bvlc_alexnet or torchvision's AlexNet, or
`model.save`) or a training checkpoint or model dir. Its weights are matched to the target's
by path, the layer name and the weight's ("conv3/kernel"). Layer names are the same in every
variant and in imported models (conv1..conv5, fc6..fc8), so neither the layers' positions nor
weightless layers (dropout, the InputConversion layer) matter. Every target weight must come
from a source weight of the same shape; source weights the target has no layer for (fc6..fc8
when the target has no top) are left out. Whether the two compute the same thing with those
weights is the callers' check: the same variant (`model.variant_of`) and input convention
(`model.input_conversion_of`), which `describe` reads.
"""

import dataclasses
from typing import Optional

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
      ConfigError: a weight `target` needs is missing from `source` or has another shape,
        naming the weight and both shapes; nothing is assigned then.
    """
    available = source_weights(source)
    pairs = []
    for variable in target.weights:
        if variable.path.split("/")[0] in skip:
            continue
        found = available.get(variable.path)
        if found is None:
            raise ConfigError(
                f"{where}: no weight {variable.path} there (shape {tuple(variable.shape)} here)"
            )
        if tuple(found.shape) != tuple(variable.shape):
            raise ConfigError(
                f"{where}: {variable.path} has shape {tuple(found.shape)} there "
                f"but {tuple(variable.shape)} here" + (_FC6_HINT if variable.path.startswith("fc6/") else "")
            )
        pairs.append((variable, found))
    for variable, found in pairs:
        variable.assign(found.numpy())
    return [variable.path for variable, _ in pairs]


# fc6's input is pool5's maps flattened, whose size follows the input size in the paper and
# caffe variants (one_weird_trick pools them to 6x6 first).
_FC6_HINT = (
    " (fc6's input follows the image size in the paper and caffe variants: use the weights' image size)"
)
