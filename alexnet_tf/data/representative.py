"""Calibration images for full-integer quantisation: evaluation crops of a converted data dir.

`representative_images(data_dir, image_size)` reads up to `max_images` records of the data dir's
validation shards (`validation-*`; a data dir without them falls back to its `train-*` shards
and says so in the returned split) and returns their evaluation crops as uint8 RGB pixels in
[0, 255]: the central square of the shorter side, rescaled to 256 x 256, then the central
`image_size` crop (`preprocessing.center_crop`, what evaluation and the serving signatures take
before they subtract the mean). The LiteRT int8 export (`alexnet_tf.serving.tflite_export`)
calibrates its activation ranges on them.
"""

import os

import numpy as np
import tensorflow as tf

from alexnet_tf.data import schema
from alexnet_tf.data.preprocessing import RESIZE_SHORTER, center_crop, check_sizes, decode_image

DEFAULT_MAX_IMAGES = 256
SPLITS = ("validation", "train")


def representative_shards(data_dir):
    """(split, shard files) of the split calibration reads: validation, else train.

    Raises:
      ValueError: `data_dir` holds neither `validation-*` nor `train-*` shards, naming it.
    """
    if not tf.io.gfile.isdir(data_dir):
        raise ValueError(
            f"representative data dir {data_dir} does not exist; pass a data dir written by "
            "python -m alexnet_tf.convert"
        )
    for split in SPLITS:
        files = sorted(tf.io.gfile.glob(os.path.join(data_dir, f"{split}-*")))
        if files:
            return split, files
    has_manifest = tf.io.gfile.exists(os.path.join(data_dir, schema.MANIFEST_FILENAME))
    raise ValueError(
        f"representative data dir {data_dir} has no validation-* or train-* TFRecord shards"
        f"{'' if has_manifest else ' and no ' + schema.MANIFEST_FILENAME}; convert your images with "
        "python -m alexnet_tf.convert and pass its --output_dir"
    )


def representative_images(
    data_dir, image_size, max_images=DEFAULT_MAX_IMAGES, resize_shorter=RESIZE_SHORTER, progress=None
):
    """Up to `max_images` evaluation crops of `data_dir`'s images, uint8 [N, S, S, 3], in file order.

    Args:
      data_dir: a converted data dir (TFRecord shards in the schema of `alexnet_tf.data.schema`).
      image_size: S, the model's crop size.
      max_images: read at most this many images (>= 1).
      resize_shorter: the side of the square the crop is taken from (the paper's 256).
      progress: None, or a callable taking (images read so far, max_images) after each image.

    Returns:
      (uint8 array [N, S, S, 3], split): the crops and the split they came from ("validation",
      or "train" when the data dir has no validation shards).

    Raises:
      ValueError, naming the dir and what to do: no shards, no images in them, or an image
        whose shorter side is below S (converted for a smaller model: its crop would be an
        upscaled picture unlike anything the model sees).
    """
    check_sizes(image_size, resize_shorter)
    if int(max_images) < 1:
        raise ValueError(f"representative images must be at least 1, got {max_images}")
    split, files = representative_shards(data_dir)
    dataset = tf.data.TFRecordDataset(files).take(int(max_images))

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def crop(record):
        encoded = tf.io.parse_single_example(
            record, {schema.ENCODED_KEY: schema.FEATURE_SPEC[schema.ENCODED_KEY]}
        )[schema.ENCODED_KEY]
        image = decode_image(encoded)
        shape = tf.shape(image)
        return tf.minimum(shape[0], shape[1]), center_crop(image, image_size, resize_shorter)

    dataset = dataset.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    crops = []
    try:
        for shorter, image in dataset.as_numpy_iterator():
            if shorter < image_size:
                raise ValueError(
                    f"representative data dir {data_dir} holds {shorter}-pixel images (shorter side), "
                    f"smaller than the model's {image_size}-pixel crop: it was converted for another "
                    "image size; calibrate on images converted with --resize_shorter at least "
                    f"{image_size} (the default {RESIZE_SHORTER})"
                )
            crops.append(image)
            if progress is not None:
                progress(len(crops), int(max_images))
    except tf.errors.OpError as e:
        reason = e.message.splitlines()[0]
        message = f"representative data dir {data_dir}: cannot read its {split} shards ({reason})"
        raise ValueError(message) from None
    if not crops:
        raise ValueError(
            f"representative data dir {data_dir} has no images in its {split} shards; "
            "convert your images with python -m alexnet_tf.convert"
        )
    return np.stack(crops), split
