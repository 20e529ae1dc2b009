"""Owns what training writes to TensorBoard: scalars, input, filter and Grad-CAM images, histograms.

Layout (what `tensorboard --logdir=<model_dir>` shows): runs `train` and `validation`, with
scalars `loss`, `top1`, `top5`, `images_per_sec` in both and `learning_rate` in train;
images `augmented_inputs` (once, at step 0) and `conv1_filters` (every epoch, the picture of
the paper's Figure 3) in train, and `gradcam` (every epoch: a few validation images over their
Grad-CAM maps at conv5 for the predicted class, `gradcam_image`) in validation. Step numbers
are global optimizer steps, so a resumed run continues its curves. At the end of training the
`validation` run also gets the fc7 embeddings of up to PROJECTOR_MAX_IMAGES validation images
for the projector tab (`write_projector`: label and prediction metadata, thumbnails in a sprite).
"""

import math
import os

import numpy as np
import tensorflow as tf

from alexnet_tf import explain
from alexnet_tf.data import preprocessing

HISTOGRAM_MAX_VALUES = 1 << 18
# The projector's sample: enough to see the classes cluster, cheap to compute at the end of a run
# (one forward pass of 256 images) and to load in a browser (1 MB of fc7 features).
PROJECTOR_MAX_IMAGES = 256
SPRITE_THUMBNAIL_PX = 48
PROJECTOR_CHECKPOINT = "projector_embeddings"
PROJECTOR_METADATA = "projector_metadata.tsv"
PROJECTOR_SPRITE = "projector_sprite.png"


