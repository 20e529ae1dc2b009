"""Owns evaluation: top-1/top-5 with the centre crop and the paper's ten crops, and their metrics.

    python -m alexnet_tf.evaluate --data_dir=/data/imagenet --checkpoint=/runs/alexnet
    python -m alexnet_tf.evaluate --data_dir=/data/imagenet --saved_model=/runs/alexnet/export
    python -m alexnet_tf.evaluate --data_dir=/data/imagenet --checkpoint=/runs/alexnet --corruptions=all
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

With --corruptions (all, or names of alexnet_tf.data.corruptions.CORRUPTIONS) it runs the
ImageNet-C benchmark instead: the centre crop's top-1 error, clean and under each corruption
at each of --severities, the corruption errors (CE) and mCE, normalised by AlexNet's published
errors when the data is ImageNet; --report_dir (default: the model dir of --checkpoint) gets
corruptions.json and corruptions.png (needs Pillow: the `figures` extra).
"""

import dataclasses
import json
import os
import time
from typing import Optional

from absl import app, flags
import numpy as np
import tensorflow as tf

from alexnet_tf import cli, metrics
from alexnet_tf.config import ConfigError
from alexnet_tf.data import corruptions, preprocessing, records, schema, sources
from alexnet_tf.data.pipelines import PixelSettings
from alexnet_tf.serving import model_card
from alexnet_tf.serving.saved_model import resolve_saved_model
from alexnet_tf.weights.checkpointing import CHECKPOINT_SUBDIR, read_model_spec, restore_model

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
    flags.DEFINE_string(
        "corruptions",
        d.corruptions,
        f"Run the ImageNet-C corruption benchmark: all, or some of {','.join(corruptions.CORRUPTIONS)}.",
        **fv,
    )
    flags.DEFINE_string("severities", d.severities, "Corruption severities (1-5), comma-separated.", **fv)
    flags.DEFINE_string(
        "report_dir",
        d.report_dir,
        "Where corruptions.json/.png go; default: the checkpoint's model dir.",
        **fv,
    )


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
    corruptions: Optional[str] = None
    severities: str = "1,2,3,4,5"
    report_dir: Optional[str] = None


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

    def logits_fn(images):
        return model(images, training=False)

    logits_fn.keras_model = model  # for the model card that run_corruptions rewrites
    return logits_fn, int(model.input_shape[1])


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


def _check_inputs(config):
    if sum(bool(m) for m in (config.checkpoint, config.saved_model, config.tflite)) != 1:
        raise ConfigError("pass exactly one of --checkpoint, --saved_model and --tflite")
    if not config.data_dir or not tf.io.gfile.isdir(config.data_dir):
        raise ConfigError(f"data dir {config.data_dir!r} does not exist")


def _load(config):
    """(logits_fn, image_size, source) of a config: the model and the data source it reads."""
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
    return logits_fn, image_size, source


def _evaluation_dataset(source, config, ten_crop=False, corruption=None):
    try:
        return source.evaluation_dataset(config.batch_size, ten_crop=ten_crop, corruption=corruption)
    except ValueError as e:  # no matching files, an unknown label offset
        raise ConfigError(str(e)) from None


def run(config):
    """Evaluates a checkpoint, SavedModel or .tflite file; returns {"centre_crop": ..., "ten_crop": ...}."""
    _check_inputs(config)
    logits_fn, _, source = _load(config)

    def dataset(ten_crop):
        return _evaluation_dataset(source, config, ten_crop)

    results = {"centre_crop": evaluate_dataset(logits_fn, dataset(False), max_batches=config.max_batches)}
    if config.ten_crop:
        results["ten_crop"] = evaluate_dataset(
            logits_fn, dataset(True), ten_crop=True, max_batches=config.max_batches
        )
    return results


# ----------------------------------------------------------------------------- corruption benchmark

REPORT_JSON = model_card.CORRUPTIONS_FILENAME
REPORT_PNG = "corruptions.png"


