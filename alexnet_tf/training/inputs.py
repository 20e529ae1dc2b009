"""The trainer's view of its data source: the source of a config, its description, its dataset functions.

`data_source` turns a TrainConfig into its `alexnet_tf.data.sources` object; `describe_data`
checks the data with it and turns it into a `DataInfo`, or raises a ConfigError that names
what is wrong; `make_input_fns` returns the dataset functions that
`strategy.distribute_datasets_from_function` calls once per input pipeline (the global
batch is split over replicas by the pipelines through the InputContext).
"""

from collections.abc import Callable
import dataclasses
import hashlib

from absl import logging

from alexnet_tf.config import ConfigError, parse_service_address
from alexnet_tf.data import order, preprocessing, sources
from alexnet_tf.data.pipelines import PixelSettings
from alexnet_tf.data.service import ServiceJob, wait_for_dispatcher

RECORD_COUNTS_FILENAME = "record_counts.json"  # in the model dir: counts of shards without a manifest


@dataclasses.dataclass(frozen=True)
class InputFns:
    """train(input_context) and evaluation(input_context, ten_crop) datasets, and a preview batch."""

    train: Callable
    evaluation: Callable
    preview: Callable  # () -> one small batch of augmented training images, not distributed


def data_source(config):
    """The data source (alexnet_tf.data.sources) a TrainConfig reads; ConfigError if the flags do not fit.

    Checks only what needs no I/O: the source's name, its data dir, whether it takes --data_service.
    """
    source = sources.source_named(
        config.data_source,
        data_dir=config.data_dir,
        train_pattern=config.train_pattern,
        eval_pattern=config.eval_pattern,
        label_offset=config.label_offset,
        num_classes=config.num_classes,
        skip_corrupt=config.skip_corrupt,
        pixels=PixelSettings(
            image_size=config.image_size, augment=config.augment, pca_std=config.lighting_std
        ),
    )
    if source.needs_data_dir and not config.demo and not config.data_dir:
        raise ConfigError("--data_dir is required (or pass --demo to train on generated data)")
    if config.data_service is not None and not source.takes_service:
        raise ConfigError(
            f"--data_service reads TFRecord shards; --data_source={config.data_source} cannot use it"
        )
    return source


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
      A sources.DataInfo.

    Raises:
      ConfigError: missing or empty data dir, no matching files, a labels file that does not
        agree with --num_classes, unknown label offset, tfds data not prepared, no dispatcher
        at --data_service.
    """
    source = data_source(config)
    if config.data_service:
        check_data_service(config)
    return source.describe(
        batch_size=config.batch_size,
        steps_per_epoch=config.steps_per_epoch,
        count_cache=count_cache,
        write_count_cache=write_count_cache,
        require_validation=require_validation,
    )


def check_data_service(config):
    """Waits up to config.data_service_wait_s for the dispatcher; ConfigError naming it if none answers."""
    host, port = parse_service_address(config.data_service)
    try:
        wait_for_dispatcher(host, port, config.data_service_wait_s)
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

    TFRecord shards: the steps of an epoch of their exact order (alexnet_tf.data.order; all
    input pipelines take as many steps, so with several workers an epoch ends with the
    smallest worker's share); other sources: the training examples over the global batch.
    """
    if config.steps_per_epoch:
        return config.steps_per_epoch
    if info.train_shard_records:
        counts = [info.train_shard_records[name] for name in sorted(info.train_shard_records)]
        return order.training_steps_per_epoch(counts, config.batch_size, num_pipelines)
    return info.train_examples // config.batch_size


def inexact_resume_reason(config):
    """Why a resumed run of this input would not continue the interrupted run exactly, or None.

    TFRecord shards resume exactly (alexnet_tf.data.order); synthetic batches have nothing to lose.
    """
    if config.data_service:
        return (
            "tf.data service input is read in the order the service's workers produce it; read "
            "the TFRecord shards directly (no --data_service) for an exact resume"
        )
    return data_source(config).inexact_resume_reason


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
        ended (at `position` when given); tensorflow-datasets input reshuffles instead, with
        seed + start_step, so that it does not replay the epoch's start.
      position: order.EpochPosition where TFRecord training data continues (a run resumed with
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
    source = data_source(config)

    def train(
        input_context=None,
        batch_size=config.batch_size,
        shuffle_buffer_size=10_000,
        start=start_step,
        local=False,
        position=position,
    ):
        service = None
        if config.data_service and not local:
            per_replica = batch_size
            if input_context is not None:
                per_replica = input_context.get_per_replica_batch_size(batch_size)
            service = ServiceJob(
                config.data_service, service_job_name(config, seed, per_replica, shuffle_buffer_size)
            )
            logging.info("Reading training batches from job %s of the tf.data service.", service.job_name)
        return source.training_dataset(
            batch_size,
            info=info,
            input_context=input_context,
            seed=seed,
            start_step=0 if service else start,
            position=None if service or not start else position,
            shuffle_buffer_size=shuffle_buffer_size,
            finish_on_host=False,  # the train step finishes the batches (preprocessing.finish_batch)
            service=service,
        )

    def evaluation(input_context=None, ten_crop=False):
        dataset = source.evaluation_dataset(
            config.batch_size, info=info, ten_crop=ten_crop, input_context=input_context
        )
        steps = config.eval_steps or source.eval_steps
        # --eval_steps counts global batches; this pipeline's dataset holds per-replica ones.
        return dataset.take(pipeline_batches(steps, input_context)) if steps else dataset

    def preview():
        # Local even with --data_service: one batch is not worth a job on the service.
        batches = train(batch_size=min(16, config.batch_size), shuffle_buffer_size=64, start=0, local=True)
        images, _ = next(iter(batches))
        return preprocessing.finished(images).numpy()

    return InputFns(train, evaluation, preview)
