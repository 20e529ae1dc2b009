"""Owns the ImageNet input pipeline: TFRecord schema, decoding, the paper's preprocessing, tf.data datasets.

Images leave every pipeline as float32 NHWC in the [0, 255] scale with the ImageNet mean
subtracted (the paper's input convention); labels leave as 0-based int32.

Following the paper (PAPER.md, "Data"), an image is first reduced to the central square of its
shorter side, rescaled to 256 x 256 when it is not already that size (the converter writes
images whose shorter side is 256, so rescaling is normally skipped), and then cropped:
- train ("paper"): a random 224 crop of that square, horizontal flip, PCA lighting noise;
- eval: the central 224 crop, or ten crops (four corners, centre, and their mirror images).
The cheap per-pixel work (flip, cast, lighting, mean) runs on whole batches after `batch()`.
"""

import concurrent.futures
import dataclasses
import json
import os

from absl import logging
import numpy as np
import tensorflow as tf

IMAGE_SIZE = 224
RESIZE_SHORTER = 256
# Per-channel mean of the ImageNet training set, RGB, in [0, 255] pixel units.
MEAN_RGB = (123.68, 116.78, 103.94)
# PCA of ImageNet RGB pixels in [0, 1] units (PAPER.md); EIGVEC holds the rows as printed there.
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
              (-0.5808, -0.0045, -0.8140),
              (-0.5836, -0.6948, 0.4203))
PCA_STD = 0.1
AUGMENTATIONS = ("paper", "inception")

MANIFEST_FILENAME = "manifest.json"
LABELS_FILENAME = "labels.txt"

# tf.train.Example keys of the model-garden ImageNet schema (tools/build_imagenet_tfrecords.py
# writes the same). Stored labels are 0-based (ours, tfds) or 1-based (model-garden).
ENCODED_KEY = "image/encoded"
FORMAT_KEY = "image/format"
HEIGHT_KEY = "image/height"
WIDTH_KEY = "image/width"
CHANNELS_KEY = "image/channels"
COLORSPACE_KEY = "image/colorspace"
FILENAME_KEY = "image/filename"
LABEL_KEY = "image/class/label"
SYNSET_KEY = "image/class/synset"
TEXT_KEY = "image/class/text"
BBOX_XMIN_KEY = "image/object/bbox/xmin"
BBOX_YMIN_KEY = "image/object/bbox/ymin"
BBOX_XMAX_KEY = "image/object/bbox/xmax"
BBOX_YMAX_KEY = "image/object/bbox/ymax"

FEATURE_SPEC = {
    ENCODED_KEY: tf.io.FixedLenFeature([], tf.string),
    FORMAT_KEY: tf.io.FixedLenFeature([], tf.string, default_value="JPEG"),
    HEIGHT_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    WIDTH_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    CHANNELS_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=3),
    COLORSPACE_KEY: tf.io.FixedLenFeature([], tf.string, default_value="RGB"),
    FILENAME_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    SYNSET_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    TEXT_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    BBOX_XMIN_KEY: tf.io.VarLenFeature(tf.float32),
    BBOX_YMIN_KEY: tf.io.VarLenFeature(tf.float32),
    BBOX_XMAX_KEY: tf.io.VarLenFeature(tf.float32),
    BBOX_YMAX_KEY: tf.io.VarLenFeature(tf.float32),
}

# A TFRecord frame is an 8-byte length, its 4-byte CRC, the data, and the data's 4-byte CRC.
_TFRECORD_FRAME_BYTES = 16
# Records the shard reader handles per tf.data function call (see _read_shard).
_READ_GROUP = 64
# Ends each shard's record stream. 0xff opens a protobuf field with wire type 7, which does not
# exist, so no serialized Example equals it.
_END_OF_SHARD = b"\xffalexnet_tf:end-of-shard"


# ----------------------------------------------------------------------------- labels


@dataclasses.dataclass(frozen=True)
class LabelEntry:
    """One line of a labels file: `index<TAB>synset<TAB>name`."""

    index: int
    synset: str
    name: str


