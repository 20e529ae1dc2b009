"""Owns what training writes to TensorBoard: scalars, input and filter images, histograms.

Layout (what `tensorboard --logdir=<model_dir>` shows): runs `train` and `validation`, with
scalars `loss`, `top1`, `top5`, `images_per_sec` in both and `learning_rate` in train;
images `augmented_inputs` (once, at step 0) and `conv1_filters` (every epoch, the picture of
the paper's Figure 3) in train. Step numbers are global optimizer steps, so a resumed run
continues its curves.
"""

import math
import os

import numpy as np
import tensorflow as tf

from alexnet_tf import preprocessing

HISTOGRAM_MAX_VALUES = 1 << 18


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


def filter_grid(kernel, columns=12):
    """The first layer's filters as one image: kernel [kh, kw, 3, n] -> [1, H, W, 3] in [0, 1].

    Each filter is stretched to [0, 1] on its own, as in the paper's Figure 3 (96 filters of
    11x11x3 in 8 rows of 12).
    """
    kernel = np.asarray(kernel, np.float32)
    filters = np.transpose(kernel, (3, 0, 1, 2))
    low = filters.min(axis=(1, 2, 3), keepdims=True)
    high = filters.max(axis=(1, 2, 3), keepdims=True)
    filters = (filters - low) / np.maximum(high - low, 1e-12)
    return tile_images(filters, columns=min(columns, len(filters)))


def displayable_inputs(images):
    """Mean-subtracted float images in [0, 255] units (the pipeline's output) -> [0, 1]."""
    images = np.asarray(images, np.float32) + np.asarray(preprocessing.MEAN_RGB, np.float32)
    return np.clip(images / 255.0, 0.0, 1.0)


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
