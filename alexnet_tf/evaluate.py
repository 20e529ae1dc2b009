"""Owns evaluation: top-1/top-5 with the centre crop and the paper's ten crops, and their metrics.

    python -m alexnet_tf.evaluate --data_dir=/data/imagenet --checkpoint=/runs/alexnet
    python -m alexnet_tf.evaluate --data_dir=/data/imagenet --saved_model=/runs/alexnet/export
    python -m alexnet_tf.evaluate --data_dir=/data/imagenet --tflite=model.tflite

prints top-1 and top-5 accuracy of a training checkpoint (a model dir, its checkpoints dir
or one checkpoint prefix), of an exported SavedModel (a version dir, or the base dir for
its newest version) or of a LiteRT (.tflite) file written by `alexnet_tf.export --format=tflite`
(run by the LiteRT interpreter on the same crops, as 0-255 pixels), with the centre crop and
with ten crops (four corners, centre and their mirror images, softmax averaged; the paper's
test protocol). The crops come from the data
source's evaluation pipeline (`alexnet_tf.data.sources`), the same functions the serving
signatures use. The metric functions
here are also what the trainer reports.
"""

import dataclasses
from typing import Optional

from absl import app, flags
import numpy as np
import tensorflow as tf

from alexnet_tf import cli, metrics
from alexnet_tf.config import ConfigError
from alexnet_tf.data import preprocessing, records, sources
from alexnet_tf.data.pipelines import PixelSettings
from alexnet_tf.serving.saved_model import resolve_saved_model
from alexnet_tf.weights.checkpointing import restore_model

FLAGS = flags.FLAGS
EVAL_SOURCES = [name for name, source in sources.SOURCES.items() if source.needs_data_dir]  # real images
PROGRAM = "alexnet_tf.evaluate"