def read_labels_file(path):
    """Reads a labels file written by the converter.

    Args:
      path: file with one `index<TAB>synset<TAB>name` line per class, indices consecutive
        (0-based for our converter; the name may be missing).

    Returns:
      A list of LabelEntry in file order.
    """
    entries = []
    with tf.io.gfile.GFile(path, "r") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) not in (2, 3) or not fields[0].strip().isdigit():
                raise ValueError(f"{path}:{line_number}: expected 'index<TAB>synset<TAB>name', got {line!r}")
            index = int(fields[0])
            if entries and index != entries[-1].index + 1:
                raise ValueError(f"{path}:{line_number}: index {index} does not follow {entries[-1].index}")
            entries.append(LabelEntry(index, fields[1], fields[2] if len(fields) == 3 else fields[1]))
    return entries


def detect_label_offset(data_dir):
    """Returns the value to subtract from stored labels to make them 0-based, or None if unknown.

    Looks at `manifest.json` (top-level "label_offset") and then `labels.txt` (the first index).
    Model-garden and tfds data carry neither; pass the offset explicitly for them (1 and 0).

    Args:
      data_dir: directory that holds the shards.
    """
    from_manifest = from_labels = None
    manifest_path = os.path.join(data_dir, MANIFEST_FILENAME)
    if tf.io.gfile.exists(manifest_path):
        with tf.io.gfile.GFile(manifest_path, "r") as f:
            from_manifest = json.load(f).get("label_offset")
    labels_path = os.path.join(data_dir, LABELS_FILENAME)
    if tf.io.gfile.exists(labels_path):
        entries = read_labels_file(labels_path)
        from_labels = entries[0].index if entries else None
    if None not in (from_manifest, from_labels) and from_manifest != from_labels:
        raise ValueError(f"{data_dir}: {MANIFEST_FILENAME} says label_offset={from_manifest} but "
                         f"{LABELS_FILENAME} starts at index {from_labels}")
    return from_labels if from_manifest is None else int(from_manifest)


# ----------------------------------------------------------------------------- preprocessing


def decode_image(image_bytes):
    """Decodes JPEG, PNG, GIF (first frame) or BMP bytes to uint8 RGB [H, W, 3] (grey -> RGB).

    Args:
      image_bytes: scalar string tensor.

    Returns:
      uint8 tensor [H, W, 3].
    """
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _central_square_window(height, width):
    side = tf.minimum(height, width)
    return (height - side) // 2, (width - side) // 2, side


def _resize_square(image, size):
    """Rescales a square image to size x size, keeping its dtype; a no-op when it already fits."""

    def resize():
        resized = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
        if image.dtype == tf.uint8:
            return tf.saturate_cast(tf.round(resized), tf.uint8)
        return tf.cast(resized, image.dtype)

    image = tf.cond(tf.equal(tf.shape(image)[0], size), lambda: tf.identity(image), resize)
    image.set_shape([size, size, 3])
    return image


def _square(image, resize_shorter):
    """The paper's 256 x 256 central patch of a decoded image of any size."""
    shape = tf.shape(image)
    top, left, side = _central_square_window(shape[0], shape[1])
    return _resize_square(image[top:top + side, left:left + side], resize_shorter)


def _check_sizes(image_size, resize_shorter):
    if not 0 < image_size <= resize_shorter:
        raise ValueError(f"need 0 < image_size <= resize_shorter, got image_size={image_size}, "
                         f"resize_shorter={resize_shorter}")


def center_crop(image, image_size=IMAGE_SIZE, resize_shorter=RESIZE_SHORTER):
    """Returns the central image_size crop of the 256 square, same dtype as `image` ([H, W, 3])."""
    _check_sizes(image_size, resize_shorter)
    offset = (resize_shorter - image_size) // 2
    return _square(image, resize_shorter)[offset:offset + image_size, offset:offset + image_size]


def subtract_mean(images):
    """Casts images in [0, 255] to float32 and subtracts the ImageNet RGB mean."""
    return tf.cast(images, tf.float32) - tf.constant(MEAN_RGB, tf.float32)


def preprocess_for_eval(image, image_size=IMAGE_SIZE, resize_shorter=RESIZE_SHORTER):
    """Single-crop evaluation preprocessing, shared by evaluation and the serving signature.

    Args:
      image: decoded image [H, W, 3], uint8 or float in [0, 255], any size.
      image_size: crop size.
      resize_shorter: the shorter side is rescaled to this first (the paper's 256).

    Returns:
      float32 [image_size, image_size, 3], mean subtracted.
    """
    return subtract_mean(center_crop(image, image_size, resize_shorter))


