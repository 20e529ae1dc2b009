"""A layer's activations as features: the sub-model that computes them, and nearest neighbours.

The paper's Figure 4 (docs/paper.md) compares images by the Euclidean distance of their
activations at fc7, the last 4096-wide hidden layer (after its ReLU; dropout is off at
inference). `feature_model` cuts any Keras model at a named layer; the SavedModel's
`features` signature (`alexnet_tf.serving.signatures`), the trainer's TensorBoard projector
(`alexnet_tf.training.loop`) and `python -m alexnet_tf.features` all use it.
"""

import keras
import numpy as np

FEATURES_LAYER = "fc7"


def layer_names(model):
    """The names of `model`'s layers that a feature model can stop at (all but the input)."""
    return [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def has_layer(model, name):
    return name in layer_names(model)


def feature_model(model, layer=FEATURES_LAYER, with_output=False):
    """A Keras model from `model`'s input to the output of its layer `layer`, sharing its weights.

    Args:
      model: a functional Keras model (every model this project builds or loads).
      layer: the layer whose output is the feature ("fc7", "conv5", "pool5", ...).
      with_output: also return the model's own output (logits), from the same forward pass.

    Returns:
      keras.Model mapping the model's inputs to the layer's output (and the logits). Call it
      with training=False: dropout must not act on features.

    Raises:
      ValueError: no such layer, naming the layers there are.
    """
    names = layer_names(model)
    if layer not in names:
        raise ValueError(f"the model has no layer {layer!r}; its layers are: {', '.join(names)}")
    output = model.get_layer(layer).output
    outputs = [output, model.outputs[0]] if with_output else output
    return keras.Model(model.inputs, outputs, name=f"{model.name}_{layer}")


def squared_distances(queries, gallery, chunk=8192):
    """float64 [Q, G] squared Euclidean distances between rows of [Q, ...] and [G, ...] features.

    The gallery is taken `chunk` rows at a time in float64, so a large float32 gallery is not
    copied whole.
    """
    queries = np.asarray(queries, np.float64).reshape(len(queries), -1)
    gallery = np.asarray(gallery).reshape(len(gallery), -1)
    query_norms = np.sum(queries**2, axis=1)[:, np.newaxis]
    parts = []
    for start in range(0, len(gallery), chunk):
        rows = gallery[start : start + chunk].astype(np.float64)
        parts.append(query_norms - 2.0 * queries @ rows.T + np.sum(rows**2, axis=1))
    squared = np.concatenate(parts, axis=1) if parts else np.zeros((len(queries), 0))
    return np.maximum(squared, 0.0)


def nearest_neighbours(queries, gallery, k=6):
    """The k nearest gallery rows of each query by Euclidean distance (ties: the lower index).

    Returns:
      (int64 [Q, min(k, G)] gallery indices, nearest first; float64 [Q, min(k, G)] distances).
    """
    squared = squared_distances(queries, gallery)
    k = min(k, squared.shape[1])
    order = np.argsort(squared, axis=1, kind="stable")[:, :k]
    return order, np.sqrt(np.take_along_axis(squared, order, axis=1))
