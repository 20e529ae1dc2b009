"""tf.data pipelines: TFRecord shards (`make_dataset`), tensorflow-datasets, synthetic batches.

Images leave every pipeline as float32 NHWC in the [0, 255] scale with the ImageNet mean
subtracted (the paper's input convention), except the trainer's training batches: uint8 crops
with each image's flip and lighting (`finish_on_host=False`), which the train step finishes on
the accelerator (preprocessing.finish_batch). Labels leave as 0-based int32. The pixel work is
`alexnet_tf.data.preprocessing`'s; the record format is `alexnet_tf.data.schema`'s.
"""

import concurrent.futures
import dataclasses
import functools
import os
import socket
import time

from absl import logging
import numpy as np
import tensorflow as tf

from alexnet_tf.data import schema
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

# A TFRecord frame is an 8-byte length, its 4-byte CRC, the data, and the data's 4-byte CRC.
_TFRECORD_FRAME_BYTES = 16
# Records the shard reader handles per tf.data function call (see read_shard).
_READ_GROUP = 64
# Ends each shard's record stream. 0xff opens a protobuf field with wire type 7, which does not
# exist, so no serialized Example equals it.
END_OF_SHARD = b"\xffalexnet_tf:end-of-shard"


# ----------------------------------------------------------------------------- datasets


def _as_written(fn):
    """`fn` for a tf.data transformation, traced as written, without AutoGraph's conversion.

    These functions branch only on Python values (tf.cond where a tensor decides), so
    AutoGraph's rewrite of their source, and of everything they call, changes nothing but
    costs about 4.5 CPU seconds in every process that builds the pipelines (measured per
    trainer run; the same final weights without it).
    """
    return tf.autograph.experimental.do_not_convert(fn)


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


def read_shard(filename, size, skip_corrupt):
    """Records of one TFRecord shard in groups (string [n]), checking that the shard is whole.

    tf.data's DataLossError names no file, and TFRecordDataset abandons a file at its first bad
    frame. So the reader swallows that error and a scan adds up the bytes it framed: a shard
    that ends short of its size on disk was corrupt or truncated, and the error can name it.
    The scan runs once per group of records, not per record: tf.data function calls are dear.
    """
    groups = tf.data.TFRecordDataset(filename).ignore_errors(log_warning=True).batch(_READ_GROUP)
    groups = groups.concatenate(tf.data.Dataset.from_tensors(tf.constant([END_OF_SHARD])))

    def step(read_bytes, group):
        at_end = tf.equal(group[0], END_OF_SHARD)
        whole = tf.logical_or(tf.logical_not(at_end), tf.equal(read_bytes, size))
        report = [
            "corrupt or truncated TFRecord shard",
            filename,
            "(its records frame",
            tf.strings.as_string(read_bytes),
            "of its",
            tf.strings.as_string(size),
        ]
        if skip_corrupt:
            tf.cond(
                whole,
                tf.no_op,
                lambda: tf.print(
                    "alexnet_tf: skipping the rest of",
                    *report,
                    "bytes)",
                    output_stream=logging.warning,
                ),
            )
            keep = tf.logical_or(tf.logical_not(at_end), tf.logical_not(whole))  # corrupt: marker stays
        else:
            # String-only data keeps Assert unconditional and cheap.
            check = tf.debugging.Assert(
                whole,
                report + ["bytes): convert it again, or train with --skip_corrupt to skip such shards"],
            )
            with tf.control_dependencies([check]):
                keep = tf.logical_not(at_end)
        frames = tf.cast(tf.reduce_sum(tf.strings.length(group)), tf.int64)
        read_bytes += frames + _TFRECORD_FRAME_BYTES * tf.cast(tf.size(group), tf.int64)
        return read_bytes, group[: tf.where(keep, tf.size(group), 0)]

    return groups.scan(tf.constant(0, tf.int64), _as_written(step))


def _count_corrupt_shards(groups):
    """Logs a running count of the corrupt shards skipped, and drops their end markers."""

    def step(count, group):
        corrupt = tf.reduce_any(tf.equal(group, END_OF_SHARD))
        count += tf.cast(corrupt, tf.int64)
        tf.cond(
            corrupt,
            lambda: tf.print(
                "alexnet_tf.data.pipelines: corrupt TFRecord shards skipped so far:",
                count,
                output_stream=logging.warning,
            ),
            tf.no_op,
        )
        return count, tf.boolean_mask(group, tf.not_equal(group, END_OF_SHARD))

    return groups.scan(tf.constant(0, tf.int64), _as_written(step))