def _ten_crops(image, image_size, resize_shorter):
    _check_sizes(image_size, resize_shorter)
    square = _square(image, resize_shorter)
    far, mid = resize_shorter - image_size, (resize_shorter - image_size) // 2
    crops = [square[y:y + image_size, x:x + image_size]
             for y, x in ((0, 0), (0, far), (far, 0), (far, far), (mid, mid))]
    crops = tf.stack(crops)
    return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)


def ten_crop(image, image_size=IMAGE_SIZE, resize_shorter=RESIZE_SHORTER):
    """The paper's test-time crops of the 256 square: corners TL, TR, BL, BR, centre, then mirrors.

    Args:
      image: decoded image [H, W, 3], uint8 or float in [0, 255], any size.
      image_size: crop size.
      resize_shorter: the shorter side is rescaled to this first.

    Returns:
      float32 [10, image_size, image_size, 3], mean subtracted.
    """
    return subtract_mean(_ten_crops(image, image_size, resize_shorter))


def _random_paper_crop(image_bytes, image_size, resize_shorter):
    """Random image_size crop of the central 256 square, decoding only the crop where possible."""
    dy, dx = tf.unstack(tf.random.uniform([2], 0, resize_shorter - image_size + 1, tf.int32))

    is_jpeg = tf.io.is_jpeg(image_bytes)
    shape = tf.cond(is_jpeg, lambda: tf.image.extract_jpeg_shape(image_bytes),
                    lambda: tf.zeros([3], tf.int32))

    def fused():
        top, left, _ = _central_square_window(shape[0], shape[1])
        window = tf.stack([top + dy, left + dx, image_size, image_size])
        return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)

    def general():
        square = _square(decode_image(image_bytes), resize_shorter)
        return square[dy:dy + image_size, dx:dx + image_size]

    # Converter output is JPEG with shorter side 256: decode the crop only. Anything else
    # (other sizes, PNG records) is decoded whole and rescaled.
    fits = tf.logical_and(is_jpeg, tf.equal(tf.minimum(shape[0], shape[1]), resize_shorter))
    return tf.cond(fits, fused, general)


def _random_inception_crop(image_bytes, image_size):
    """Random-resized crop (8%-100% of the area, aspect 3/4-4/3) as in Inception/ResNet training."""
    is_jpeg = tf.io.is_jpeg(image_bytes)
    shape = tf.cond(is_jpeg, lambda: tf.image.extract_jpeg_shape(image_bytes),
                    lambda: tf.shape(decode_image(image_bytes)))
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    crop = tf.cond(is_jpeg, lambda: tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3),
                   lambda: tf.slice(decode_image(image_bytes), begin, size))
    resized = tf.image.resize(crop, [image_size, image_size], method="bilinear", antialias=True)
    return tf.saturate_cast(tf.round(resized), tf.uint8)


def decode_and_random_crop(image_bytes, image_size=IMAGE_SIZE, resize_shorter=RESIZE_SHORTER,
                           augment="paper"):
    """The per-image part of training preprocessing: decode and random crop, still uint8.

    Args:
      image_bytes: scalar string tensor (JPEG; PNG/GIF/BMP also work, more slowly).
      image_size: crop size.
      resize_shorter: "paper" crops come from the central square rescaled to this size.
      augment: "paper" (random crop of the 256 square) or "inception" (random-resized crop).

    Returns:
      uint8 [image_size, image_size, 3].
    """
    _check_sizes(image_size, resize_shorter)
    if augment == "paper":
        image = _random_paper_crop(image_bytes, image_size, resize_shorter)
    elif augment == "inception":
        image = _random_inception_crop(image_bytes, image_size)
    else:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    image.set_shape([image_size, image_size, 3])
    return image


def pca_lighting(images, alpha):
    """Adds the paper's PCA lighting noise `eigvec @ (alpha * eigval)` to every pixel.

    Args:
      images: float32 [..., H, W, 3] in [0, 255] units.
      alpha: float32 [..., 3], one draw per image (the paper draws alpha ~ N(0, 0.1)).

    Returns:
      images + the per-image RGB offset (no clipping, as in the paper).
    """
    return images + _lighting_rgb(alpha)[..., tf.newaxis, tf.newaxis, :]


def _lighting_rgb(alpha):
    eigval = tf.constant(PCA_EIGVAL, tf.float32) * 255.0
    return tf.linalg.matvec(tf.constant(PCA_EIGVEC, tf.float32), alpha * eigval)