def define_flags(flag_values=FLAGS):
    """Defines the flags on `flag_values` (only the entry point calls this: importing defines none)."""
    d, fv = EvalConfig(), dict(flag_values=flag_values)
    flags.DEFINE_string(
        "data_dir", d.data_dir, "Directory of the validation shards (or tfds data dir).", **fv
    )
    flags.DEFINE_string("checkpoint", d.checkpoint, "Model dir, checkpoints dir or checkpoint prefix.", **fv)
    flags.DEFINE_string("saved_model", d.saved_model, "SavedModel version dir or export base dir.", **fv)
    flags.DEFINE_string("tflite", d.tflite, "A .tflite file of alexnet_tf.export --format=tflite.", **fv)
    flags.DEFINE_integer(
        "tflite_threads", d.tflite_threads, "LiteRT interpreter threads; default: LiteRT's own.", **fv
    )
    flags.DEFINE_enum("data_source", d.data_source, EVAL_SOURCES, "Where the images come from.", **fv)
    flags.DEFINE_string("eval_pattern", d.eval_pattern, "Glob of validation shards inside data_dir.", **fv)
    flags.DEFINE_integer(
        "label_offset", d.label_offset, "Subtracted from stored labels; default: detect.", **fv
    )
    flags.DEFINE_integer("batch_size", d.batch_size, "Images per batch (ten crop: x10 crops).", **fv)
    flags.DEFINE_integer("max_batches", d.max_batches, "Stop after this many batches; default: all.", **fv)
    flags.DEFINE_bool("ten_crop", d.ten_crop, "Also evaluate with ten crops.", **fv)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What `run` evaluates, and on which data."""

    data_dir: str = ""
    checkpoint: Optional[str] = None
    saved_model: Optional[str] = None
    tflite: Optional[str] = None
    tflite_threads: Optional[int] = None
    data_source: str = "tfrecord"
    eval_pattern: str = "validation-*"
    label_offset: Optional[int] = None
    batch_size: int = 100
    max_batches: Optional[int] = None
    ten_crop: bool = True


# ----------------------------------------------------------------------------- evaluation


def evaluate_dataset(logits_fn, dataset, ten_crop=False, max_batches=None):
    """Runs `logits_fn` over (images, labels) batches; returns summarize's dict.

    Args:
      logits_fn: float32 [N, S, S, 3] crops -> logits [N, C].
      dataset: batches of a source's evaluation_dataset(..., ten_crop=ten_crop).
      ten_crop: images are [B, 10, S, S, 3]; their softmax is averaged.
      max_batches: stop after this many batches.
    """

    @tf.function(reduce_retracing=True)
    def batch_sums(images, labels):
        if ten_crop:
            probabilities = metrics.ten_crop_probabilities(logits_fn, images)
        else:
            probabilities = tf.nn.softmax(tf.cast(logits_fn(images), tf.float32))
        return metrics.classification_sums(probabilities, labels)

    sums = np.zeros(4)
    for i, (images, labels) in enumerate(dataset):
        if max_batches is not None and i >= max_batches:
            break
        sums += batch_sums(images, labels).numpy()
    return metrics.summarize(sums)


# ----------------------------------------------------------------------------- models


def load_saved_model(path):
    """(logits_fn, image_size) of an exported SavedModel (a version dir or the base dir)."""
    try:
        path = resolve_saved_model(path)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    loaded = tf.saved_model.load(path)
    # The closure keeps `loaded` (and so its variables) alive as long as the function.
    return (lambda images: loaded.logits(images)), int(loaded.image_size.numpy())


def load_checkpoint(path):
    """(logits_fn, image_size) of a training checkpoint: a model dir, checkpoints dir or prefix."""
    model, _ = restore_model(path)
    return (lambda images: model(images, training=False)), int(model.input_shape[1])


def load_tflite(path, num_threads=None):
    """(logits_fn, image_size) of a LiteRT file: the pipeline's mean-subtracted crops become the
    0-255 RGB pixels the file takes (a uint8 input gets them rounded, as a camera's would be)."""
    from alexnet_tf.serving import litert  # ai-edge-litert only when asked

    try:
        model = litert.LiteRTModel(path, num_threads=num_threads)
    except (ValueError, ImportError) as e:  # not a LiteRT file of this package; ai-edge-litert missing
        raise ConfigError(f"{e} (--tflite={path})") from None
    mean = tf.constant(preprocessing.MEAN_RGB, tf.float32)

    def logits_fn(images):
        pixels = tf.cast(images, tf.float32) + mean
        logits = tf.numpy_function(model, [pixels], tf.float32, stateful=False)
        return tf.ensure_shape(logits, [None, model.num_classes])

    return logits_fn, model.image_size


def model_flag(config):
    """The flag that named the model, for messages: `--checkpoint=...` and so on."""
    for name in ("checkpoint", "saved_model", "tflite"):
        if getattr(config, name):
            return f"--{name}={getattr(config, name)}"
    return "no model"


def run(config):
    """Evaluates a checkpoint, SavedModel or .tflite file.

    Returns:
      {"centre_crop": {...}, "ten_crop": {...}} of metrics.summarize.
    """
    if sum(bool(m) for m in (config.checkpoint, config.saved_model, config.tflite)) != 1:
        raise ConfigError("pass exactly one of --checkpoint, --saved_model and --tflite")
    if not config.data_dir or not tf.io.gfile.isdir(config.data_dir):
        raise ConfigError(f"data dir {config.data_dir!r} does not exist")
    if config.checkpoint:
        logits_fn, image_size = load_checkpoint(config.checkpoint)
    elif config.saved_model:
        logits_fn, image_size = load_saved_model(config.saved_model)
    else:
        logits_fn, image_size = load_tflite(config.tflite, config.tflite_threads)

    source = sources.source_named(
        config.data_source,
        data_dir=config.data_dir,
        eval_pattern=config.eval_pattern,
        label_offset=config.label_offset,
        pixels=PixelSettings(image_size=image_size),
    )

    def dataset(ten_crop):
        try:
            return source.evaluation_dataset(config.batch_size, ten_crop=ten_crop)
        except ValueError as e:  # no matching files, an unknown label offset
            raise ConfigError(str(e)) from None

    results = {"centre_crop": evaluate_dataset(logits_fn, dataset(False), max_batches=config.max_batches)}
    if config.ten_crop:
        results["ten_crop"] = evaluate_dataset(
            logits_fn, dataset(True), ten_crop=True, max_batches=config.max_batches
        )
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = EvalConfig(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(EvalConfig)})
    try:
        results = run(config)
    except ConfigError as e:
        cli.fail(PROGRAM, e)
    except (tf.errors.OpError, ValueError, OSError) as e:
        model = model_flag(config)
        message = cli.error_message(e)
        if message.startswith(records.DAMAGED_SHARD):  # the reader's line names it and what to do
            message = f"{message} ({model}, --data_dir={config.data_dir})"
        else:
            message = (
                f"{type(e).__name__}: {message} ({model}, --data_dir={config.data_dir}): check that the "
                "model loads and that the shards are whole (python -m alexnet_tf.convert --verify), "
                "then run again"
            )
        cli.fail(
            PROGRAM,
            message,
            # A model that does not load or a damaged shard is bad input; running out of memory is not.
            cli.status_of(e) if isinstance(e, tf.errors.OpError) else cli.ExitStatus.BAD_INPUT,
        )
    for name, result in results.items():
        print(
            f"{name.replace('_', ' '):12s} top-1 {100 * result['top1']:6.2f}%  top-5 "
            f"{100 * result['top5']:6.2f}%  loss {result['loss']:.4f}  ({int(result['count'])} images)"
        )


if __name__ == "__main__":
    define_flags()
    cli.run(main, PROGRAM)
