"""Grad-CAM: where a model looks when it picks a class (Selvaraju et al., ICCV 2017).

For a convolution layer's maps A (N, h, w, K) and a class c, Grad-CAM weighs each map k by
the global average of the gradient of the class's logit (before the softmax) with respect to
it, and keeps the positive part of the weighted sum:

    alpha[n, k] = mean over (i, j) of d logit[n, c] / d A[n, i, j, k]
    map[n]      = ReLU(sum over k of alpha[n, k] * A[n, :, :, k])

`grad_cam` returns those maps divided by each one's maximum (so in [0, 1]; a map that is zero
everywhere stays zero) at the layer's resolution: conv5 is 13x13 for a 224-pixel crop in every
variant (paper, one_weird_trick, caffe), the output of its ReLU, the last convolution before
pool5. `upsample` stretches maps to the image's size and `overlay` lays them over the images
in a jet colour map (blue: nothing; red: the class's evidence).

It works for any functional Keras model with convolution layers, in particular every model
`alexnet_tf.weights.checkpointing.load_model` loads (`.keras` files, training checkpoints and
model dirs, the imported bvlc_alexnet and torchvision weights with their `input_conversion`
first layer). Its inputs are what the model takes: the centre crops of
`alexnet_tf.data.preprocessing.preprocess_for_eval` (RGB in [0, 255] minus the mean pixel).

The gradient is taken by `tf.GradientTape` on the TensorFlow backend: the model is cut at the
layer into the trunk (images -> maps) and the head (maps -> logits), sharing its weights, and
the tape watches the maps between them. The maps and their gradient are float32 whatever the
dtype policy. `upsample` and `overlay` are NumPy: they run anywhere.
"""

import keras
import numpy as np

from alexnet_tf.layers import GroupedConv2D

DEFAULT_LAYER = "conv5"
# Layers whose maps Grad-CAM explains: convolutions (AlexNet's are GroupedConv2D).
CONVOLUTIONS = (
    GroupedConv2D,
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
)


def convolution_layers(model):
    """The names of `model`'s convolution layers, input first: the layers `grad_cam` takes."""
    return [layer.name for layer in model.layers if isinstance(layer, CONVOLUTIONS)]


def check_layer(model, layer):
    """Raises ValueError unless `layer` names a convolution layer of `model` (the message lists them)."""
    choices = ", ".join(convolution_layers(model)) or "none"
    names = [existing.name for existing in model.layers]
    if layer not in names:
        raise ValueError(
            f"the model has no layer {layer!r}; Grad-CAM takes one of its convolution layers: {choices}"
        )
    found = model.get_layer(layer)
    if not isinstance(found, CONVOLUTIONS):
        raise ValueError(
            f"layer {layer!r} is a {type(found).__name__}, not a convolution: Grad-CAM needs a "
            f"layer's spatial maps; pass one of the model's convolution layers: {choices}"
        )


def split_model(model, layer=DEFAULT_LAYER):
    """(trunk, head): `model` cut at `layer`, images -> its maps -> the model's logits.

    Both share `model`'s weights; head(trunk(x)) is model(x). Raises ValueError as `check_layer`.
    """
    check_layer(model, layer)
    maps = model.get_layer(layer).output
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    trunk = keras.Model(inputs, maps, name=f"{model.name}_to_{layer}")
    head = keras.Model(maps, model.outputs[0], name=f"{model.name}_after_{layer}")
    return trunk, head


def _class_indices(class_index, count, num_classes, logits):
    """int64 [count]: the top-1 of each row of `logits` (None), one class for all, or one per image."""
    if class_index is None:
        return np.argmax(logits, axis=-1).astype(np.int64)
    indices = np.asarray(class_index)
    if indices.ndim == 0:
        indices = np.full([count], indices)
    if indices.shape != (count,) or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(
            f"class_index must be None, an integer or one integer per image ({count}), got {class_index!r}"
        )
    bad = indices[(indices < 0) | (indices >= num_classes)]
    if bad.size:
        raise ValueError(f"class_index {int(bad[0])} is out of range: the model has {num_classes} classes")
    return indices.astype(np.int64)