def _flip_and_offset(images, flip, offset):
    """float32(images, mirrored where `flip`) + a per-image RGB offset; images [B, H, W, 3]."""
    images = tf.where(flip[:, tf.newaxis, tf.newaxis, tf.newaxis], tf.reverse(images, axis=[2]), images)
    return tf.cast(images, tf.float32) + offset[:, tf.newaxis, tf.newaxis, :]


# Op by op, TensorFlow's CPU kernels spend ~0.4 ms per 224 image on this (a generic broadcasting
# add over 3-channel pixels, and a reverse); one XLA loop over the batch spends ~0.04 ms
# (python -m alexnet_tf.benchmark --mode=input). The random draws stay outside: XLA ignores op seeds.
_flip_and_offset_jit = tf.function(_flip_and_offset, jit_compile=True)


def _flip_and_offset_xla(images, flip, offset):
    # Pinned to the host, where tf.data runs: a GPU placement would copy the batch twice.
    with tf.device("/device:CPU:0"):
        return _flip_and_offset_jit(images, flip, offset)


def augment_batch(images, pca_std=PCA_STD, jit_compile=True):
    """The per-batch part of training preprocessing: flip, float32, PCA lighting, mean.

    Args:
      images: uint8 [B, H, W, 3].
      pca_std: standard deviation of the lighting alpha (0 turns lighting off).
      jit_compile: run the per-pixel work as one XLA kernel (same result, ~10x less CPU).

    Returns:
      float32 [B, H, W, 3], mean subtracted.
    """
    batch = tf.shape(images)[0]
    flip = tf.random.uniform([batch]) < 0.5
    alpha = tf.random.normal([batch, 3], stddev=pca_std)
    # One add does both the lighting and the mean subtraction.
    offset = _lighting_rgb(alpha) - tf.constant(MEAN_RGB, tf.float32)
    return (_flip_and_offset_xla if jit_compile else _flip_and_offset)(images, flip, offset)


def _subtract_mean_batch(images, jit_compile=True):
    """subtract_mean for [..., H, W, 3] batches, as one XLA kernel: bit-identical, ~10x cheaper."""
    if not jit_compile:
        return subtract_mean(images)
    shape = tf.shape(images)
    flat = tf.reshape(images, tf.concat([[-1], shape[-3:]], axis=0))
    count = tf.shape(flat)[0]
    offset = tf.broadcast_to(-tf.constant(MEAN_RGB, tf.float32), [count, 3])
    return tf.reshape(_flip_and_offset_xla(flat, tf.zeros([count], tf.bool), offset), shape)


def preprocess_for_train(image_bytes, image_size=IMAGE_SIZE, resize_shorter=RESIZE_SHORTER,
                         augment="paper", pca_std=PCA_STD):
    """Full training preprocessing of one image (the pipeline splits it at the batch boundary).

    Args:
      image_bytes: scalar string tensor.
      image_size: crop size.
      resize_shorter: see decode_and_random_crop.
      augment: "paper" or "inception".
      pca_std: standard deviation of the lighting alpha.

    Returns:
      float32 [image_size, image_size, 3], mean subtracted.
    """
    image = decode_and_random_crop(image_bytes, image_size, resize_shorter, augment)
    return augment_batch(image[tf.newaxis], pca_std, jit_compile=False)[0]


# ----------------------------------------------------------------------------- datasets


def _list_files(file_pattern):
    patterns = [file_pattern] if isinstance(file_pattern, (str, os.PathLike)) else list(file_pattern)
    files = sorted({f for pattern in patterns for f in tf.io.gfile.glob(os.fspath(pattern))})
    if not files:
        raise ValueError(f"no files match {file_pattern!r}")
    return files


def _file_sizes(files):
    # One stat per shard, in threads: on GCS a thousand sequential stats take tens of seconds.
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda f: tf.io.gfile.stat(f).length, files))


