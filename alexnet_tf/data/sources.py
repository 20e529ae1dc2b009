"""One object per data source: TFRecord shards, tensorflow-datasets, synthetic batches.

Every source has the same members:
    name                   its --data_source value (the key in SOURCES)
    needs_data_dir         whether it reads a data dir (synthetic batches do not)
    takes_service          whether the tf.data service can produce its training batches
    inexact_resume_reason  why a resumed run does not continue its order exactly; None when it does
    eval_steps             global evaluation batches when none are asked for (None: all of them)
    describe(...)          checks the data and says what it holds: a DataInfo, or a ConfigError
    training_dataset(...)  training batches, from where a run stands
    evaluation_dataset(...)  evaluation batches (centre crop or ten crops)
A source is built from the same fields whatever its kind (`source_named`); adding one is
adding a class here and its line in SOURCES.
"""

import dataclasses
import os
from typing import ClassVar, Optional

import tensorflow as tf

from alexnet_tf.config import ConfigError
from alexnet_tf.data import pipelines, schema
from alexnet_tf.data.pipelines import PixelSettings
from alexnet_tf.data.records import cached_shard_records

DEFAULT_NUM_CLASSES = 1000
SYNTHETIC_STEPS_PER_EPOCH = 100
SYNTHETIC_EVAL_STEPS = 10
TFDS_NAME = "imagenet2012"  # the tensorflow-datasets dataset the tfds source reads


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a data source holds, as far as a trainer needs to know."""

    source: str  # the source's name
    num_classes: int
    labels: Optional[tuple[schema.LabelEntry, ...]]  # labels.txt entries in label order, if known
    label_offset: int
    train_examples: int
    # {training shard file name: records} (TFRecord shards): what the exact training order
    # (alexnet_tf.data.order) is planned from; None for other sources.
    train_shard_records: Optional[dict] = None
    labels_file: Optional[str] = None  # the labels.txt that `labels` come from, if any


@dataclasses.dataclass(frozen=True)
class DataSource:
    """The fields every source is built from; a source reads those it needs.

    data_dir: the folder of the data (TFRecord shards, or a tfds data dir).
    train_pattern, eval_pattern: TFRecord shard globs inside data_dir.
    label_offset: subtracted from stored labels; None: from manifest.json / labels.txt.
    num_classes: None: what the data says (else DEFAULT_NUM_CLASSES); checked against it.
    skip_corrupt: skip corrupt shards and images (pipelines.training_dataset).
    pixels: the pixel settings of its batches.
    """

    name: ClassVar[str]
    needs_data_dir: ClassVar[bool] = True
    takes_service: ClassVar[bool] = False
    inexact_resume_reason: ClassVar[Optional[str]] = None
    eval_steps: ClassVar[Optional[int]] = None

    data_dir: str = ""
    train_pattern: str = "train-*"
    eval_pattern: str = "validation-*"
    label_offset: Optional[int] = None
    num_classes: Optional[int] = None
    skip_corrupt: bool = False
    pixels: PixelSettings = PixelSettings()

    def describe(
        self,
        *,
        batch_size,
        steps_per_epoch=None,
        count_cache=None,
        write_count_cache=False,
        require_validation=True,
    ):
        """Checks the data and describes it.

        Args:
          batch_size, steps_per_epoch: the run's global batch and --steps_per_epoch (synthetic
            batches hold as many training examples as an epoch of them takes).
          count_cache: JSON file caching the training record counts of shards whose manifest
            has none (counting reads every record); None counts every time.
          write_count_cache: store a fresh count in `count_cache` (a trainer's chief only).
          require_validation: also check that the validation data exists.

        Returns:
          A DataInfo.

        Raises:
          ConfigError: missing or empty data dir, no matching files, a labels file that does
            not agree with num_classes, unknown label offset, tfds data not prepared.
        """
        raise NotImplementedError

    def training_dataset(
        self,
        batch_size,
        *,
        info=None,
        input_context=None,
        seed=None,
        start_step=0,
        position=None,
        shuffle_buffer_size=10_000,
        finish_on_host=True,
        service=None,
    ):
        """Training batches of `batch_size` (global) images, as pipelines.training_dataset's.

        Args:
          info: this source's DataInfo (labels and counts as `describe` read them); None: the
            source's own fields, the data read again where they leave something open.
          input_context: tf.distribute.InputContext of the pipeline, or None.
          seed: seed of the order and augmentation, or None.
          start_step, position: where the stream starts (pipelines.training_dataset); a source
            without an exact order only avoids replaying the epoch's start.
          shuffle_buffer_size: records per shuffled window.
          finish_on_host: False leaves the flip, lighting and mean to the consumer.
          service: a service.ServiceJob producing the batches (sources that take it).
        """
        raise NotImplementedError

    def evaluation_dataset(
        self, batch_size, *, info=None, ten_crop=False, input_context=None, corruption=None
    ):
        """Evaluation batches of `batch_size` (global) images: the centre crop, or the ten crops.

        `corruption`: None, or (uint8 centre crop, int64 image index) -> uint8 crop, applied
        to each centre crop (pipelines.evaluation_dataset; sources of real images only).
        """
        raise NotImplementedError

    @property
    def resumes_exactly(self):
        """Whether a resumed run continues this source's training order where it stopped."""
        return self.inexact_resume_reason is None

    def _check_no_service(self, service):
        if service is not None:
            raise ValueError(f"the tf.data service reads TFRecord shards, not the {self.name} source")


def _check_data_dir(data_dir):
    if not tf.io.gfile.exists(data_dir):
        raise ConfigError(f"data dir {data_dir} does not exist")
    if not tf.io.gfile.isdir(data_dir):
        raise ConfigError(f"data dir {data_dir} is not a directory")
    if not tf.io.gfile.listdir(data_dir):
        raise ConfigError(f"data dir {data_dir} is empty")


def _num_classes(asked, counted, where):
    """`asked` (num_classes, or None) checked against what the data says (`counted`, or None if unknown)."""
    if counted is None:
        return asked or DEFAULT_NUM_CLASSES
    if asked is not None and asked != counted:
        raise ConfigError(f"--num_classes={asked} but {where} lists {counted} classes")
    return counted


@dataclasses.dataclass(frozen=True)
class TFRecordSource(DataSource):
    """TFRecord shards from `python -m alexnet_tf.convert` or the model garden: the exact, resumable order."""

    name: ClassVar[str] = "tfrecord"
    takes_service: ClassVar[bool] = True

    def describe(
        self,
        *,
        batch_size,
        steps_per_epoch=None,
        count_cache=None,
        write_count_cache=False,
        require_validation=True,
    ):
        data_dir = self.data_dir
        _check_data_dir(data_dir)
        patterns = [(self.train_pattern, "training")]
        if require_validation:
            patterns.append((self.eval_pattern, "validation"))
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
            offset = self.label_offset
            if offset is None:
                offset = schema.label_offset_of(manifest, labels, data_dir)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if offset is None:
            raise ConfigError(schema.unknown_label_offset(data_dir, "--label_offset"))
        if labels is not None:
            labels = tuple(labels)
            num_classes = _num_classes(self.num_classes, len(labels), labels_path)
        else:
            num_classes = _num_classes(
                self.num_classes,
                manifest.get("num_classes"),
                os.path.join(data_dir, schema.MANIFEST_FILENAME),
            )
        train_glob = os.path.join(data_dir, self.train_pattern)
        listed = schema.shard_records(manifest)
        names = [os.path.basename(f) for f in tf.io.gfile.glob(train_glob)]
        if all(name in listed for name in names):
            shard_records = {name: listed[name] for name in names}
        else:
            shard_records = cached_shard_records(
                train_glob, count_cache, write_count_cache, self.skip_corrupt
            )
        return DataInfo(
            self.name,
            num_classes,
            labels,
            int(offset),
            sum(shard_records.values()),
            shard_records,
            labels_path if labels is not None else None,
        )

    def _labels(self, info):
        """(label_offset, num_classes) of the pipelines: `info`'s, else the source's fields."""
        if info is None:
            return self.label_offset, self.num_classes
        return info.label_offset, info.num_classes

    def training_dataset(
        self,
        batch_size,
        *,
        info=None,
        input_context=None,
        seed=None,
        start_step=0,
        position=None,
        shuffle_buffer_size=10_000,
        finish_on_host=True,
        service=None,
    ):
        label_offset, num_classes = self._labels(info)
        return pipelines.training_dataset(
            os.path.join(self.data_dir, self.train_pattern),
            batch_size,
            pixels=self.pixels,
            label_offset=label_offset,
            num_classes=num_classes,
            skip_corrupt=self.skip_corrupt,
            input_context=input_context,
            seed=seed,
            shuffle_buffer_size=shuffle_buffer_size,
            start_step=start_step,
            position=position,
            shard_records=None if info is None else info.train_shard_records,
            service=service,
            finish_on_host=finish_on_host,
        )

    def evaluation_dataset(
        self, batch_size, *, info=None, ten_crop=False, input_context=None, corruption=None
    ):
        label_offset, num_classes = self._labels(info)
        return pipelines.evaluation_dataset(
            os.path.join(self.data_dir, self.eval_pattern),
            batch_size,
            pixels=self.pixels,
            ten_crop=ten_crop,
            label_offset=label_offset,
            num_classes=num_classes,
            skip_corrupt=self.skip_corrupt,
            input_context=input_context,
            corruption=corruption,
        )


@dataclasses.dataclass(frozen=True)
class TFDSSource(DataSource):
    """ImageNet prepared by tensorflow-datasets (imagenet2012) in `data_dir`: reshuffled on resume."""

    name: ClassVar[str] = "tfds"
    inexact_resume_reason: ClassVar[Optional[str]] = (
        "tensorflow-datasets input reshuffles on resume (seed + step) instead of continuing "
        "the epoch's order; convert the data to TFRecord shards (alexnet_tf.data.convert) for an "
        "exact resume"
    )

    def describe(
        self,
        *,
        batch_size,
        steps_per_epoch=None,
        count_cache=None,
        write_count_cache=False,
        require_validation=True,
    ):
        import tensorflow_datasets as tfds  # slow; one source

        data_dir = self.data_dir
        _check_data_dir(data_dir)
        try:
            builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
            train_examples = builder.info.splits["train"].num_examples
            builder.info.splits["validation"]
            names = tuple(builder.info.features["label"].names)
        except Exception as e:  # noqa: BLE001  tfds raises many kinds
            raise ConfigError(
                f"tensorflow-datasets {TFDS_NAME} is not prepared in {data_dir} "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            ) from None
        num_classes = _num_classes(self.num_classes, len(names), f"tfds {TFDS_NAME}")
        return DataInfo(self.name, num_classes, names, 0, int(train_examples))

    def training_dataset(
        self,
        batch_size,
        *,
        info=None,
        input_context=None,
        seed=None,
        start_step=0,
        position=None,
        shuffle_buffer_size=10_000,
        finish_on_host=True,
        service=None,
    ):
        self._check_no_service(service)
        return pipelines.tfds_training_dataset(
            self.data_dir,
            "train",
            batch_size,
            pixels=self.pixels,
            name=TFDS_NAME,
            input_context=input_context,
            # A resumed run reshuffles with another seed, so that it does not replay the epoch's start.
            seed=None if seed is None else seed + start_step,
            shuffle_buffer_size=shuffle_buffer_size,
            finish_on_host=finish_on_host,
        )

    def evaluation_dataset(
        self, batch_size, *, info=None, ten_crop=False, input_context=None, corruption=None
    ):
        return pipelines.tfds_evaluation_dataset(
            self.data_dir,
            "validation",
            batch_size,
            pixels=self.pixels,
            ten_crop=ten_crop,
            name=TFDS_NAME,
            input_context=input_context,
            corruption=corruption,
        )


@dataclasses.dataclass(frozen=True)
class SyntheticSource(DataSource):
    """Random batches made once and repeated: no data dir, nothing to lose on resume."""

    name: ClassVar[str] = "synthetic"
    needs_data_dir: ClassVar[bool] = False
    eval_steps: ClassVar[Optional[int]] = SYNTHETIC_EVAL_STEPS

    def describe(
        self,
        *,
        batch_size,
        steps_per_epoch=None,
        count_cache=None,
        write_count_cache=False,
        require_validation=True,
    ):
        steps = steps_per_epoch or SYNTHETIC_STEPS_PER_EPOCH
        return DataInfo(self.name, self.num_classes or DEFAULT_NUM_CLASSES, None, 0, steps * batch_size)

    def _classes(self, info):
        return info.num_classes if info is not None else self.num_classes or DEFAULT_NUM_CLASSES

    def training_dataset(
        self,
        batch_size,
        *,
        info=None,
        input_context=None,
        seed=None,
        start_step=0,
        position=None,
        shuffle_buffer_size=10_000,
        finish_on_host=True,
        service=None,
    ):
        self._check_no_service(service)
        return pipelines.synthetic_dataset(
            batch_size,
            self.pixels.image_size,
            num_classes=self._classes(info),
            input_context=input_context,
            seed=seed or 0,
        )

    def evaluation_dataset(
        self, batch_size, *, info=None, ten_crop=False, input_context=None, corruption=None
    ):
        if corruption is not None:
            raise ValueError("synthetic batches are no images to corrupt; pass a data dir")
        return pipelines.synthetic_dataset(
            batch_size,
            self.pixels.image_size,
            num_classes=self._classes(info),
            ten_crop=ten_crop,
            input_context=input_context,
            seed=1,
        )


# The one place a --data_source value names its class.
SOURCES = {source.name: source for source in (TFRecordSource, TFDSSource, SyntheticSource)}


def source_named(name, **fields):
    """The source `name` (a key of SOURCES) built from DataSource's `fields`; ConfigError for another name."""
    if name not in SOURCES:
        raise ConfigError(f"data_source={name!r}; choose one of {', '.join(SOURCES)}")
    return SOURCES[name](**fields)