def shard_record_counts(files, skip_corrupt=False):
    """Records in each of `files` (reads them once, without parsing), in their order.

    A corrupt or truncated shard is an InvalidArgumentError naming it, as in `make_dataset`;
    with `skip_corrupt` its records up to the damage are counted (what the pipeline reads).
    """

    def count(filename, size):
        groups = read_shard(filename, size, skip_corrupt)
        records = lambda n, group: n + tf.size(tf.boolean_mask(group, tf.not_equal(group, END_OF_SHARD)))
        return int(groups.reduce(tf.constant(0), _as_written(records)).numpy())

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(count, files, _file_sizes(files)))


def _options(deterministic):
    # A private thread pool and max_intra_op_parallelism=1 made no difference we could measure
    # on 2 cores (python -m alexnet_tf.benchmark --mode=input), so tf.data's defaults stay.
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = True
    options.experimental_optimization.map_parallelization = True
    return options


def _zero_based_labels(labels, label_offset, num_classes):
    """int32 0-based labels of a batch, failing loudly when the offset is wrong for the data."""
    labels = tf.cast(labels, tf.int32) - label_offset
    upper = tf.int32.max if num_classes is None else num_classes
    check = tf.debugging.Assert(
        tf.logical_and(tf.reduce_all(labels >= 0), tf.reduce_all(labels < upper)),
        [
            "labels out of range [0, num_classes) after subtracting label_offset",
            label_offset,
            "num_classes",
            upper,
            "labels",
            labels,
        ],
    )
    with tf.control_dependencies([check]):
        return tf.identity(labels)


