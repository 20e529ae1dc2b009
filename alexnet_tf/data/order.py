"""The resumable training order of TFRecord shards: epochs, shares, windows, positions.

An epoch's order is a function of (seed, epoch, input pipelines) and of the shards' record
counts, so a stream can start at any position of it without replaying the epoch
(`exact_training_records` describes the order; `EpochPosition` is where a stream resumes).
`alexnet_tf.data.pipelines.training_dataset` decodes and batches the records it yields.
"""

import dataclasses
import functools

import tensorflow as tf

from alexnet_tf.data.records import as_written, count_corrupt_shards, read_shard

# Salts that keep the stream's random draws apart (see exact_training_records).
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
    """Global steps in one epoch of the training order (all pipelines take as many).

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


def exact_training_records(
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
    rest = epochs.flat_map(as_written(lambda epoch: own_epoch(epoch, 0, used)))
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

    Returns a dataset of (record, *its draws); `exact_training_records` describes the order.
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
            as_written(lambda filename, size: read_shard(filename, size, skip_corrupt)),
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
    groups = blocks.batch(cycle).flat_map(as_written(read_block))
    if skip_corrupt:
        groups = count_corrupt_shards(groups)
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
    windows = tf.data.Dataset.zip(indices, records.batch(window).take(num_windows)).map(as_written(permute))
    # One window read ahead: the next one fills while this one is consumed (~2 windows of memory).
    return windows.prefetch(1).unbatch()
