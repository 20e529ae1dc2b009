"""Runs a model over a Source in batches: a layer's features or the probabilities, and thumbnails.

Every image goes through the centre crop of evaluation and serving
(`preprocessing.preprocess_for_eval` on `preprocessing.decode_image`), with a progress line on
stderr; an image that fails is named in its Source and left out.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from alexnet_tf.cli import error_message
from alexnet_tf.data import convert, preprocessing


@dataclasses.dataclass
class Extracted:
    """What came out of a Source, in its order: failed images are missing."""

    indices: np.ndarray  # int64 [N], positions in the source
    names: list
    labels: np.ndarray  # int32 [N], -1 unknown
    values: object  # features [N, ...], probabilities [N, C], or a tuple of arrays [N, ...]


def extract(model, source, batch_size, layer=None, progress=True, compute=None, what=None):
    """Runs `model` over `source`: its `layer` features, or with layer=None its probabilities.

    `compute` (crops -> an array or a tuple of arrays, one row per image) replaces both, with
    `what` naming it on the progress line. Images that cannot be used are left out and
    recorded with `source.skip`.
    """

    def crop(index, name, label, encoded):
        image = preprocessing.decode_image(encoded)
        return index, name, label, preprocessing.preprocess_for_eval(image, model.image_size)

    dataset = source.elements()
    if model.takes_crops:
        dataset = dataset.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        batch_size = min(batch_size, model.max_batch)
    # A record that is no Example, or bytes that are no image, fail their element: dropped here
    # and named after the loop. The reader's own errors never get here (see Source.elements).
    dataset = dataset.ignore_errors().batch(batch_size).prefetch(2)
    bar = convert.Progress(source.total, what or ("features" if layer else "predictions"), progress)
    indices, names, labels, values = [], [], [], []
    refused = set()  # indices the SavedModel refused, already recorded
    if compute is None:
        compute = (lambda x: model.features(x, layer)) if layer else model.probabilities
    for batch_indices, batch_names, batch_labels, inputs in dataset:
        try:
            rows = [(slice(None), compute(inputs))]
        except tf.errors.InvalidArgumentError:  # a SavedModel refused a bad image: find it
            rows = []
            for i in range(len(batch_indices)):
                try:
                    rows.append((slice(i, i + 1), compute(inputs[i : i + 1])))
                except tf.errors.InvalidArgumentError as e:
                    index = int(batch_indices[i])
                    refused.add(index)
                    source.skip(index, batch_names[i].numpy().decode("utf-8", "replace"), error_message(e))
        for where, value in rows:
            indices.append(batch_indices.numpy()[where])
            names += [n.decode("utf-8", "replace") for n in batch_names.numpy()[where]]
            labels.append(batch_labels.numpy()[where])
            values.append(value)
        bar.update(int(batch_indices[-1]) + 1)  # images read, skipped ones included
    if source.error is not None:
        raise source.error
    bar.update(source.read)  # skipped images at the end are read too: the line ends at N/N
    bar.close()
    done = set(np.concatenate(indices).tolist()) if indices else set()
    source.used = len(done)
    dropped = [i for i in source.names if i not in done and i not in refused]
    for index, name, reason in source.explain(dropped):
        source.skip(index, name, reason)
    if not indices:
        return Extracted(np.zeros([0], np.int64), [], np.zeros([0], np.int32), np.zeros([0], np.float32))
    if isinstance(values[0], tuple):
        values = tuple(np.concatenate(parts) for parts in zip(*values))
    else:
        values = np.concatenate(values)
    return Extracted(np.concatenate(indices), names, np.concatenate(labels).astype(np.int32), values)


def thumbnails(encoded, image_size, size):
    """uint8 [size, size, 3] pictures of the centre crops the model sees, one per encoded image."""
    pictures = []
    for image in encoded:
        crop = preprocessing.center_crop(preprocessing.decode_image(tf.constant(image)), image_size)
        picture = tf.image.resize(crop, [size, size], method="bilinear", antialias=True)
        pictures.append(tf.saturate_cast(tf.round(picture), tf.uint8).numpy())
    return pictures