def _preprocess_and_batch(
    dataset,
    parse,
    *,
    training,
    batch_size,
    image_size,
    resize_shorter,
    augment,
    pca_std,
    ten_crop,
    shuffle_buffer_size,
    drop_remainder,
    skip_corrupt,
    jit_compile,
    label_offset,
    num_classes,
    seed,
    finish_on_host=True,
    shorter_side=None,
    distribute=None,
):
    """The tail shared by all sources: shuffle -> map -> batch -> map -> prefetch.

    `parse` maps an element to (image bytes, stored label, draws): a training image's draws
    are its rows of preprocessing.training_draws (crop, flip, alpha), drawn for a whole window
    of the stream fixed by `_exact_training_records`; None draws them from TensorFlow's global
    generator, in an order that the record shuffle (shuffle_buffer_size, None for none) and
    parallel maps vary. Per record runs only what must (decode and crop); labels and pixels are
    finished per batch, on the host or (not `finish_on_host`, training only) by the consumer.
    `shorter_side`: schema.converted_shorter_side of the records.
    `distribute` (a function of a dataset) moves everything up to the uint8 batches elsewhere
    (the tf.data service; stateful draws only).
    """
    check_sizes(image_size, resize_shorter)
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    exact = training and shuffle_buffer_size is None
    ordered = exact or not training
    crop_args = dict(augment=augment, shorter_side=shorter_side)

    def preprocess(*element):
        image_bytes, label, draws = parse(*element)
        if training and draws is not None:
            crop, flip, alpha = draws
            image = decode_and_random_crop(image_bytes, image_size, resize_shorter, crop=crop, **crop_args)
            return image, label, flip, alpha
        if training:
            image = decode_and_random_crop(image_bytes, image_size, resize_shorter, **crop_args)
        elif ten_crop:
            image = ten_crops_uint8(decode_image(image_bytes), image_size, resize_shorter)
        else:
            # Full decode, not the fused crop, so evaluation matches serving to the bit.
            image = center_crop(decode_image(image_bytes), image_size, resize_shorter)
        return image, label

    def finish(images, labels, flip=None, alpha=None):
        labels = _zero_based_labels(labels, label_offset, num_classes)
        if training and not finish_on_host:
            return unfinished_batch(images, pca_std, flip, alpha), labels
        if training:
            return augment_batch(images, pca_std, jit_compile, flip, alpha), labels
        return subtract_mean_batch(images, jit_compile), labels

    if training and not exact:
        dataset = dataset.shuffle(shuffle_buffer_size, seed=seed)
    dataset = dataset.map(_as_written(preprocess), num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
    if skip_corrupt:
        dataset = dataset.ignore_errors(log_warning=True)  # images that do not decode
    dataset = dataset.batch(batch_size, drop_remainder=training if drop_remainder is None else drop_remainder)
    if distribute is not None:
        # The service sends uint8 crops, a quarter of float32's bytes; the flip, lighting and
        # mean (one XLA kernel) run after it, here or in the train step.
        dataset = distribute(dataset.with_options(_options(ordered)))
    dataset = dataset.map(_as_written(finish), num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset.with_options(_options(ordered))


# Salts that keep the stream's random draws apart (see _exact_training_records).
_FILE_ORDER, _WINDOW_ORDER, _IMAGES = 1, 2, 3


def _fold(seed, *data):
    """The stateless seed `seed` ([2] int64) with each of `data` (int scalars) folded in."""
    for value in data:
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(value, tf.int64))
    return seed


def shares(counts, num_pipelines):
    """Records each input pipeline reads per epoch: its own shards' (p, p + P, ...), or every P-th record."""
    if len(counts) >= num_pipelines:
        return [sum(counts[q::num_pipelines]) for q in range(num_pipelines)]
    return [len(range(q, sum(counts), num_pipelines)) for q in range(num_pipelines)]


def training_steps_per_epoch(counts, global_batch, num_pipelines=1):
    """Global steps in one epoch of `make_dataset`'s training order (all pipelines take as many).

    Args:
      counts: records of each training shard, in file-name order.
      global_batch: images per global step.
      num_pipelines: input pipelines (one per worker under distribute_datasets_from_function).
    """
    return min(shares(counts, num_pipelines)) // (global_batch // num_pipelines)


@dataclasses.dataclass(frozen=True)
class EpochPosition:
    """Where a training stream resumes: after `images` images of epoch `epoch`'s order.

    An epoch's order is drawn for the input pipelines of the run that started the epoch:
    `pipelines` of them, each reading `records` records of it (the full steps of the smallest
    share). Its images, in global order, are pipeline 0's first record, pipeline 1's first, ...,
    pipeline 0's second, and so on: the first `images` of them are the ones trained on, whatever
    batch size or number of pipelines took them. A run that resumes with another global batch
    or another number of input pipelines continues the epoch at the next of them.
    """

    epoch: int
    images: int
    pipelines: int
    records: int

    @property
    def epoch_images(self):
        """Images the epoch's order holds (every pipeline's `records`)."""
        return self.pipelines * self.records

    def steps_left(self, global_batch, num_pipelines):
        """Global steps of `global_batch` left in the epoch for `num_pipelines` input pipelines.

        The images left are dealt to the pipelines in turn; each takes the full steps of the
        smallest deal, so every pipeline takes as many and less than a step's images per
        pipeline are left out of the epoch (as at the end of every epoch).
        """
        left = max(self.epoch_images - self.images, 0)
        return (left // num_pipelines) // (global_batch // num_pipelines)


def epoch_start(epoch, counts, global_batch, num_pipelines=1):
    """The EpochPosition of epoch `epoch`'s first image for `num_pipelines` pipelines at `global_batch`."""
    steps = training_steps_per_epoch(counts, global_batch, num_pipelines)
    return EpochPosition(epoch, 0, num_pipelines, steps * (global_batch // num_pipelines))


def position_of_step(step, counts, global_batch, num_pipelines=1):
    """The EpochPosition after `step` global steps of `global_batch` taken by `num_pipelines` pipelines."""
    steps_per_epoch = training_steps_per_epoch(counts, global_batch, num_pipelines)
    if steps_per_epoch < 1:
        return epoch_start(0, counts, global_batch, num_pipelines)
    epoch, in_epoch = divmod(step, steps_per_epoch)
    start = epoch_start(epoch, counts, global_batch, num_pipelines)
    return dataclasses.replace(start, images=in_epoch * global_batch)


def _exact_training_records(
    files,
    sizes,
    counts,
    *,
    num_pipelines,
    pipeline_id,
    records_per_step,
    seed,
    position,
    repeat,
    drop_remainder,
    window,
    cycle_length,
    skip_corrupt,
    draws,
):
    """This pipeline's training records, in an order fixed by (seed, epoch, pipelines), from `position`.

    The order of an epoch drawn for P pipelines, per pipeline p:
    - shares: with at least as many shards as pipelines, pipeline p owns shards p, p + P, ...
      of the name-sorted list and reads them in a permutation drawn from (seed, epoch, p);
      with fewer, every pipeline reads all shards in name order and keeps records p, p + P, ...
    - blocks: the shards are read `cycle_length` at a time, their record groups interleaved
      (tf.data's deterministic interleave); a block ends when its shards do;
    - windows: the stream is cut into windows of `window` consecutive records and each window
      is permuted, drawn from (seed, epoch, p, window index): the shuffle buffer's role, in a
      form whose state at any position is known without replaying the epoch;
    - an epoch yields steps_per_epoch * records_per_step records, the full steps of the smallest
      share, so that every pipeline takes as many steps; the records past them (less than a
      step, plus the shares' differences) are left out of that epoch only.
    Each window's random draws come from `draws(seed, window)` with a seed drawn from (seed,
    epoch, p, window index), and row t goes to the window's output t: every record's draws are
    a function of its place in its epoch's stream.

    `position` (an EpochPosition, or None for the start) says where the stream begins. When
    its epoch was drawn for these pipelines and its images split evenly between them, each
    pipeline continues its own stream at images / P: the blocks before that record's window
    are passed over unread (their record counts are known), the records of its block before
    the window are read but not parsed or decoded, and the window is permuted and its head
    dropped (at most one block plus one window of reading). Otherwise (another number of
    pipelines took the epoch's first images) every pipeline reads the rest of the epoch in
    the epoch's global order (EpochPosition) and keeps every P-th image. Either way the
    resumed epoch yields `position.steps_left` steps, and the epochs after it are drawn for
    these pipelines.

    Returns:
      A dataset of (serialized record, *its rows of `draws`).
    """
    pipeline_shares = shares(counts, num_pipelines)
    if drop_remainder:
        global_batch = records_per_step * num_pipelines
        steps_per_epoch = training_steps_per_epoch(counts, global_batch, num_pipelines)
        if steps_per_epoch < 1:
            raise ValueError(
                f"the training shards hold {min(pipeline_shares)} records per input pipeline, fewer than "
                f"one step's {records_per_step}: lower the batch size or add data"
            )
        used = steps_per_epoch * records_per_step
    elif position is not None and position.images:
        raise ValueError("a training stream can start inside an epoch only with drop_remainder")
    else:
        used = pipeline_shares[pipeline_id]
    if position is None or not position.images:
        first_epoch, first = (0 if position is None else position.epoch), None
    else:
        first_epoch = position.epoch
        take = position.steps_left(global_batch, num_pipelines) * records_per_step
        stream = functools.partial(
            _pipeline_epoch,
            files,
            sizes,
            counts,
            window=window,
            cycle_length=cycle_length,
            skip_corrupt=skip_corrupt,
            draws=draws,
            seed=seed,
        )
        if position.pipelines == num_pipelines and position.images % num_pipelines == 0:
            start = position.images // num_pipelines
            first = stream(num_pipelines, pipeline_id, position.epoch, start, start + take)
        else:
            first = _dealt_rest_of_epoch(stream, position, num_pipelines, pipeline_id).take(take)
        first_epoch += 1
    own_epoch = functools.partial(
        _pipeline_epoch,
        files,
        sizes,
        counts,
        num_pipelines,
        pipeline_id,
        window=window,
        cycle_length=cycle_length,
        skip_corrupt=skip_corrupt,
        draws=draws,
        seed=seed,
    )
    if repeat:
        epochs = tf.data.Dataset.counter(first_epoch)
    else:
        epochs = tf.data.Dataset.range(first_epoch, first_epoch + (0 if first is not None else 1))
    rest = epochs.flat_map(_as_written(lambda epoch: own_epoch(epoch, 0, used)))
    return rest if first is None else first.concatenate(rest)


def _dealt_rest_of_epoch(stream, position, num_pipelines, pipeline_id):
    """Pipeline `pipeline_id`'s deal of the images of `position`'s epoch after its first `position.images`.

    The epoch's global order takes its pipelines' streams in turn, one record each
    (EpochPosition); the images left are dealt to the `num_pipelines` pipelines in turn.
    Every pipeline reads all of the old streams' rest (reading, not decoding: records are
    dealt before they are parsed), once, for the one resumed epoch.
    """
    old = position.pipelines
    streams = []
    for q in range(old):
        # The first global index >= images that belongs to stream q, as a position in q.
        first = position.images + (q - position.images) % old
        streams.append(stream(old, q, position.epoch, first // old, position.records))
    choice = tf.data.Dataset.range(position.images, position.epoch_images).map(lambda i: i % old)
    dealt = tf.data.Dataset.choose_from_datasets(streams, choice, stop_on_empty_dataset=True)
    return dealt.shard(num_pipelines, pipeline_id)


def _pipeline_epoch(
    files,
    sizes,
    counts,
    num_pipelines,
    pipeline_id,
    epoch,
    start,
    end,
    *,
    window,
    cycle_length,
    skip_corrupt,
    draws,
    seed,
):
    """Records [start, end) of pipeline `pipeline_id`'s stream of `epoch` (of `num_pipelines`).

    Returns a dataset of (record, *its draws); `_exact_training_records` describes the order.
    `epoch`, `start` and `end` may be tensors.
    """
    num_files = len(files)
    if num_files >= num_pipelines:
        stride, owned = 1, list(range(pipeline_id, num_files, num_pipelines))
    else:
        stride, owned = num_pipelines, list(range(num_files))
    files_t = tf.constant([files[i] for i in owned])
    sizes_t = tf.constant([sizes[i] for i in owned], tf.int64)
    counts_t = tf.constant([counts[i] for i in owned], tf.int64)
    cycle = min(cycle_length, len(owned))
    base = tf.constant([0, seed % (1 << 63)], tf.int64)
    epoch, start, end = (tf.cast(value, tf.int64) for value in (epoch, start, end))

    def read_block(block_files, block_sizes):
        return tf.data.Dataset.from_tensor_slices((block_files, block_sizes)).interleave(
            _as_written(lambda filename, size: read_shard(filename, size, skip_corrupt)),
            cycle_length=cycle,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    epoch_seed = _fold(base, epoch, pipeline_id)
    if stride == 1:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(owned), dtype=tf.int64), _fold(epoch_seed, _FILE_ORDER)
        )
    else:
        order = tf.range(len(owned), dtype=tf.int64)
    epoch_files, epoch_sizes = tf.gather(files_t, order), tf.gather(sizes_t, order)
    block_counts = tf.math.segment_sum(tf.gather(counts_t, order), tf.range(len(owned)) // cycle)
    block_starts = tf.cumsum(block_counts, exclusive=True)
    first_window = start // window
    raw_start = first_window * window * stride  # in the blocks' record stream
    block = tf.searchsorted(block_starts, raw_start[tf.newaxis], side="right")[0] - 1
    blocks = tf.data.Dataset.from_tensor_slices((epoch_files, epoch_sizes)).skip(
        tf.cast(block, tf.int64) * cycle
    )
    groups = blocks.batch(cycle).flat_map(_as_written(read_block))
    if skip_corrupt:
        groups = _count_corrupt_shards(groups)
    records = groups.unbatch().skip(raw_start - tf.gather(block_starts, block))
    if stride > 1:
        records = records.shard(stride, pipeline_id)
    num_windows = tf.maximum(-(-end // window) - first_window, 0)
    image_seed = _fold(epoch_seed, _IMAGES)

    def permute(index, records):
        # Output t of window `index` is its record shuffled[t], at position index * window + t.
        shuffled = tf.random.experimental.stateless_shuffle(
            tf.range(tf.size(records, out_type=tf.int64)), _fold(epoch_seed, _WINDOW_ORDER, index)
        )
        positions = index * window + tf.range(tf.size(shuffled, out_type=tf.int64))
        keep = (positions >= start) & (positions < end)
        window_draws = draws(_fold(image_seed, index), window)
        return (
            tf.gather(records, tf.boolean_mask(shuffled, keep)),
            *(tf.boolean_mask(d[: tf.size(shuffled)], keep) for d in window_draws),
        )

    indices = tf.data.Dataset.range(first_window, first_window + num_windows)
    windows = tf.data.Dataset.zip(indices, records.batch(window).take(num_windows)).map(_as_written(permute))
    # One window read ahead: the next one fills while this one is consumed (~2 windows of memory).
    return windows.prefetch(1).unbatch()


def _shard_counts(files, shard_records, skip_corrupt):
    """Records of each of `files`: from `shard_records`, else the manifest beside them, else counted."""
    if shard_records is None:
        shard_records = schema.shard_records(schema.read_manifest(os.path.dirname(files[0]))) or {}
    missing = [f for f in files if os.path.basename(f) not in shard_records]
    if missing:
        logging.warning(
            "Counting the records of %d shard(s) that no %s lists (the trainer's exact order needs "
            "each shard's count; the converter's manifest has them).",
            len(missing),
            schema.MANIFEST_FILENAME,
        )
        counted = shard_record_counts(missing, skip_corrupt)
        shard_records = {**shard_records, **{os.path.basename(f): n for f, n in zip(missing, counted)}}
    return [shard_records[os.path.basename(f)] for f in files]


def files_shorter_side(files):
    """schema.converted_shorter_side of `files`, when they all lie in one data dir; else None."""
    directories = {os.path.dirname(f) for f in files}
    if len(directories) != 1:
        return None
    return schema.converted_shorter_side(schema.read_manifest(directories.pop()), files)


def make_dataset(
    file_pattern,
    batch_size,
    training,
    *,
    image_size=IMAGE_SIZE,
    resize_shorter=RESIZE_SHORTER,
    augment="paper",
    pca_std=PCA_STD,
    ten_crop=False,
    label_offset=None,
    num_classes=None,
    input_context=None,
    shuffle_buffer_size=10_000,
    repeat=None,
    drop_remainder=None,
    skip_corrupt=False,
    cycle_length=16,
    jit_compile=True,
    seed=None,
    start_step=0,
    position=None,
    shard_records=None,
    data_service=None,
    service_job_name=None,
    finish_on_host=True,
):
    """Batched (images, labels) from TFRecord shards in the model-garden ImageNet schema.

    Args:
      file_pattern: glob (or list of globs/files) of the shards, e.g. "/data/train-*".
      batch_size: the global batch size. With `input_context` each pipeline yields
        `input_context.get_per_replica_batch_size(batch_size)` images per batch (use with
        `strategy.distribute_datasets_from_function`); without it, batches hold `batch_size`.
      training: random crop/flip/lighting, shuffled, repeated, in an order and with draws that
        are a function of (seed, epoch, input pipeline) and of each image's position in it
        (`_exact_training_records`); else a centre crop (or ten crops) in file order.
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
      shuffle_buffer_size: training: records per shuffled window (about twice that are held).
      repeat: repeat forever; defaults to `training`.
      drop_remainder: defaults to `training`; in training, also ends every epoch at its last
        full global batch.
      skip_corrupt: skip the rest of a corrupt or truncated shard (logged with the file name and
        a running count of such shards), images that fail to decode, and a record that is not
        a tf.train.Example (in evaluation: the group of 64 records around it; both logged by
        tf.data). By default a corrupt or truncated shard is an InvalidArgumentError naming the
        file. Skipped records shift the training order (it stays a function of the data).
      cycle_length: shards read at once.
      jit_compile: do the per-batch pixel work (flip, cast, lighting, mean) as one XLA kernel on
        the host; False runs the same ops one by one (same result, ~10x the CPU).
      seed: training: seed of the order and the augmentation (None: a random one).
      start_step: training: the global steps (batches of `batch_size`, taken by these input
        pipelines) already taken; the stream resumes where they ended, exactly.
      position: training: an EpochPosition to resume at instead of `start_step` (where a run
        that trained with another global batch or number of input pipelines stopped).
      shard_records: training: {shard file name: records}; None reads the counts from the
        manifest.json beside the shards, or counts the shards it does not list.
      data_service: training only: grpc://HOST:PORT of a tf.data service dispatcher. Its
        workers read, decode, crop and batch (see distribute_to_service); the flip, lighting
        and mean run here. Every input pipeline reads from the one job `service_job_name`, so
        files are not split by `input_context`: the dispatcher hands them out. This stream is
        not the exact one: files and records are shuffled with stateful draws, and a resume
        does not continue the epoch where it stopped.
      service_job_name: the shared job's name (the same in every input pipeline of a run).
      finish_on_host: training: False leaves each batch's flip, lighting and mean to its
        consumer: images come as preprocessing.unfinished_batch's dict of uint8 crops and
        their draws, for preprocessing.finish_batch (the trainer runs it in the train step, on
        the accelerator).

    Returns:
      tf.data.Dataset of (float32 [B, image_size, image_size, 3] mean-subtracted images,
      int32 [B] 0-based labels); in training without `finish_on_host`, the images are a dict.
    """
    if data_service is not None and not (training and service_job_name):
        raise ValueError("data_service is for training pipelines, and needs a service_job_name")
    files = _list_files(file_pattern)
    if label_offset is None:
        label_offset = schema.detect_label_offset(os.path.dirname(files[0]))
        if label_offset is None:
            raise ValueError(schema.unknown_label_offset(os.path.dirname(files[0])))
    num_pipelines, pipeline_id = 1, 0
    records_per_step = batch_size
    if input_context is not None:
        num_pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        records_per_step = batch_size * (input_context.num_replicas_in_sync // num_pipelines)
    common = dict(
        batch_size=batch_size,
        image_size=image_size,
        resize_shorter=resize_shorter,
        augment=augment,
        pca_std=pca_std,
        ten_crop=ten_crop,
        drop_remainder=drop_remainder,
        skip_corrupt=skip_corrupt,
        jit_compile=jit_compile,
        label_offset=label_offset,
        num_classes=num_classes,
        finish_on_host=finish_on_host,
        # Only the training crop uses it: evaluation does not read the manifest again.
        shorter_side=files_shorter_side(files) if training else None,
    )
    if training and data_service is None:
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "little")
        counts = _shard_counts(files, shard_records, skip_corrupt)
        if position is None and start_step:
            position = position_of_step(start_step, counts, records_per_step * num_pipelines, num_pipelines)
        records = _exact_training_records(
            files,
            _file_sizes(files),
            counts,
            num_pipelines=num_pipelines,
            pipeline_id=pipeline_id,
            records_per_step=records_per_step,
            seed=seed,
            position=position,
            repeat=True if repeat is None else repeat,
            drop_remainder=True if drop_remainder is None else drop_remainder,
            window=shuffle_buffer_size,
            cycle_length=cycle_length,
            skip_corrupt=skip_corrupt,
            draws=lambda seed, count: training_draws(
                seed, count, image_size, resize_shorter, augment, pca_std
            ),
        )
        keys = {key: schema.FEATURE_SPEC[key] for key in (schema.ENCODED_KEY, schema.LABEL_KEY)}

        def parse_record(record, *draws):
            features = tf.io.parse_single_example(record, keys)
            return features[schema.ENCODED_KEY], features[schema.LABEL_KEY], draws

        return _preprocess_and_batch(
            records, parse_record, training=True, shuffle_buffer_size=None, seed=None, **common
        )

    if data_service is not None:
        num_pipelines, pipeline_id = 1, 0  # the shared job splits the files between pipelines
    shard_files = len(files) >= num_pipelines
    if shard_files:
        files = files[pipeline_id::num_pipelines]

    dataset = tf.data.Dataset.from_tensor_slices((files, tf.constant(_file_sizes(files), tf.int64)))
    if training and shard_files:
        dataset = dataset.shuffle(len(files), seed=seed)  # the service: a new file order every pass
    if training if repeat is None else repeat:
        dataset = dataset.repeat()
    # Evaluation reads in file order; the service's training stream in any order.
    ordered = not (training and shard_files)
    dataset = dataset.interleave(
        _as_written(lambda filename, size: read_shard(filename, size, skip_corrupt)),
        cycle_length=min(cycle_length, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=ordered,
    )
    if skip_corrupt:
        dataset = _count_corrupt_shards(dataset)

    def parse(records):
        # Whole groups at once: one vectorised parse instead of 64 function calls.
        keys = (schema.ENCODED_KEY, schema.LABEL_KEY)
        features = tf.io.parse_example(records, {key: schema.FEATURE_SPEC[key] for key in keys})
        return features[schema.ENCODED_KEY], features[schema.LABEL_KEY]

    dataset = dataset.map(_as_written(parse), num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
    if skip_corrupt:
        dataset = dataset.ignore_errors(log_warning=True)  # a record that is no Example: its group
    dataset = dataset.unbatch()
    if not shard_files:
        dataset = dataset.shard(num_pipelines, pipeline_id)

    return _preprocess_and_batch(
        dataset,
        lambda image_bytes, label: (image_bytes, label, None),
        training=training,
        shuffle_buffer_size=shuffle_buffer_size,
        seed=seed,
        distribute=None if data_service is None else _service_distributor(data_service, service_job_name),
        **common,
    )


# ----------------------------------------------------------------------------- tf.data service


def distribute_to_service(dataset, service, job_name):
    """`dataset` run by the workers of the tf.data service `service`, as one job shared by name.

    Dynamic sharding (docs/distributed.md, "Feeding fast accelerators"): the dispatcher hands
    each worker the next file of the file list it holds (the pipeline's source, shuffled anew
    each pass), so within a pass every file goes to exactly one worker; a worker that dies takes
    the rest of its files' records for that pass with it (at most once, never twice), and a
    worker that joins takes files from the next one handed out. Every input pipeline that
    names the job consumes from it, first come first served, whatever dataset it brings: the
    job keeps the one it was created with, so its name must change whenever the dataset does
    (training.inputs.service_job_name). Elements travel uncompressed: snappy shrank the uint8
    crops of the demo images by 15% only, and costs CPU on both ends.
    """
    return dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
            service=service,
            job_name=job_name,
            compression=None,
        )
    )


def _service_distributor(service, job_name):
    return lambda dataset: distribute_to_service(dataset, service, job_name)


def wait_for_dispatcher(host, port, wait_s, poll_s=1.0):
    """Returns once `host:port` accepts TCP connections; ConnectionError after `wait_s` seconds.

    A cheap, bounded check before a tf.data service client or worker starts: theirs retries
    an absent dispatcher for up to an hour without a word.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(5.0, wait_s))):
                return
        except OSError as e:
            if time.monotonic() + poll_s > deadline:
                reason = e.strerror or type(e).__name__
                raise ConnectionError(
                    f"no tf.data service dispatcher answers at {host}:{port} ({reason}, waited {wait_s:g} s)"
                ) from None
            time.sleep(poll_s)


def make_tfds_dataset(
    data_dir,
    split,
    batch_size,
    training,
    *,
    name="imagenet2012",
    image_size=IMAGE_SIZE,
    resize_shorter=RESIZE_SHORTER,
    augment="paper",
    pca_std=PCA_STD,
    ten_crop=False,
    input_context=None,
    shuffle_buffer_size=10_000,
    repeat=None,
    drop_remainder=None,
    jit_compile=True,
    seed=None,
    finish_on_host=True,
):
    """Like make_dataset, reading ImageNet prepared by tensorflow-datasets (labels 0-based).

    The images stay encoded (tfds.decode.SkipDecoding) so the same decode-and-crop code runs.

    Args:
      data_dir: tfds data dir holding `imagenet2012/<version>/`.
      split: tfds split, e.g. "train", "validation", "validation[:1000]".
      batch_size, training, image_size, resize_shorter, augment, pca_std, ten_crop,
      input_context, shuffle_buffer_size, repeat, drop_remainder, jit_compile, seed,
        finish_on_host: as in make_dataset (tfds splits files between input pipelines).
      name: tfds dataset name.

    Returns:
      tf.data.Dataset of (float32 images, int32 labels) as make_dataset.
    """
    # Imported here: it takes seconds, and only this source needs it.
    import tensorflow_datasets as tfds

    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
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
    if training if repeat is None else repeat:
        dataset = dataset.repeat()
    return _preprocess_and_batch(
        dataset,
        lambda example: (example["image"], example["label"], None),
        training=training,
        batch_size=batch_size,
        image_size=image_size,
        resize_shorter=resize_shorter,
        augment=augment,
        pca_std=pca_std,
        ten_crop=ten_crop,
        shuffle_buffer_size=shuffle_buffer_size,
        drop_remainder=drop_remainder,
        skip_corrupt=False,
        jit_compile=jit_compile,
        label_offset=0,
        num_classes=None,
        seed=seed,
        finish_on_host=finish_on_host,
    )


def synthetic_dataset(
    batch_size, image_size=IMAGE_SIZE, num_classes=1000, *, ten_crop=False, input_context=None, seed=0
):
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