def parse_corruptions(names, severities):
    """(corruption names, severities) of --corruptions and --severities; ConfigError when one is bad."""
    names = [n.strip() for n in (names or "").split(",") if n.strip()]
    if names == ["all"]:
        names = list(corruptions.CORRUPTIONS)
    try:
        levels = [int(s) for s in str(severities).split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--severities={severities}: expected comma-separated integers 1-5") from None
    try:
        corruptions.check(names, levels)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if len(set(names)) != len(names) or len(set(levels)) != len(levels):
        raise ConfigError("--corruptions and --severities name each item once")
    return names, sorted(levels)


def default_report_dir(checkpoint):
    """The model dir `checkpoint` names (a dir holding checkpoints/), else None."""
    if checkpoint and tf.io.gfile.isdir(os.path.join(checkpoint, CHECKPOINT_SUBDIR)):
        return checkpoint
    return None


def data_identity(config, count):
    """What the benchmark ran on: source, dir, classes, whether it is ImageNet, the manifest's fingerprint."""
    identity = {"source": config.data_source, "data_dir": config.data_dir, "images": int(count)}
    if config.data_source == "tfds":
        identity.update(eval_split="validation", num_classes=1000, imagenet=True, fingerprint=None)
        return identity
    synsets = schema.data_synsets(config.data_dir)
    try:
        fingerprint = schema.read_manifest(config.data_dir).get("fingerprint")
    except ValueError:
        fingerprint = None
    identity.update(
        eval_pattern=config.eval_pattern,
        num_classes=len(synsets) if synsets else None,
        imagenet=schema.is_imagenet(synsets),
        fingerprint=fingerprint,
    )
    return identity


def cores():
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _pillow():
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise ConfigError(
            'the corruption report draws corruptions.png with Pillow: pip install "alexnet_tf[figures]"'
        ) from None
    return Image, ImageDraw, ImageFont


def run_corruptions(config, progress=None):
    """The ImageNet-C benchmark of a checkpoint or SavedModel on a data dir; writes and returns the report.

    Every image is scored clean (severity 0: the plain centre-crop evaluation, so its error is
    `run`'s exactly) and under each corruption at each severity (`corruptions.benchmark_crop`
    of its centre crop, seeded by its place in the evaluation order). `progress` gets one line
    per corruption. Returns the dict written to <report_dir>/corruptions.json.
    """
    _check_inputs(config)
    names, levels = parse_corruptions(config.corruptions, config.severities)
    if config.data_source not in EVAL_SOURCES:
        raise ConfigError(f"--corruptions needs images: --data_source={config.data_source} has none")
    report_dir = config.report_dir or default_report_dir(config.checkpoint)
    if not report_dir:
        raise ConfigError("pass --report_dir (a --checkpoint that is a model dir is its default)")
    cli.check_writable(report_dir, what=f"report dir {report_dir} is not writable")
    _pillow()
    logits_fn, image_size, source = _load(config)
    say = progress or (lambda line: None)

    clean = evaluate_dataset(logits_fn, _evaluation_dataset(source, config), max_batches=config.max_batches)
    say(f"clean              top-1 error {100 * (1 - clean['top1']):6.2f}%  ({int(clean['count'])} images)")

    @tf.function(reduce_retracing=True)
    def severity_sums(images, labels):  # images [B, severities, S, S, 3] -> [severities, EVAL_SUMS]
        return tf.stack(
            [
                metrics.classification_sums(
                    tf.nn.softmax(tf.cast(logits_fn(images[:, k]), tf.float32)), labels
                )
                for k in range(len(levels))
            ]
        )

    results, errors, total_images, total_seconds = [], {}, 0, 0.0
    for name in names:
        # One pass over the data per corruption: each image is read once and corrupted at every severity.
        def corrupt(crop, index, name=name):
            return tf.stack([corruptions.benchmark_crop(crop, name, s, index) for s in levels])

        start = time.perf_counter()
        sums = np.zeros((len(levels), len(metrics.EVAL_SUMS)))
        for i, (images, labels) in enumerate(_evaluation_dataset(source, config, corruption=corrupt)):
            if config.max_batches is not None and i >= config.max_batches:
                break
            sums += severity_sums(images, labels).numpy()
        seconds = time.perf_counter() - start
        errors[name] = {}
        for severity, row in zip(levels, sums):
            result = metrics.summarize(row)
            errors[name][severity] = 1 - result["top1"]
            results.append(
                {
                    "corruption": name,
                    "severity": severity,
                    "top1_error": 1 - result["top1"],
                    "top5_error": 1 - result["top5"],
                    "loss": result["loss"],
                    "count": int(result["count"]),
                }
            )
        images = int(sums[:, -1].sum())
        total_images, total_seconds = total_images + images, total_seconds + seconds
        rate = images / max(seconds, 1e-9)
        say(
            f"{name:18s} top-1 error "
            + " ".join(f"{100 * errors[name][s]:6.2f}%" for s in levels)
            + f"  ({rate:.1f} images/s, {rate / cores():.1f} per core)"
        )
    data = data_identity(config, clean["count"])
    scores = corruptions.corruption_scores(errors, 1 - clean["top1"], normalise=data["imagenet"])
    rate = total_images / max(total_seconds, 1e-9)
    notes = []
    if scores["normalised"]:
        notes.append(
            "CE and mCE are normalised by AlexNet's published ImageNet-C errors (100 = AlexNet's robustness)"
        )
    else:
        notes.append(
            "the data is not ImageNet: CE is the plain mean top-1 error over the severities and relative CE "
            "its increase over the clean error, not normalised by AlexNet's errors"
        )
    if levels != list(corruptions.SEVERITIES):
        notes.append(
            "not all five severities: the CEs are means over the severities run, not the benchmark's"
        )
    if "frost" in names:
        notes.append(corruptions.FROST_NOTE)
    report = {
        "model": {
            "checkpoint": config.checkpoint,
            "saved_model": config.saved_model,
            "image_size": image_size,
        },
        "data": data,
        "seed": corruptions.DEFAULT_SEED,
        "saved_jpeg_quality": corruptions.SAVED_JPEG_QUALITY,
        "severities": levels,
        "clean": {
            "severity": 0,
            "top1_error": 1 - clean["top1"],
            "top5_error": 1 - clean["top5"],
            "loss": clean["loss"],
            "count": int(clean["count"]),
        },
        "results": results,
        **scores,
        "throughput": {
            "images_per_second": rate,
            "cores": cores(),
            "images_per_second_per_core": rate / cores(),
        },
        "notes": notes,
    }
    with tf.io.gfile.GFile(os.path.join(report_dir, REPORT_JSON), "w") as f:
        json.dump(report, f, indent=1)
    draw_report(report).save(os.path.join(report_dir, REPORT_PNG))
    say(report_table(report))
    say(f"report: {os.path.join(report_dir, REPORT_JSON)}, {os.path.join(report_dir, REPORT_PNG)}")
    if config.checkpoint and report_dir == default_report_dir(config.checkpoint):
        # The model dir's card shows its corruption results (model_card reads corruptions.json).
        card = model_card.write_model_card(
            report_dir,
            logits_fn.keras_model,
            records_dir=report_dir,
            spec=read_model_spec(os.path.join(report_dir, CHECKPOINT_SUBDIR)),
            origin=f"Model dir of a `python -m alexnet_tf.train` run: {report_dir}; its corruption "
            "results from `python -m alexnet_tf.evaluate --corruptions`.",
        )
        say(f"model card with the corruption results: {card}")
    return report


def report_table(report):
    """The report as a text table: error (%) per corruption and severity, CE, and the mCE lines."""
    levels = report["severities"]
    unit = "CE" if report["normalised"] else "mean err"
    lines = [f"{'corruption':18s}" + "".join(f"{'s' + str(s):>8s}" for s in levels) + f"{unit:>10s}"]
    lines.append(f"{'clean':18s}{100 * report['clean']['top1_error']:8.2f}")
    by_name = {}
    for row in report["results"]:
        by_name.setdefault(row["corruption"], {})[row["severity"]] = row["top1_error"]
    for name, errors in by_name.items():
        lines.append(
            f"{name:18s}"
            + "".join(f"{100 * errors[s]:8.2f}" for s in levels)
            + f"{100 * report['ce'][name]:10.2f}"
        )
    what = "normalised by AlexNet" if report["normalised"] else "not normalised: the data is not ImageNet"
    lines.append(f"mCE {100 * report['mce']:.2f}, relative mCE {100 * report['relative_mce']:.2f} ({what})")
    throughput = report["throughput"]
    lines.append(
        f"{throughput['images_per_second']:.1f} corrupted images/s on {throughput['cores']} cores "
        f"({throughput['images_per_second_per_core']:.1f} per core)"
    )
    lines.extend(f"note: {note}" for note in report["notes"])
    return "\n".join(lines)


# Fifteen colours apart: noise reds, blur blues, weather greens, digital greys and browns.
_COLOURS = (
    (214, 39, 40), (255, 127, 14), (188, 75, 120),
    (31, 119, 180), (23, 190, 207), (70, 70, 200), (120, 160, 230),
    (44, 160, 44), (140, 200, 80), (0, 110, 90), (200, 180, 0),
    (90, 90, 90), (140, 86, 75), (227, 119, 194), (0, 0, 0),
)  # fmt: skip


def draw_report(report, width=760, height=460):
    """A PIL image: top-1 error (%) against severity (0 = clean), one line per corruption, and a legend."""
    image_module, draw_module, font_module = _pillow()
    image = image_module.new("RGB", (width, height), (255, 255, 255))
    draw, font = draw_module.Draw(image), font_module.load_default()
    left, top, right, bottom = 50, 30, width - 190, height - 40
    levels = [0] + report["severities"]

    def point(severity, error):
        x = left + (right - left) * severity / max(levels[-1], 1)
        return x, bottom - (bottom - top) * error

    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    for tick in range(0, 101, 20):
        y = point(0, tick / 100)[1]
        draw.line([left - 4, y, right, y], fill=(225, 225, 225) if 0 < tick < 100 else (0, 0, 0))
        draw.text((left - 30, y - 6), f"{tick}%", fill=(0, 0, 0), font=font)
    for severity in levels:
        x = point(severity, 0)[0]
        label = "clean" if severity == 0 else str(severity)
        draw.text((x - 3 * len(label), bottom + 6), label, fill=(0, 0, 0), font=font)
    draw.text((left, 8), "top-1 error against corruption severity", fill=(0, 0, 0), font=font)
    draw.text(((left + right) // 2 - 20, bottom + 22), "severity", fill=(0, 0, 0), font=font)
    by_name = {}
    for row in report["results"]:
        by_name.setdefault(row["corruption"], {})[row["severity"]] = row["top1_error"]
    clean = report["clean"]["top1_error"]
    for i, (name, errors) in enumerate(by_name.items()):
        colour = _COLOURS[corruptions.CORRUPTIONS.index(name) % len(_COLOURS)]
        points = [point(0, clean)] + [point(s, errors[s]) for s in report["severities"]]
        draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        y = top + 16 * i
        draw.line([right + 15, y + 6, right + 35, y + 6], fill=colour, width=3)
        draw.text((right + 40, y), name, fill=(0, 0, 0), font=font)
    return image


# Flags the corruption benchmark cannot honour: it scores the centre crop of the model evaluate loads.
NOT_WITH_CORRUPTIONS = ("ten_crop", "tflite")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = EvalConfig(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(EvalConfig)})
    try:
        if config.corruptions:
            clashing = [f"--{name}" for name in NOT_WITH_CORRUPTIONS if name in FLAGS and FLAGS[name].present]
            if clashing:
                raise ConfigError(
                    f"--corruptions does not combine with {', '.join(clashing)}: the benchmark scores "
                    "the centre crop of a checkpoint or SavedModel"
                )
            run_corruptions(config, progress=print)
            return
        if FLAGS["severities"].present or config.report_dir:
            raise ConfigError("--severities and --report_dir go with --corruptions")
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