def _read_shard(filename, size, skip_corrupt):
    """Records of one TFRecord shard in groups (string [n]), checking that the shard is whole.

    tf.data's DataLossError names no file, and TFRecordDataset abandons a file at its first bad
    frame. So the reader swallows that error and a scan adds up the bytes it framed: a shard
    that ends short of its size on disk was corrupt or truncated, and the error can name it.
    The scan runs once per group of records, not per record: tf.data function calls are dear.
    """
    groups = tf.data.TFRecordDataset(filename).ignore_errors(log_warning=True).batch(_READ_GROUP)
    groups = groups.concatenate(tf.data.Dataset.from_tensors(tf.constant([_END_OF_SHARD])))

    def step(read_bytes, group):
        at_end = tf.equal(group[0], _END_OF_SHARD)
        whole = tf.logical_or(tf.logical_not(at_end), tf.equal(read_bytes, size))
        report = ["corrupt or truncated TFRecord shard", filename, "framed bytes:",
                  tf.strings.as_string(read_bytes), "of", tf.strings.as_string(size)]
        if skip_corrupt:
            tf.cond(whole, tf.no_op, lambda: tf.print(
                "alexnet_tf.data: skipping the rest of", *report, output_stream=logging.warning))
            keep = tf.logical_or(tf.logical_not(at_end), tf.logical_not(whole))  # corrupt: marker stays
        else:
            # String-only data keeps Assert unconditional and cheap.
            check = tf.debugging.Assert(whole, report + ["(skip_corrupt=True skips such shards)"])
            with tf.control_dependencies([check]):
                keep = tf.logical_not(at_end)
        frames = tf.cast(tf.reduce_sum(tf.strings.length(group)), tf.int64)
        read_bytes += frames + _TFRECORD_FRAME_BYTES * tf.cast(tf.size(group), tf.int64)
        return read_bytes, group[:tf.where(keep, tf.size(group), 0)]

    return groups.scan(tf.constant(0, tf.int64), step)


def _count_corrupt_shards(groups):
    """Logs a running count of the corrupt shards skipped, and drops their end markers."""

    def step(count, group):
        corrupt = tf.reduce_any(tf.equal(group, _END_OF_SHARD))
        count += tf.cast(corrupt, tf.int64)
        tf.cond(corrupt, lambda: tf.print("alexnet_tf.data: corrupt TFRecord shards skipped so far:",
                                          count, output_stream=logging.warning), tf.no_op)
        return count, tf.boolean_mask(group, tf.not_equal(group, _END_OF_SHARD))

    return groups.scan(tf.constant(0, tf.int64), step)


def _options(training):
    # A private thread pool and max_intra_op_parallelism=1 made no difference we could measure
    # on 2 cores (python -m alexnet_tf.benchmark --mode=input), so tf.data's defaults stay.
    options = tf.data.Options()
    options.deterministic = not training
    options.autotune.enabled = True
    options.experimental_optimization.map_parallelization = True
    return options


def _zero_based_labels(labels, label_offset, num_classes):
    """int32 0-based labels of a batch, failing loudly when the offset is wrong for the data."""
    labels = tf.cast(labels, tf.int32) - label_offset
    upper = tf.int32.max if num_classes is None else num_classes
    check = tf.debugging.Assert(
        tf.logical_and(tf.reduce_all(labels >= 0), tf.reduce_all(labels < upper)),
        ["labels out of range [0, num_classes) after subtracting label_offset", label_offset,
         "num_classes", upper, "labels", labels])
    with tf.control_dependencies([check]):
        return tf.identity(labels)


def _preprocess_and_batch(dataset, parse, *, training, batch_size, image_size, resize_shorter,
                          augment, pca_std, ten_crop, shuffle_buffer_size, drop_remainder,
                          skip_corrupt, jit_compile, label_offset, num_classes, seed):
    """The tail shared by all sources: shuffle -> map -> batch -> map -> prefetch.

    `parse` maps an element to (image bytes, stored label). Per record runs only what must
    (decode and crop); labels and pixels are finished per batch.
    """
    _check_sizes(image_size, resize_shorter)
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")

    def preprocess(*element):
        image_bytes, label = parse(*element)
        if training:
            image = decode_and_random_crop(image_bytes, image_size, resize_shorter, augment)
        elif ten_crop:
            image = _ten_crops(decode_image(image_bytes), image_size, resize_shorter)
        else:
            # Full decode, not the fused crop, so evaluation matches serving to the bit.
            image = center_crop(decode_image(image_bytes), image_size, resize_shorter)
        return image, label

    def finish(images, labels):
        labels = _zero_based_labels(labels, label_offset, num_classes)
        if training:
            return augment_batch(images, pca_std, jit_compile), labels
        return _subtract_mean_batch(images, jit_compile), labels

    if training:
        dataset = dataset.shuffle(shuffle_buffer_size, seed=seed)
    dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    if skip_corrupt:
        dataset = dataset.ignore_errors(log_warning=True)  # images that do not decode
    dataset = dataset.batch(batch_size, drop_remainder=training if drop_remainder is None else drop_remainder)
    dataset = dataset.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset.with_options(_options(training))


