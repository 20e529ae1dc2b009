"""tf.data pipelines: training and evaluation batches of TFRecord shards, tensorflow-datasets, synthetic.

Images leave every pipeline as float32 NHWC in the [0, 255] scale with the ImageNet mean
subtracted (the paper's input convention), except the trainer's training batches: uint8 crops
with each image's flip and lighting (`finish_on_host=False`), which the train step finishes on
the accelerator (preprocessing.finish_batch). Labels leave as 0-based int32. The pixel work is
`alexnet_tf.data.preprocessing`'s, set by one `PixelSettings` value; the shards are read by
`alexnet_tf.data.records`, in the training order of `alexnet_tf.data.order`.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from alexnet_tf.data import schema
from alexnet_tf.data.order import exact_training_records, position_of_step
from alexnet_tf.data.preprocessing import (
    AUGMENTATIONS,
    IMAGE_SIZE,
    MEAN_RGB,
    PCA_STD,
    RESIZE_SHORTER,
    augment_batch,
    center_crop,
    check_sizes,
    decode_and_random_crop,
    decode_image,
    subtract_mean_batch,
    ten_crops_uint8,
    training_draws,
    unfinished_batch,
)
from alexnet_tf.data.records import (
    as_written,
    count_corrupt_shards,
    file_sizes,
    files_shorter_side,
    list_files,
    read_shard,
    shard_counts,
    zero_based_labels,
)


@dataclasses.dataclass(frozen=True)
class PixelSettings:
    """The pixel work of a run's batches, the same for its training and its evaluation.

    image_size: crop size (224).
    resize_shorter: side of the central square the crops come from (256).
    augment: training: "paper" (random crop of the 256 square) or "inception" (random-resized crop).
    pca_std: training: standard deviation of the PCA lighting alpha (0.1; 0 turns it off).
    jit_compile: do the per-batch pixel work (flip, cast, lighting, mean) as one XLA kernel on
      the host; False runs the same ops one by one (same result, ~10x the CPU).
    The mean subtracted is always preprocessing.MEAN_RGB.
    """

    image_size: int = IMAGE_SIZE
    resize_shorter: int = RESIZE_SHORTER
    augment: str = "paper"
    pca_std: float = PCA_STD
    jit_compile: bool = True

    def check(self):
        """ValueError naming the value when the sizes or the augmentation cannot be used."""
        check_sizes(self.image_size, self.resize_shorter)
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {self.augment!r}")


def _options(deterministic):
    # A private thread pool and max_intra_op_parallelism=1 made no difference we could measure
    # on 2 cores (python -m alexnet_tf.benchmark --mode=input), so tf.data's defaults stay.
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = True
    options.experimental_optimization.map_parallelization = True
    return options


# ----------------------------------------------------------------------------- batch tails


def _training_batches(
    dataset,
    parse,
    pixels,
    batch_size,
    *,
    label_offset,
    num_classes,
    skip_corrupt,
    drop_remainder,
    finish_on_host,
    shorter_side,
    shuffle_buffer_size=None,
    seed=None,
    distribute=None,
):
    """The training tail of every source: shuffle -> map -> batch -> map -> prefetch.

    `parse` maps an element to (image bytes, stored label, draws): draws are the image's rows
    of preprocessing.training_draws (crop, flip, alpha), drawn for a whole window of the stream
    fixed by order.exact_training_records; None draws them from TensorFlow's global generator,
    in an order that the record shuffle (shuffle_buffer_size, None for none) and parallel maps
    vary. Per record runs only what must (decode and crop); labels and pixels are finished per
    batch, on the host or (not `finish_on_host`) by the consumer. `shorter_side`:
    schema.converted_shorter_side of the records. `distribute` (a function of a dataset) moves
    everything up to the uint8 batches elsewhere (the tf.data service; stateful draws only).
    """
    ordered = shuffle_buffer_size is None
    size, shorter = pixels.image_size, pixels.resize_shorter
    crop_args = dict(augment=pixels.augment, shorter_side=shorter_side)

    def preprocess(*element):
        image_bytes, label, draws = parse(*element)
        if draws is not None:
            crop, flip, alpha = draws
            image = decode_and_random_crop(image_bytes, size, shorter, crop=crop, **crop_args)
            return image, label, flip, alpha
        return decode_and_random_crop(image_bytes, size, shorter, **crop_args), label

    def finish(images, labels, flip=None, alpha=None):
        labels = zero_based_labels(labels, label_offset, num_classes)
        if not finish_on_host:
            return unfinished_batch(images, pixels.pca_std, flip, alpha), labels
        return augment_batch(images, pixels.pca_std, pixels.jit_compile, flip, alpha), labels

    if not ordered:
        dataset = dataset.shuffle(shuffle_buffer_size, seed=seed)
    dataset = dataset.map(as_written(preprocess), num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
    if skip_corrupt:
        dataset = dataset.ignore_errors(log_warning=True)  # images that do not decode
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if distribute is not None:
        # The service sends uint8 crops, a quarter of float32's bytes; the flip, lighting and
        # mean (one XLA kernel) run after it, here or in the train step.
        dataset = distribute(dataset.with_options(_options(ordered)))
    dataset = dataset.map(as_written(finish), num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset.with_options(_options(ordered))


def _evaluation_batches(
    dataset,
    parse,
    pixels,
    batch_size,
    *,
    ten_crop,
    label_offset,
    num_classes,
    skip_corrupt,
    drop_remainder,
    corruption=None,
):
    """The evaluation tail of every source, in order: map -> batch -> map -> prefetch.

    `parse` maps an element to (image bytes, stored label). The centre crop (or ten crops)
    comes from the fully decoded image, as serving's, and the mean is subtracted per batch.
    `corruption` (uint8 crop, int64 index of the image in this stream) -> uint8 crop changes
    each centre crop before its mean is subtracted (the corruption benchmark).
    """
    size, shorter = pixels.image_size, pixels.resize_shorter
    if corruption is not None and ten_crop:
        raise ValueError("a corruption applies to the centre crop, not to ten crops")

    def preprocess(*element):
        index = None
        if corruption is not None:  # (index, the element) from Dataset.enumerate
            index, element = element
            element = element if isinstance(element, tuple) else (element,)
        image_bytes, label = parse(*element)
        if ten_crop:
            return ten_crops_uint8(decode_image(image_bytes), size, shorter), label
        # Full decode, not the fused crop, so evaluation matches serving to the bit.
        crop = center_crop(decode_image(image_bytes), size, shorter)
        if corruption is not None:
            crop = corruption(crop, index)
        return crop, label

    def finish(images, labels):
        labels = zero_based_labels(labels, label_offset, num_classes)
        return subtract_mean_batch(images, pixels.jit_compile), labels

    if corruption is not None:
        dataset = dataset.enumerate()
    dataset = dataset.map(as_written(preprocess), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if skip_corrupt:
        dataset = dataset.ignore_errors(log_warning=True)  # images that do not decode
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(as_written(finish), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset.with_options(_options(True))


# ----------------------------------------------------------------------------- TFRecord shards


def _shard_files(file_pattern, label_offset):
    """(files, label offset): the shards matching `file_pattern`, and the offset (None: detected)."""
    files = list_files(file_pattern)
    if label_offset is None:
        label_offset = schema.detect_label_offset(os.path.dirname(files[0]))
        if label_offset is None:
            raise ValueError(schema.unknown_label_offset(os.path.dirname(files[0])))
    return files, label_offset


def _pipeline_split(batch_size, input_context):
    """(per-pipeline batch, input pipelines, this pipeline's id, records per global step per pipeline)."""
    if input_context is None:
        return batch_size, 1, 0, batch_size
    num_pipelines = input_context.num_input_pipelines
    batch_size = input_context.get_per_replica_batch_size(batch_size)
    records_per_step = batch_size * (input_context.num_replicas_in_sync // num_pipelines)
    return batch_size, num_pipelines, input_context.input_pipeline_id, records_per_step


def _encoded_examples(
    files, num_pipelines, pipeline_id, *, shuffled, repeat, cycle_length, skip_corrupt, seed
):
    """(image bytes, stored label) of this pipeline's records, read `cycle_length` shards at a time.

    Files are split between the pipelines when there are at least as many files as pipelines,
    records otherwise. `shuffled`: a new file order every pass and records in any order (the
    service's training stream); else file order.
    """
    shard_files = len(files) >= num_pipelines
    if shard_files:
        files = files[pipeline_id::num_pipelines]
    dataset = tf.data.Dataset.from_tensor_slices((files, tf.constant(file_sizes(files), tf.int64)))
    shuffled = shuffled and shard_files
    if shuffled:
        dataset = dataset.shuffle(len(files), seed=seed)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.interleave(
        as_written(lambda filename, size: read_shard(filename, size, skip_corrupt)),
        cycle_length=min(cycle_length, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not shuffled,
    )
    if skip_corrupt:
        dataset = count_corrupt_shards(dataset)

    def parse(records):
        # Whole groups at once: one vectorised parse instead of 64 function calls.
        keys = (schema.ENCODED_KEY, schema.LABEL_KEY)
        features = tf.io.parse_example(records, {key: schema.FEATURE_SPEC[key] for key in keys})
        return features[schema.ENCODED_KEY], features[schema.LABEL_KEY]

    dataset = dataset.map(as_written(parse), num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffled)
    if skip_corrupt:
        dataset = dataset.ignore_errors(log_warning=True)  # a record that is no Example: its group
    dataset = dataset.unbatch()
    if not shard_files:
        dataset = dataset.shard(num_pipelines, pipeline_id)
    return dataset


def training_dataset(
    file_pattern,
    batch_size,
    *,
    pixels=PixelSettings(),
    label_offset=None,
    num_classes=None,
    input_context=None,
    shuffle_buffer_size=10_000,
    repeat=True,
    drop_remainder=True,
    skip_corrupt=False,
    cycle_length=16,
    seed=None,
    start_step=0,
    position=None,
    shard_records=None,
    service=None,
    finish_on_host=True,
):
    """Training batches (images, labels) of TFRecord shards in the model-garden ImageNet schema.

    Random crop/flip/lighting, in an order and with draws that are a function of (seed, epoch,
    input pipeline) and of each image's position in it (order.exact_training_records), repeated.

    Args:
      file_pattern: glob (or list of globs/files) of the shards, e.g. "/data/train-*".
      batch_size: the global batch size. With `input_context` each pipeline yields
        `input_context.get_per_replica_batch_size(batch_size)` images per batch (use with
        `strategy.distribute_datasets_from_function`); without it, batches hold `batch_size`.
      pixels: PixelSettings (crop size, square, augmentation, lighting, XLA).
      label_offset: subtracted from stored labels (1 for model-garden shards, 0 for ours); None
        detects it from manifest.json / labels.txt next to the shards and fails if neither is there.
      num_classes: when given, labels outside [0, num_classes) after the offset are an error.
      input_context: tf.distribute.InputContext; files are split between input pipelines when
        there are at least as many files as pipelines, records otherwise.
      shuffle_buffer_size: records per shuffled window (about twice that are held).
      repeat: repeat forever.
      drop_remainder: end every batch, and every epoch, at its last full (global) batch.
      skip_corrupt: skip the rest of a corrupt or truncated shard (logged with the file name and
        a running count of such shards), images that fail to decode, and a record that is not
        a tf.train.Example (both logged by tf.data). By default a corrupt or truncated shard is
        an InvalidArgumentError naming the file. Skipped records shift the training order (it
        stays a function of the data).
      cycle_length: shards read at once.
      seed: seed of the order and the augmentation (None: a random one).
      start_step: the global steps (batches of `batch_size`, taken by these input pipelines)
        already taken; the stream resumes where they ended, exactly.
      position: an order.EpochPosition to resume at instead of `start_step` (where a run that
        trained with another global batch or number of input pipelines stopped).
      shard_records: {shard file name: records}; None reads the counts from the manifest.json
        beside the shards, or counts the shards it does not list.
      service: a service.ServiceJob: the tf.data service's workers read, decode, crop and batch
        (see service.distribute_to_service); the flip, lighting and mean run here. Every input
        pipeline reads from the one job, so files are not split by `input_context`: the
        dispatcher hands them out. This stream is not the exact one: files and records are
        shuffled with stateful draws, and a resume does not continue the epoch where it stopped.
      finish_on_host: False leaves each batch's flip, lighting and mean to its consumer: images
        come as preprocessing.unfinished_batch's dict of uint8 crops and their draws, for
        preprocessing.finish_batch (the trainer runs it in the train step, on the accelerator).

    Returns:
      tf.data.Dataset of (float32 [B, image_size, image_size, 3] mean-subtracted images,
      int32 [B] 0-based labels); without `finish_on_host`, the images are a dict.
    """
    pixels.check()
    files, label_offset = _shard_files(file_pattern, label_offset)
    batch_size, num_pipelines, pipeline_id, records_per_step = _pipeline_split(batch_size, input_context)
    tail = dict(
        label_offset=label_offset,
        num_classes=num_classes,
        skip_corrupt=skip_corrupt,
        drop_remainder=drop_remainder,
        finish_on_host=finish_on_host,
        shorter_side=files_shorter_side(files),
    )
    if service is not None:
        examples = _encoded_examples(
            files,
            1,  # the shared job splits the files between pipelines
            0,
            shuffled=True,
            repeat=repeat,
            cycle_length=cycle_length,
            skip_corrupt=skip_corrupt,
            seed=seed,
        )
        return _training_batches(
            examples,
            lambda image_bytes, label: (image_bytes, label, None),
            pixels,
            batch_size,
            shuffle_buffer_size=shuffle_buffer_size,
            seed=seed,
            distribute=service.distribute,
            **tail,
        )

    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    counts = shard_counts(files, shard_records, skip_corrupt)
    if position is None and start_step:
        position = position_of_step(start_step, counts, records_per_step * num_pipelines, num_pipelines)
    records = exact_training_records(
        files,
        file_sizes(files),
        counts,
        num_pipelines=num_pipelines,
        pipeline_id=pipeline_id,
        records_per_step=records_per_step,
        seed=seed,
        position=position,
        repeat=repeat,
        drop_remainder=drop_remainder,
        window=shuffle_buffer_size,
        cycle_length=cycle_length,
        skip_corrupt=skip_corrupt,
        draws=lambda seed, count: training_draws(
            seed, count, pixels.image_size, pixels.resize_shorter, pixels.augment, pixels.pca_std
        ),
    )
    keys = {key: schema.FEATURE_SPEC[key] for key in (schema.ENCODED_KEY, schema.LABEL_KEY)}

    def parse_record(record, *draws):
        features = tf.io.parse_single_example(record, keys)
        return features[schema.ENCODED_KEY], features[schema.LABEL_KEY], draws

    return _training_batches(records, parse_record, pixels, batch_size, **tail)


def evaluation_dataset(
    file_pattern,
    batch_size,
    *,
    pixels=PixelSettings(),
    ten_crop=False,
    label_offset=None,
    num_classes=None,
    input_context=None,
    repeat=False,
    drop_remainder=False,
    skip_corrupt=False,
    cycle_length=16,
    corruption=None,
):
    """Evaluation batches (images, labels) of TFRecord shards: a centre crop (or ten crops), in file order.

    Args:
      file_pattern, batch_size, label_offset, num_classes, input_context, cycle_length: as in
        training_dataset.
      pixels: PixelSettings (only the sizes and jit_compile count here).
      ten_crop: images are [B, 10, image_size, image_size, 3].
      repeat: repeat forever.
      drop_remainder: drop the last, partial batch.
      skip_corrupt: as in training_dataset, but a record that is not a tf.train.Example skips
        the group of 64 records around it.
      corruption: None, or a function (uint8 [S, S, 3] centre crop, int64 index of the image
        in this stream) -> uint8 crop, run before the mean is subtracted (centre crop only;
        alexnet_tf.data.corruptions).

    Returns:
      tf.data.Dataset of (float32 [B, image_size, image_size, 3] mean-subtracted images,
      int32 [B] 0-based labels).
    """
    pixels.check()
    files, label_offset = _shard_files(file_pattern, label_offset)
    batch_size, num_pipelines, pipeline_id, _ = _pipeline_split(batch_size, input_context)
    examples = _encoded_examples(
        files,
        num_pipelines,
        pipeline_id,
        shuffled=False,
        repeat=repeat,
        cycle_length=cycle_length,
        skip_corrupt=skip_corrupt,
        seed=None,
    )
    return _evaluation_batches(
        examples,
        lambda image_bytes, label: (image_bytes, label),
        pixels,
        batch_size,
        ten_crop=ten_crop,
        label_offset=label_offset,
        num_classes=num_classes,
        skip_corrupt=skip_corrupt,
        drop_remainder=drop_remainder,
        corruption=corruption,
    )


# ----------------------------------------------------------------------------- tensorflow-datasets


def _tfds_examples(data_dir, split, name, input_context, training, repeat, seed):
    """The encoded examples of a tfds split (tfds.decode.SkipDecoding: the same decode-and-crop runs)."""
    # Imported here: it takes seconds, and only this source needs it.
    import tensorflow_datasets as tfds

    read_config = tfds.ReadConfig(
        input_context=input_context,
        shuffle_seed=seed,
        interleave_cycle_length=16,
        options=_options(not training),
    )
    dataset = tfds.builder(name, data_dir=data_dir).as_dataset(
        split=split,
        shuffle_files=training,
        read_config=read_config,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    return dataset.repeat() if repeat else dataset


def tfds_training_dataset(
    data_dir,
    split,
    batch_size,
    *,
    pixels=PixelSettings(),
    name="imagenet2012",
    input_context=None,
    shuffle_buffer_size=10_000,
    repeat=True,
    drop_remainder=True,
    seed=None,
    finish_on_host=True,
):
    """Like training_dataset, reading ImageNet prepared by tensorflow-datasets (labels 0-based).

    Args:
      data_dir: tfds data dir holding `imagenet2012/<version>/`.
      split: tfds split, e.g. "train".
      batch_size, pixels, input_context, shuffle_buffer_size, repeat, drop_remainder, seed,
        finish_on_host: as in training_dataset (tfds splits files between input pipelines; the
        order is shuffled with `seed`, not the exact order).
      name: tfds dataset name.
    """
    pixels.check()
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    examples = _tfds_examples(data_dir, split, name, input_context, True, repeat, seed)
    return _training_batches(
        examples,
        lambda example: (example["image"], example["label"], None),
        pixels,
        batch_size,
        label_offset=0,
        num_classes=None,
        skip_corrupt=False,
        drop_remainder=drop_remainder,
        finish_on_host=finish_on_host,
        shorter_side=None,
        shuffle_buffer_size=shuffle_buffer_size,
        seed=seed,
    )


def tfds_evaluation_dataset(
    data_dir,
    split,
    batch_size,
    *,
    pixels=PixelSettings(),
    ten_crop=False,
    name="imagenet2012",
    input_context=None,
    repeat=False,
    drop_remainder=False,
    corruption=None,
):
    """Like evaluation_dataset, reading a tensorflow-datasets split, e.g. "validation[:1000]"."""
    pixels.check()
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    examples = _tfds_examples(data_dir, split, name, input_context, False, repeat, None)
    return _evaluation_batches(
        examples,
        lambda example: (example["image"], example["label"]),
        pixels,
        batch_size,
        ten_crop=ten_crop,
        label_offset=0,
        num_classes=None,
        skip_corrupt=False,
        drop_remainder=drop_remainder,
        corruption=corruption,
    )


# ----------------------------------------------------------------------------- synthetic


def synthetic_dataset(
    batch_size, image_size=IMAGE_SIZE, num_classes=1000, *, ten_crop=False, input_context=None, seed=0
):
    """One batch of random images and labels, made once and repeated forever from memory.

    Args:
      batch_size: global batch size (split as in training_dataset when `input_context` is given).
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