def grad_cam(model, images, class_index=None, layer=DEFAULT_LAYER):
    """Grad-CAM maps of `images` for a class, at a convolution layer of `model`.

    Args:
      model: a functional Keras model that outputs logits (every model this package builds or loads).
      images: float [N, H, W, 3], what the model takes (preprocessed crops).
      class_index: None (each image's top-1 class), an int (that class for every image), or
        N ints (one class per image).
      layer: the name of a convolution layer ("conv5": the last, the paper's coarsest maps).

    Returns:
      (heatmaps float32 [N, h, w] in [0, 1] at the layer's resolution, each divided by its
      maximum; class indices int64 [N], the classes they explain; logits float32 [N, classes]).

    Raises:
      ValueError: `layer` is not in the model or is not a convolution (the message lists the
        convolution layers), or a class index is out of range.
      NotImplementedError: a Keras backend other than TensorFlow.
    """
    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError(
            f"grad_cam takes gradients with TensorFlow; Keras runs on {keras.backend.backend()}"
        )
    import tensorflow as tf

    trunk, head = split_model(model, layer)
    images = tf.convert_to_tensor(images)
    maps = trunk(images, training=False)
    watched = tf.cast(maps, tf.float32)
    with tf.GradientTape(watch_accessed_variables=False) as tape:  # the maps only, not the weights
        tape.watch(watched)
        logits = tf.cast(head(tf.cast(watched, maps.dtype), training=False), tf.float32)
        classes = _class_indices(class_index, int(logits.shape[0]), int(logits.shape[-1]), logits.numpy())
        chosen = tf.gather(logits, classes, axis=1, batch_dims=1)
    # Each image's logit depends on its own maps only, so the gradient of the sum is per image.
    gradients = tape.gradient(chosen, watched)
    weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)  # alpha [N, 1, 1, K]
    heatmaps = tf.nn.relu(tf.reduce_sum(weights * watched, axis=-1)).numpy()
    return normalize(heatmaps), classes, logits.numpy()


def normalize(heatmaps):
    """Maps [N, h, w] >= 0 divided by each one's maximum (all-zero maps stay zero), float32."""
    heatmaps = np.asarray(heatmaps, np.float32)
    peaks = heatmaps.reshape(len(heatmaps), -1).max(axis=1, initial=0.0)
    return heatmaps / np.where(peaks > 0, peaks, 1.0)[:, None, None]


def _axis_weights(size_in, size_out):
    """(lower index, upper index, upper weight) of linear interpolation, pixel centres aligned."""
    position = (np.arange(size_out, dtype=np.float64) + 0.5) * size_in / size_out - 0.5
    position = np.clip(position, 0.0, size_in - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, size_in - 1)
    return lower, upper, position - lower


def upsample(heatmaps, size):
    """Bilinear resize of maps [N, h, w] to `size` (height, width), pixel centres aligned.

    The convention of `tf.image.resize(method="bilinear")` (half-pixel centres), in NumPy:
    values stay within each map's range.
    """
    heatmaps = np.asarray(heatmaps, np.float32)
    height, width = (size, size) if np.isscalar(size) else size
    top, bottom, dy = _axis_weights(heatmaps.shape[1], int(height))
    left, right, dx = _axis_weights(heatmaps.shape[2], int(width))
    rows = heatmaps[:, top] * (1 - dy[None, :, None]) + heatmaps[:, bottom] * dy[None, :, None]
    return (rows[:, :, left] * (1 - dx) + rows[:, :, right] * dx).astype(np.float32)


def jet(values):
    """The jet colour map: values in [0, 1] -> float32 RGB in [0, 1] (0 dark blue, 0.5 green, 1 dark red)."""
    values = np.clip(np.asarray(values, np.float32), 0.0, 1.0)[..., None]
    centres = np.array([3.0, 2.0, 1.0], np.float32)  # where red, green and blue peak, in quarters
    return np.clip(1.5 - np.abs(4.0 * values - centres), 0.0, 1.0)


def overlay(images, heatmaps, alpha=0.5):
    """Images with their heat maps laid over them in the jet colour map: uint8 [N, H, W, 3].

    Args:
      images: [N, H, W, 3] pictures: uint8, or floats in [0, 1].
      heatmaps: [N, h, w] in [0, 1] (any resolution: upsampled to H x W here).
      alpha: the colour map's weight; the image keeps 1 - alpha.
    """
    images = np.asarray(images)
    pictures = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    if pictures.ndim != 4 or pictures.shape[-1] != 3 or len(pictures) != len(heatmaps):
        raise ValueError(
            f"overlay: need images [N, H, W, 3] and N heat maps, got {images.shape} and {np.shape(heatmaps)}"
        )
    colours = jet(upsample(heatmaps, pictures.shape[1:3]))
    blended = (1.0 - alpha) * np.clip(pictures, 0.0, 1.0) + alpha * colours
    return np.round(blended * 255.0).astype(np.uint8)
