"""Reading TFRecord shards: file lists, whole-shard checks, record counts, label checks.

`read_shard` is the one reader of a shard's records: it frames its groups of records and
checks that the shard is whole (END_OF_SHARD ends each shard's stream). The pipelines
(`alexnet_tf.data.pipelines`) and the training order (`alexnet_tf.data.order`) read shards
through it; the record format is `alexnet_tf.data.schema`'s.
"""

import concurrent.futures
import json
import os

from absl import logging
import tensorflow as tf

from alexnet_tf.data import schema

# A TFRecord frame is an 8-byte length, its 4-byte CRC, the data, and the data's 4-byte CRC.
_TFRECORD_FRAME_BYTES = 16
# Records the shard reader handles per tf.data function call (see read_shard).
_READ_GROUP = 64
# Ends each shard's record stream. 0xff opens a protobuf field with wire type 7, which does not
# exist, so no serialized Example equals it.
END_OF_SHARD = b"\xffalexnet_tf:end-of-shard"
# How the reader's error about a damaged shard starts: commands tell it from other errors by it.
DAMAGED_SHARD = "corrupt or truncated TFRecord shard"


def as_written(fn):
    """`fn` for a tf.data transformation, traced as written, without AutoGraph's conversion.

    These functions branch only on Python values (tf.cond where a tensor decides), so
    AutoGraph's rewrite of their source, and of everything they call, changes nothing but
    costs about 4.5 CPU seconds in every process that builds the pipelines (measured per
    trainer run; the same final weights without it).
    """
    return tf.autograph.experimental.do_not_convert(fn)


def list_files(file_pattern):
    """The sorted files matching `file_pattern` (a glob, or a list of globs or files); ValueError if none."""
    patterns = [file_pattern] if isinstance(file_pattern, (str, os.PathLike)) else list(file_pattern)
    files = sorted({f for pattern in patterns for f in tf.io.gfile.glob(os.fspath(pattern))})
    if not files:
        raise ValueError(f"no files match {file_pattern!r}")
    return files


def file_sizes(files):
    """Each of `files`' size in bytes, in their order."""
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
            DAMAGED_SHARD,
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
                report + ["bytes): convert it again; training can skip such shards with --skip_corrupt"],
            )
            with tf.control_dependencies([check]):
                keep = tf.logical_not(at_end)
        frames = tf.cast(tf.reduce_sum(tf.strings.length(group)), tf.int64)
        read_bytes += frames + _TFRECORD_FRAME_BYTES * tf.cast(tf.size(group), tf.int64)
        return read_bytes, group[: tf.where(keep, tf.size(group), 0)]

    return groups.scan(tf.constant(0, tf.int64), as_written(step))


def count_corrupt_shards(groups):
    """Logs a running count of the corrupt shards skipped, and drops their end markers."""

    def step(count, group):
        corrupt = tf.reduce_any(tf.equal(group, END_OF_SHARD))
        count += tf.cast(corrupt, tf.int64)
        tf.cond(
            corrupt,
            lambda: tf.print(
                "alexnet_tf.data.records: corrupt TFRecord shards skipped so far:",
                count,
                output_stream=logging.warning,
            ),
            tf.no_op,
        )
        return count, tf.boolean_mask(group, tf.not_equal(group, END_OF_SHARD))

    return groups.scan(tf.constant(0, tf.int64), as_written(step))


def shard_record_counts(files, skip_corrupt=False):
    """Records in each of `files` (reads them once, without parsing), in their order.

    A corrupt or truncated shard is an InvalidArgumentError naming it, as in the pipelines;
    with `skip_corrupt` its records up to the damage are counted (what the pipeline reads).
    """

    def count(filename, size):
        groups = read_shard(filename, size, skip_corrupt)
        records = lambda n, group: n + tf.size(tf.boolean_mask(group, tf.not_equal(group, END_OF_SHARD)))
        return int(groups.reduce(tf.constant(0), as_written(records)).numpy())

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(count, files, file_sizes(files)))


def _shard_fingerprint(files):
    """[name, size, mtime in ns] of each file, sorted: what a cached record count is valid for."""
    fingerprint = []
    for path in sorted(files):
        stat = tf.io.gfile.stat(path)
        fingerprint.append([os.path.basename(path), int(stat.length), int(stat.mtime_nsec)])
    return fingerprint


def _read_json(path):
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else {}
    except (tf.errors.OpError, ValueError):
        return {}


def cached_shard_records(pattern, cache_path=None, write_cache=False, skip_corrupt=False):
    """{shard file name: records} of the files matching `pattern`, counted or read from a cache.

    The JSON file `cache_path` maps each pattern to its shards' names, sizes and modification
    times and their record counts; counts are reused only for exactly the same files. A fresh
    count (which reads every record once; `skip_corrupt` as in shard_record_counts) is
    stored there when `write_cache` (the chief: other workers read what it wrote). A cache
    that cannot be written only costs a recount at the next start.
    """
    files = sorted(tf.io.gfile.glob(pattern))
    fingerprint = _shard_fingerprint(files) if cache_path else None
    entry = _read_json(cache_path).get(pattern) if cache_path else None
    if (
        isinstance(entry, dict)
        and entry.get("files") == fingerprint
        and isinstance(entry.get("records"), int)
        and isinstance(entry.get("per_file"), list)
        and len(entry["per_file"]) == len(files)
    ):
        logging.info("Record counts of %s: %d in all, cached in %s.", pattern, entry["records"], cache_path)
        return {name: count for (name, _, _), count in zip(fingerprint, entry["per_file"])}
    logging.warning(
        "No record counts in the data dir's %s; counting the records of %s once (the training "
        "order needs each shard's count; the converter writes them into its manifest).",
        schema.MANIFEST_FILENAME,
        pattern,
    )
    counts = shard_record_counts(files, skip_corrupt)
    if cache_path and write_cache:
        cache = _read_json(cache_path)
        cache[pattern] = {"files": fingerprint, "records": sum(counts), "per_file": counts}
        try:
            tf.io.gfile.makedirs(os.path.dirname(cache_path))
            with tf.io.gfile.GFile(cache_path + ".tmp", "w") as f:
                json.dump(cache, f, indent=1)
            tf.io.gfile.rename(cache_path + ".tmp", cache_path, overwrite=True)
        except (tf.errors.OpError, OSError) as e:
            logging.warning("Could not cache the record counts in %s: %s", cache_path, e)
    return {os.path.basename(f): count for f, count in zip(files, counts)}


def shard_counts(files, shard_records, skip_corrupt):
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


def zero_based_labels(labels, label_offset, num_classes):
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