def make_dataset(file_pattern, batch_size, training, *, image_size=IMAGE_SIZE,
                 resize_shorter=RESIZE_SHORTER, augment="paper", pca_std=PCA_STD, ten_crop=False,
                 label_offset=None, num_classes=None, input_context=None, shuffle_buffer_size=10_000,
                 repeat=None, drop_remainder=None, skip_corrupt=False, cycle_length=16,
                 jit_compile=True, seed=None):
    """Batched (images, labels) from TFRecord shards in the model-garden ImageNet schema.

    Args:
      file_pattern: glob (or list of globs/files) of the shards, e.g. "/data/train-*".
      batch_size: the global batch size. With `input_context` each pipeline yields
        `input_context.get_per_replica_batch_size(batch_size)` images per batch (use with
        `strategy.distribute_datasets_from_function`); without it, batches hold `batch_size`.
      training: random crop/flip/lighting, shuffled, non-deterministic order, repeated; else a
        centre crop (or ten crops) in file order.
      image_size: crop size (224).
      resize_shorter: side of the central square the crops come from (256).
      augment: "paper" (random crop of the 256 square) or "inception" (random-resized crop).
      pca_std: standard deviation of the PCA lighting alpha (0.1; 0 turns it off).
      ten_crop: evaluation only: images are [B, 10, image_size, image_size, 3].
      label_offset: subtracted from stored labels (1 for model-garden shards, 0 for ours); None
        detects it from manifest.json / labels.txt next to the shards and fails if neither is there.
      num_classes: when given, labels outside [0, num_classes) after the offset are an error.
      input_context: tf.distribute.InputContext; files are split between input pipelines when
        there are at least as many files as pipelines, records otherwise.
      shuffle_buffer_size: records held for shuffling in training.
      repeat: repeat forever; defaults to `training`.
      drop_remainder: defaults to `training`.
      skip_corrupt: skip the rest of a corrupt or truncated shard (logged with the file name and
        a running count of such shards), images that fail to decode, and the group of 64 records
        around a record that is not a tf.train.Example (both logged by tf.data). By default a
        corrupt or truncated shard is an InvalidArgumentError naming the file.
      cycle_length: shards read at once.
      jit_compile: do the per-batch pixel work (flip, cast, lighting, mean) as one XLA kernel on
        the host; False runs the same ops one by one (same result, ~10x the CPU).
      seed: seed of the file and record shuffles.

    Returns:
      tf.data.Dataset of (float32 [B, image_size, image_size, 3] mean-subtracted images,
      int32 [B] 0-based labels).
    """
    files = _list_files(file_pattern)
    if label_offset is None:
        label_offset = detect_label_offset(os.path.dirname(files[0]))
        if label_offset is None:
            raise ValueError(
                f"cannot tell whether the labels in {os.path.dirname(files[0])} are 0- or 1-based: "
                f"no {MANIFEST_FILENAME} or {LABELS_FILENAME} there; pass label_offset=1 for "
                "model-garden shards (labels 1..1000) or 0 for 0-based labels")
    num_pipelines, pipeline_id = 1, 0
    if input_context is not None:
        num_pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    shard_files = len(files) >= num_pipelines
    if shard_files:
        files = files[pipeline_id::num_pipelines]

    dataset = tf.data.Dataset.from_tensor_slices((files, tf.constant(_file_sizes(files), tf.int64)))
    if training and shard_files:
        dataset = dataset.shuffle(len(files), seed=seed)  # a new file order every epoch
    if training if repeat is None else repeat:
        # Repeating the file list, not the records, keeps the reader and shuffle buffer streaming
        # across epoch boundaries instead of refilling (the buffer blurs the boundaries a little).
        dataset = dataset.repeat()
    # Sharding records needs the same order on every worker.
    ordered = not (training and shard_files)
    dataset = dataset.interleave(
        lambda filename, size: _read_shard(filename, size, skip_corrupt),
        cycle_length=min(cycle_length, len(files)), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=ordered)
    if skip_corrupt:
        dataset = _count_corrupt_shards(dataset)

    def parse(records):
        # Whole groups at once: one vectorised parse instead of 64 function calls.
        features = tf.io.parse_example(records, {key: FEATURE_SPEC[key] for key in (ENCODED_KEY, LABEL_KEY)})
        return features[ENCODED_KEY], features[LABEL_KEY]

    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
    if skip_corrupt:
        dataset = dataset.ignore_errors(log_warning=True)  # a record that is no Example: its group
    dataset = dataset.unbatch()
    if not shard_files:
        dataset = dataset.shard(num_pipelines, pipeline_id)

    return _preprocess_and_batch(
        dataset, lambda image_bytes, label: (image_bytes, label), training=training, batch_size=batch_size, image_size=image_size,
        resize_shorter=resize_shorter, augment=augment, pca_std=pca_std, ten_crop=ten_crop,
        shuffle_buffer_size=shuffle_buffer_size, drop_remainder=drop_remainder,
        skip_corrupt=skip_corrupt, jit_compile=jit_compile, label_offset=label_offset,
        num_classes=num_classes, seed=seed)


