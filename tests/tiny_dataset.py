"""Writes the tiny two-split TFRecord dataset that the trainer, evaluation and distribution tests use."""

import hashlib
import json
import os

import numpy as np
import tensorflow as tf
from tfrecord_fixtures import natural_image, write_fake_tfrecords


def write_tiny_dataset(
    directory,
    *,
    train_records=16,
    validation_records=8,
    num_classes=5,
    train_shards=2,
    validation_shards=2,
    seed=0,
):
    """Writes train-* and validation-* shards, labels.txt and a manifest counting both splits.

    Returns:
      `directory`, as a string.
    """
    directory = str(directory)
    write_fake_tfrecords(
        directory,
        num_records=train_records,
        num_shards=train_shards,
        split="train",
        num_classes=num_classes,
        seed=seed,
        write_manifest=False,
    )
    write_fake_tfrecords(
        directory,
        num_records=validation_records,
        num_shards=validation_shards,
        split="validation",
        num_classes=num_classes,
        seed=seed + 1,
        write_manifest=False,
    )
    # What the converter's fingerprint (a sha256 of the input files' names, sizes and times) stands
    # for here: the arguments that made the images.
    arguments = (
        f"tiny:{train_records}:{validation_records}:{num_classes}:{train_shards}:{validation_shards}:{seed}"
    )
    manifest = {
        "fingerprint": hashlib.sha256(arguments.encode()).hexdigest(),
        "label_offset": 0,
        "num_classes": num_classes,
        "splits": {
            "train": {"num_examples": train_records, "num_shards": train_shards},
            "validation": {"num_examples": validation_records, "num_shards": validation_shards},
        },
    }
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return directory


def write_jpeg(path, height=300, width=400, seed=0):
    """Writes a real JPEG file of smoothed noise and returns its bytes."""
    jpeg = tf.io.encode_jpeg(natural_image(np.random.default_rng(seed), height, width)).numpy()
    with open(path, "wb") as f:
        f.write(jpeg)
    return jpeg