def tile_images(images, columns=None, pad=1):
    """Tiles [N, H, W, C] images in [0, 1] into one [1, rows*(H+pad)-pad, ..., C] grid."""
    images = np.asarray(images, np.float32)
    count, height, width, channels = images.shape
    columns = columns or int(math.ceil(math.sqrt(count)))
    rows = int(math.ceil(count / columns))
    grid = np.ones((rows * (height + pad) - pad, columns * (width + pad) - pad, channels), np.float32)
    for i, image in enumerate(images):
        top, left = (i // columns) * (height + pad), (i % columns) * (width + pad)
        grid[top : top + height, left : left + width] = image
    return grid[np.newaxis]


def filter_grid(kernel, towers=1, columns=16, min_filter_px=44, pad=2, tower_gap=10):
    """The first layer's filters as one image, like the paper's Figure 3: [1, H, W, 3] in [0, 1].

    Args:
      kernel: conv1's kernel [kh, kw, 3, n].
      towers: how many blocks the n filters are drawn in: 2 for the paper's two GPU towers
        (filters [0, n/2) fed tower 1's grouped conv2, [n/2, n) tower 2's), 1 for one block.
      columns: filters per row of a block (16: the paper's 48 filters per tower in 3 rows).
      min_filter_px: each filter is scaled up by a whole factor (nearest neighbour) to at
        least this many pixels on its longer side (11x11 -> 44x44), so a browser shows it.
      pad: white pixels between filters; `tower_gap` between the blocks.

    Each filter is contrast-normalised on its own: stretched to [0, 1] from its minimum to its
    maximum over all three colours.
    """
    kernel = np.asarray(kernel, np.float32)
    filters = np.transpose(kernel, (3, 0, 1, 2))
    count = len(filters)
    if towers < 1 or count % towers:
        raise ValueError(f"filter_grid: {count} filters do not split into {towers} towers")
    low = filters.min(axis=(1, 2, 3), keepdims=True)
    high = filters.max(axis=(1, 2, 3), keepdims=True)
    filters = (filters - low) / np.maximum(high - low, 1e-12)
    scale = max(1, -(-min_filter_px // max(filters.shape[1:3])))
    filters = filters.repeat(scale, axis=1).repeat(scale, axis=2)
    per_tower = count // towers
    blocks = [
        tile_images(filters[t * per_tower : (t + 1) * per_tower], min(columns, per_tower), pad)[0]
        for t in range(towers)
    ]
    gap = np.ones((tower_gap, blocks[0].shape[1], 3), np.float32)
    parts = [part for block in blocks for part in (gap, block)][1:]
    return np.concatenate(parts, axis=0)[np.newaxis]


def conv1_filter_image(model):
    """filter_grid of a model's conv1, in towers as its conv2 groups them, channels in RGB order.

    A model whose first layer converts the input to BGR (Caffe's imported weights) has BGR
    kernels; they are shown in RGB so colours look as they respond.
    """
    kernel = model.get_layer("conv1").weights[0].numpy()
    try:
        conversion = model.get_layer("input_conversion")
    except ValueError:
        conversion = None
    if getattr(conversion, "channel_order", "rgb") == "bgr":
        kernel = kernel[:, :, ::-1]
    try:
        towers = int(getattr(model.get_layer("conv2"), "groups", 1))
    except ValueError:
        towers = 1
    if kernel.shape[-1] % towers:
        towers = 1
    return filter_grid(kernel, towers=towers)


def displayable_inputs(images):
    """Mean-subtracted float images in [0, 255] units (the pipeline's output) -> [0, 1]."""
    images = np.asarray(images, np.float32) + np.asarray(preprocessing.MEAN_RGB, np.float32)
    return np.clip(images / 255.0, 0.0, 1.0)


GRADCAM_DESCRIPTION = (
    "Grad-CAM at {layer} of the predicted class: validation images (top row) and their maps laid "
    "over them (bottom row; red: the class's evidence, blue: none)."
)


def gradcam_image(model, images, layer=explain.DEFAULT_LAYER):
    """The Grad-CAM of `images` (the pipeline's crops) for their predicted classes, as one image.

    Returns:
      ([1, 2 * H + 1, N * (W + 1) - 1, 3] in [0, 1]: the images in the top row and their
      overlays (`explain.overlay`) under them, the predicted classes int64 [N]).
    """
    heatmaps, classes, _ = explain.grad_cam(model, images, layer=layer)
    pictures = displayable_inputs(images)
    overlays = explain.overlay(pictures, heatmaps).astype(np.float32) / 255.0
    return tile_images(np.concatenate([pictures, overlays]), columns=len(pictures)), classes


def sprite_thumbnails(images, size=SPRITE_THUMBNAIL_PX):
    """Mean-subtracted [N, H, W, 3] crops -> [N, size, size, 3] thumbnails in [0, 1]."""
    thumbnails = tf.image.resize(displayable_inputs(images), [size, size], antialias=True)
    return np.clip(thumbnails.numpy(), 0.0, 1.0)


def _tsv_field(text):
    return " ".join(str(text).split())  # no tabs or line breaks inside a field


def write_projector(log_dir, features, metadata, thumbnails, tensor_name="fc7"):
    """Writes embeddings that TensorBoard's projector shows for the run in `log_dir`.

    Files in `log_dir`: `projector_config.pbtxt` (written by TensorBoard's own
    `projector.visualize_embeddings`), the checkpoint `projector_embeddings-1` (+ its
    `checkpoint` index) holding the float32 [N, D] variable `tensor_name`, `PROJECTOR_METADATA`
    (a header line, then one tab-separated line per row) and `PROJECTOR_SPRITE`, the
    thumbnails tiled row-major in a ceil(sqrt(N))-wide grid, as the projector expects.
    Every path in the config is relative, so the model dir can be moved.

    Args:
      log_dir: a run directory (one with event files, so TensorBoard lists it).
      features: float32 [N, D].
      metadata: {column name: N strings}, at least two columns (one column has no header).
      thumbnails: [N, h, w, 3] in [0, 1].
      tensor_name: the variable's name in the checkpoint and the projector's menu.

    Returns:
      The tensor name the projector shows (`<tensor_name>/.ATTRIBUTES/VARIABLE_VALUE`).
    """
    from tensorboard.plugins import projector

    features = np.asarray(features, np.float32).reshape(len(features), -1)
    count = len(features)
    if len(metadata) < 2 or any(len(values) != count for values in metadata.values()):
        raise ValueError(f"write_projector: need >= 2 metadata columns of {count} values")
    tf.io.gfile.makedirs(log_dir)
    checkpoint = tf.train.Checkpoint(**{tensor_name: tf.Variable(features, trainable=False)})
    checkpoint.save(os.path.join(log_dir, PROJECTOR_CHECKPOINT))
    with tf.io.gfile.GFile(os.path.join(log_dir, PROJECTOR_METADATA), "w") as f:
        f.write("\t".join(_tsv_field(name) for name in metadata) + "\n")
        for row in zip(*metadata.values()):
            f.write("\t".join(_tsv_field(value) for value in row) + "\n")
    thumbnails = np.asarray(thumbnails, np.float32)
    columns = int(math.ceil(math.sqrt(count)))
    sprite = tile_images(thumbnails, columns=columns, pad=0)[0]
    png = tf.io.encode_png(tf.cast(tf.round(sprite * 255.0), tf.uint8)).numpy()
    with tf.io.gfile.GFile(os.path.join(log_dir, PROJECTOR_SPRITE), "wb") as f:
        f.write(png)
    config = projector.ProjectorConfig()
    entry = config.embeddings.add()
    entry.tensor_name = f"{tensor_name}/.ATTRIBUTES/VARIABLE_VALUE"
    entry.metadata_path = PROJECTOR_METADATA
    entry.sprite.image_path = PROJECTOR_SPRITE
    entry.sprite.single_image_dim.extend([thumbnails.shape[2], thumbnails.shape[1]])  # width, height
    projector.visualize_embeddings(log_dir, config)
    return entry.tensor_name


class SummaryWriters:
    """The `train` and `validation` event writers; no-op writers on non-chief workers."""

    def __init__(self, model_dir, chief):
        if chief:
            self._writers = {
                split: tf.summary.create_file_writer(os.path.join(model_dir, split))
                for split in ("train", "validation")
            }
        else:
            noop = tf.summary.create_noop_writer()
            self._writers = {"train": noop, "validation": noop}

    def scalars(self, split, step, values):
        with self._writers[split].as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, float(value))

    def image(self, split, step, name, image, description=None):
        with self._writers[split].as_default(step=step):
            tf.summary.image(name, image, max_outputs=1, description=description)

    def histograms(self, split, step, variables, max_values=HISTOGRAM_MAX_VALUES):
        """One histogram per Keras variable, tagged with its path (e.g. conv1/kernel).

        Variables larger than `max_values` contribute an evenly strided sample: bucketing all of
        fc6's 37.7 M weights takes seconds, and the sample has the same distribution.
        """
        with self._writers[split].as_default(step=step):
            for variable in variables:
                values = variable.numpy().ravel()
                tf.summary.histogram(variable.path, values[:: -(-values.size // max_values)])

    def flush(self):
        for writer in self._writers.values():
            writer.flush()

    def close(self):
        for writer in self._writers.values():
            writer.close()