def make_tfds_dataset(data_dir, split, batch_size, training, *, name="imagenet2012",
                      image_size=IMAGE_SIZE, resize_shorter=RESIZE_SHORTER, augment="paper",
                      pca_std=PCA_STD, ten_crop=False, input_context=None,
                      shuffle_buffer_size=10_000, repeat=None, drop_remainder=None, jit_compile=True,
                      seed=None):
    """Like make_dataset, reading ImageNet prepared by tensorflow-datasets (labels 0-based).

    The images stay encoded (tfds.decode.SkipDecoding) so the same decode-and-crop code runs.

    Args:
      data_dir: tfds data dir holding `imagenet2012/<version>/`.
      split: tfds split, e.g. "train", "validation", "validation[:1000]".
      batch_size, training, image_size, resize_shorter, augment, pca_std, ten_crop,
      input_context, shuffle_buffer_size, repeat, drop_remainder, jit_compile, seed: as in
        make_dataset (tfds splits files between input pipelines).
      name: tfds dataset name.

    Returns:
      tf.data.Dataset of (float32 images, int32 labels) as make_dataset.
    """
    # Imported here: it takes seconds, and only this source needs it.
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    read_config = tfds.ReadConfig(input_context=input_context, shuffle_seed=seed,
                                  interleave_cycle_length=16, options=_options(training))
    dataset = tfds.builder(name, data_dir=data_dir).as_dataset(
        split=split, shuffle_files=training, read_config=read_config,
        decoders={"image": tfds.decode.SkipDecoding()})
    if training if repeat is None else repeat:
        dataset = dataset.repeat()
    return _preprocess_and_batch(
        dataset, lambda example: (example["image"], example["label"]),
        training=training, batch_size=batch_size, image_size=image_size,
        resize_shorter=resize_shorter, augment=augment, pca_std=pca_std, ten_crop=ten_crop,
        shuffle_buffer_size=shuffle_buffer_size, drop_remainder=drop_remainder,
        skip_corrupt=False, jit_compile=jit_compile, label_offset=0, num_classes=None, seed=seed)


def synthetic_dataset(batch_size, image_size=IMAGE_SIZE, num_classes=1000, *, ten_crop=False,
                      input_context=None, seed=0):
    """One batch of random images and labels, made once and repeated forever from memory.

    Args:
      batch_size: global batch size (split as in make_dataset when `input_context` is given).
      image_size: image side.
      num_classes: labels are uniform in [0, num_classes).
      ten_crop: images are [B, 10, image_size, image_size, 3].
      input_context: tf.distribute.InputContext or None.
      seed: seed of the batch.

    Returns:
      tf.data.Dataset of (float32 mean-subtracted images, int32 labels), infinite.
    """
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    rng = np.random.default_rng(seed)
    shape = [batch_size] + ([10] if ten_crop else []) + [image_size, image_size, 3]
    images = rng.uniform(0.0, 255.0, size=shape).astype(np.float32) - np.float32(MEAN_RGB)
    labels = rng.integers(0, num_classes, size=[batch_size]).astype(np.int32)
    return tf.data.Dataset.from_tensors((images, labels)).repeat()
