"""Dataset conversion: image folders or ILSVRC tars -> sharded TFRecords, labels.txt, manifest.json.

Every input is judged by its bytes, never its name: CMYK/grayscale JPEGs and PNG/GIF/BMP/WebP
content become RGB JPEGs ("repaired"); empty, truncated, corrupt and non-image files are
"skipped", and so are entries the scan cannot use (names that are not UTF-8, broken symlinks,
symlink loops, unreadable folders, pipes): one bad entry never stops a run. Both lists, the
per-shard record counts and sha256s, and a fingerprint of the input (names, sizes and
modification times) go into manifest.json, which is rewritten atomically as each shard
completes so that a killed run resumes where it stopped.

    images.py        one image by its bytes: sniffing, decoding, repairing, resizing, the Example
    scan.py          class folders and tars, validation labels, the plan of every shard
    shards.py        the worker pool, shard writing, the progress line
    build.py         the convert() run: settings, manifest, labels.txt, resuming with kept shards
    verification.py  verify(): every record re-read and checked against the manifest

The names below are the package's API: `from alexnet_tf.data import convert`, then
`convert.convert(...)`, `convert.verify(...)`, `convert.ConversionError`.
"""

from alexnet_tf.data.convert.build import (
    DEFAULT_TRAIN_SHARDS,
    DEFAULT_VALIDATION_SHARDS,
    FORMAT_VERSION,
    SPLITS,
    convert,
    load_manifest,
)
from alexnet_tf.data.convert.images import (
    DEFAULT_QUALITY,
    DEFAULT_RESIZE_SHORTER,
    BadImageError,
    ConvertedImage,
    convert_image,
    make_example,
    resize_shorter_side,
    sniff_format,
)
from alexnet_tf.data.convert.scan import ConversionError, tfds_validation_labels_path, walk_class_folder
from alexnet_tf.data.convert.shards import Progress, sha256_file, shard_name
from alexnet_tf.data.convert.verification import verify

__all__ = [
    "DEFAULT_QUALITY",
    "DEFAULT_RESIZE_SHORTER",
    "DEFAULT_TRAIN_SHARDS",
    "DEFAULT_VALIDATION_SHARDS",
    "FORMAT_VERSION",
    "SPLITS",
    "BadImageError",
    "ConversionError",
    "ConvertedImage",
    "Progress",
    "convert",
    "convert_image",
    "load_manifest",
    "make_example",
    "resize_shorter_side",
    "sha256_file",
    "shard_name",
    "sniff_format",
    "tfds_validation_labels_path",
    "verify",
    "walk_class_folder",
]
