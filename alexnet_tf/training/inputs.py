"""The trainer's view of its data source: files, classes, labels, sizes, dataset functions.

`describe_data` checks a data dir and turns it into a `DataInfo`, or raises a ConfigError
that names what is wrong; `make_input_fns` returns the dataset functions that
`strategy.distribute_datasets_from_function` calls once per input pipeline (the global
batch is split over replicas by `pipelines.make_dataset` through the InputContext).
"""

from collections.abc import Callable
import dataclasses
import hashlib
import json
import os
from typing import Optional

from absl import logging
import tensorflow as tf

from alexnet_tf.config import ConfigError, parse_service_address
from alexnet_tf.data import pipelines, preprocessing, schema

DEFAULT_NUM_CLASSES = 1000
RECORD_COUNTS_FILENAME = "record_counts.json"  # in the model dir: counts of shards without a manifest
SYNTHETIC_STEPS_PER_EPOCH = 100
SYNTHETIC_EVAL_STEPS = 10


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a data source holds, as far as the trainer needs to know."""

    source: str
    num_classes: int
    labels: Optional[tuple[schema.LabelEntry, ...]]  # labels.txt entries in label order, if known
    label_offset: int
    train_examples: int
    # {training shard file name: records} (TFRecord shards): what the exact training order
    # (pipelines.make_dataset) is planned from; None for other sources.
    train_shard_records: Optional[dict] = None


@dataclasses.dataclass(frozen=True)
class InputFns:
    """train(input_context) and evaluation(input_context, ten_crop) datasets, and a preview batch."""

    train: Callable
    evaluation: Callable
    preview: Callable  # () -> one small batch of augmented training images, not distributed


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
    count (which reads every record once; `skip_corrupt` as in pipelines.shard_record_counts) is
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
    counts = pipelines.shard_record_counts(files, skip_corrupt)
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


def _check_data_dir(data_dir):
    if not tf.io.gfile.exists(data_dir):
        raise ConfigError(f"data dir {data_dir} does not exist")
    if not tf.io.gfile.isdir(data_dir):
        raise ConfigError(f"data dir {data_dir} is not a directory")
    if not tf.io.gfile.listdir(data_dir):
        raise ConfigError(f"data dir {data_dir} is empty")


def _num_classes(config, counted, where):
    """config.num_classes checked against what the data says (`counted`, or None if unknown)."""
    if counted is None:
        return config.num_classes or DEFAULT_NUM_CLASSES
    if config.num_classes is not None and config.num_classes != counted:
        raise ConfigError(f"--num_classes={config.num_classes} but {where} lists {counted} classes")
    return counted


def _describe_tfrecords(config, count_cache, write_count_cache, require_validation):
    data_dir = config.data_dir
    _check_data_dir(data_dir)
    patterns = [(config.train_pattern, "training")]
    if require_validation:
        patterns.append((config.eval_pattern, "validation"))
    for pattern, what in patterns:
        if not tf.io.gfile.glob(os.path.join(data_dir, pattern)):
            raise ConfigError(
                f"no {what} files match {pattern!r} in {data_dir} (expected TFRecord "
                "shards like train-00000-of-01024 from python -m alexnet_tf.convert)"
            )
    # manifest.json and labels.txt are each read once, here; the pipelines get what they say.
    labels_path = os.path.join(data_dir, schema.LABELS_FILENAME)
    try:
        manifest = schema.read_manifest(data_dir)
        labels = schema.read_labels_if_present(data_dir)
        offset = config.label_offset
        if offset is None:
            offset = schema.label_offset_of(manifest, labels, data_dir)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if offset is None:
        raise ConfigError(schema.unknown_label_offset(data_dir, "--label_offset"))
    if labels is not None:
        labels = tuple(labels)
        num_classes = _num_classes(config, len(labels), labels_path)
    else:
        num_classes = _num_classes(
            config, manifest.get("num_classes"), os.path.join(data_dir, schema.MANIFEST_FILENAME)
        )
    train_glob = os.path.join(data_dir, config.train_pattern)
    listed = schema.shard_records(manifest)
    names = [os.path.basename(f) for f in tf.io.gfile.glob(train_glob)]
    if all(name in listed for name in names):
        shard_records = {name: listed[name] for name in names}
    else:
        shard_records = cached_shard_records(train_glob, count_cache, write_count_cache, config.skip_corrupt)
    train_examples = sum(shard_records.values())
    return DataInfo("tfrecord", num_classes, labels, int(offset), train_examples, shard_records)


def _describe_tfds(config):
    import tensorflow_datasets as tfds  # slow; one source

    data_dir = config.data_dir
    _check_data_dir(data_dir)
    try:
        builder = tfds.builder("imagenet2012", data_dir=data_dir)
        train_examples = builder.info.splits["train"].num_examples
        builder.info.splits["validation"]
        names = tuple(builder.info.features["label"].names)
    except Exception as e:  # noqa: BLE001  tfds raises many kinds
        raise ConfigError(
            f"tensorflow-datasets imagenet2012 is not prepared in {data_dir} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    num_classes = _num_classes(config, len(names), "tfds imagenet2012")
    return DataInfo("tfds", num_classes, names, 0, int(train_examples))


def describe_data(config, count_cache=None, write_count_cache=False, require_validation=True):
    """Checks the data source in `config.data_dir` and describes it.

    Args:
      config: TrainConfig (data_dir, data_source, patterns, num_classes, label_offset, ...),
        with --demo already resolved to the generated data dir.
      count_cache: JSON file caching the training record count of shards whose manifest has
        none (counting reads every record); None counts every time.
      write_count_cache: store a fresh count in `count_cache` (the chief only).
      require_validation: also check that validation shards exist (the input benchmark reads
        training shards only).

    Returns:
      A DataInfo.

    Raises:
      ConfigError: missing or empty data dir, no matching files, a labels file that does not
        agree with --num_classes, unknown label offset, tfds data not prepared.
    """
    if config.data_service:
        check_data_service(config)
    if config.data_source == "tfrecord":
        return _describe_tfrecords(config, count_cache, write_count_cache, require_validation)
    if config.data_source == "tfds":
        return _describe_tfds(config)
    steps = config.steps_per_epoch or SYNTHETIC_STEPS_PER_EPOCH
    return DataInfo(
        "synthetic", config.num_classes or DEFAULT_NUM_CLASSES, None, 0, steps * config.batch_size
    )


def check_data_service(config):
    """Waits up to config.data_service_wait_s for the dispatcher; ConfigError naming it if none answers."""
    host, port = parse_service_address(config.data_service)
    try:
        pipelines.wait_for_dispatcher(host, port, config.data_service_wait_s)
    except ConnectionError as e:
        raise ConfigError(
            f"--data_service={config.data_service}: {e}; start it with python -m alexnet_tf.data_service "
            "dispatcher, or raise --data_service_wait_s"
        ) from None


def service_job_name(config, seed, pipeline_batch_size, shuffle_buffer_size):
    """The tf.data service job of a run's training input: the same in every trainer process.

    A dispatcher serves a job by name to whoever asks, whatever dataset the asker brings (the
    job keeps the dataset it was created with), so the name holds everything that shapes the
    dataset the workers run: the run, the data, the sizes, the augmentation and the seed.
    Trainer processes of one run share the job; another run, or the same run resumed with
    another seed or replica count, gets its own.
    """
    fields = (
        config.model_dir,
        config.data_dir,
        config.train_pattern,
        config.image_size,
        config.augment,
        config.skip_corrupt,
        pipeline_batch_size,
        shuffle_buffer_size,
        seed,
    )
    return "alexnet_tf-" + hashlib.sha256(repr(fields).encode()).hexdigest()[:16]


def steps_per_epoch(config, info, num_pipelines=1):
    """Global steps per epoch: --steps_per_epoch, else one pass over the training data.

    TFRecord shards: the steps of pipelines.make_dataset's epoch (all input pipelines take as many
    steps, so with several workers an epoch ends with the smallest worker's share); other
    sources: the training examples over the global batch.
    """
    if config.steps_per_epoch:
        return config.steps_per_epoch
    if info.train_shard_records:
        counts = [info.train_shard_records[name] for name in sorted(info.train_shard_records)]
        return pipelines.training_steps_per_epoch(counts, config.batch_size, num_pipelines)
    return info.train_examples // config.batch_size


def inexact_resume_reason(config, info):
    """Why a resumed run of this input would not continue the interrupted run exactly, or None.

    TFRecord shards resume exactly (pipelines.make_dataset); synthetic batches have nothing to lose.
    """
    if config.data_service:
        return (
            "tf.data service input is read in the order the service's workers produce it; read "
            "the TFRecord shards directly (no --data_service) for an exact resume"
        )
    if info.source == "tfds":
        return (
            "tensorflow-datasets input reshuffles on resume (seed + step) instead of continuing "
            "the epoch's order; convert the data to TFRecord shards (alexnet_tf.data.convert) for an "
            "exact resume"
        )
    return None


def pipeline_batches(global_batches, input_context=None):
    """The per-replica batches one input pipeline yields for `global_batches` global batches.

    `distribute_datasets_from_function` hands a pipeline's consecutive batches to its replicas
    in turn, so one global batch takes `num_replicas_in_sync / num_input_pipelines` batches
    from every pipeline.
    """
    if input_context is None:
        return global_batches
    return global_batches * (input_context.num_replicas_in_sync // input_context.num_input_pipelines)


def make_input_fns(config, info, seed, start_step=0, position=None):
    """The dataset functions of a run.

    Args:
      config: TrainConfig.
      info: DataInfo from describe_data.
      seed: seed of the training order and augmentation, or None.
      start_step: global steps already trained: TFRecord training data continues where they
        ended (pipelines.make_dataset; at `position` when given); tensorflow-datasets input
        reshuffles instead, with seed + start_step, so that it does not replay the epoch's start.
      position: pipelines.EpochPosition where TFRecord training data continues (a run resumed with
        another global batch or number of workers); None: where `start_step` steps of this
        run's layout end.

    Returns:
      InputFns.
    """
    if config.data_service:
        logging.info(
            "Training batches come from the tf.data service at %s (dynamic sharding: each shard at "
            "most once per pass); evaluation reads locally. Exact resume does not hold with service "
            "input: a resumed run gets the service's stream, not the records where it stopped.",
            config.data_service,
        )
    common = dict(image_size=config.image_size)
    train_glob = os.path.join(config.data_dir, config.train_pattern)
    eval_glob = os.path.join(config.data_dir, config.eval_pattern)
    record_args = dict(
        label_offset=info.label_offset,
        num_classes=info.num_classes,
        skip_corrupt=config.skip_corrupt,
        **common,
    )

    def train(
        input_context=None,
        batch_size=config.batch_size,
        shuffle_buffer_size=10_000,
        start=start_step,
        local=False,
        position=position,
    ):
        service, job_name = None if local else config.data_service, None
        if service:
            per_replica = batch_size
            if input_context is not None:
                per_replica = input_context.get_per_replica_batch_size(batch_size)
            job_name = service_job_name(config, seed, per_replica, shuffle_buffer_size)
            logging.info("Reading training batches from job %s of the tf.data service.", job_name)
        if info.source == "tfrecord":
            return pipelines.make_dataset(
                train_glob,
                batch_size,
                True,
                augment=config.augment,
                input_context=input_context,
                seed=seed,
                shuffle_buffer_size=shuffle_buffer_size,
                start_step=0 if service else start,
                position=None if service or not start else position,
                shard_records=info.train_shard_records,
                data_service=service,
                service_job_name=job_name,
                finish_on_host=False,  # the train step finishes the batches (preprocessing.finish_batch)
                **record_args,
            )
        if info.source == "tfds":
            return pipelines.make_tfds_dataset(
                config.data_dir,
                "train",
                batch_size,
                True,
                augment=config.augment,
                input_context=input_context,
                seed=None if seed is None else seed + start,
                shuffle_buffer_size=shuffle_buffer_size,
                finish_on_host=False,
                **common,
            )
        return pipelines.synthetic_dataset(
            batch_size, num_classes=info.num_classes, input_context=input_context, seed=seed or 0, **common
        )

    def evaluation(input_context=None, ten_crop=False):
        if info.source == "tfrecord":
            dataset = pipelines.make_dataset(
                eval_glob,
                config.batch_size,
                False,
                ten_crop=ten_crop,
                input_context=input_context,
                **record_args,
            )
        elif info.source == "tfds":
            dataset = pipelines.make_tfds_dataset(
                config.data_dir,
                "validation",
                config.batch_size,
                False,
                ten_crop=ten_crop,
                input_context=input_context,
                **common,
            )
        else:
            dataset = pipelines.synthetic_dataset(
                config.batch_size,
                num_classes=info.num_classes,
                ten_crop=ten_crop,
                input_context=input_context,
                seed=1,
                **common,
            )
        steps = config.eval_steps or (SYNTHETIC_EVAL_STEPS if info.source == "synthetic" else None)
        # --eval_steps counts global batches; this pipeline's dataset holds per-replica ones.
        return dataset.take(pipeline_batches(steps, input_context)) if steps else dataset

    def preview():
        # Local even with --data_service: one batch is not worth a job on the service.
        batches = train(batch_size=min(16, config.batch_size), shuffle_buffer_size=64, start=0, local=True)
        images, _ = next(iter(batches))
        return preprocessing.finished(images).numpy()

    return InputFns(train, evaluation, preview)
