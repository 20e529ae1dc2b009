"""The export command: a checkpoint or .keras file to a TF Serving SavedModel version, ONNX or LiteRT.

    python -m alexnet_tf.export --checkpoint=/runs/alexnet --export_dir=models/alexnet [--version=N]
    python -m alexnet_tf.export --checkpoint=alexnet.keras --export_dir=models/alexnet --format=onnx
    python -m alexnet_tf.export --checkpoint=/runs/alexnet --export_dir=model.tflite --format=tflite \
        [--quantize=none|float16|dynamic_range|int8] [--representative_data=DIR] [--representative_images=N]

writes `export_dir/<version>/` in TF Serving's layout, with the signatures `alexnet_tf.serving.signatures`
describes (serving_default on image bytes, predict_images on pixels, serving_ten_crop), and
the labels.txt beside the checkpoint as the labels asset (docs/serving.md). `--format=tflite`
writes one `.tflite` file (`alexnet_tf.serving.tflite_export`; int8 calibrates on up to
`--representative_images` evaluation crops of `--representative_data`) and prints its path,
size and op list. Each export gets a model card (`alexnet_tf.serving.model_card`) from the
records of the run or import it came from: `MODEL_CARD.md` in the version dir, `X.MODEL_CARD.md`
beside an ONNX or LiteRT file `X.onnx`, `X.tflite`.
"""

import os

from absl import app, flags
import tensorflow as tf

from alexnet_tf import cli
from alexnet_tf.config import CONFIG_FILENAME, ConfigError
from alexnet_tf.data import preprocessing, representative, schema
from alexnet_tf.serving import model_card
from alexnet_tf.serving.saved_model import export_saved_model
from alexnet_tf.serving.signatures import DEFAULT_MAX_BATCH, DEFAULT_MAX_PIXELS
from alexnet_tf.weights.checkpointing import CHECKPOINT_SUBDIR, load_model, read_model_spec

FLAGS = flags.FLAGS
PROGRAM = "alexnet_tf.export"
FORMATS = ("saved_model", "onnx", "tflite")
# The names of tflite_export.QUANTIZATIONS, without importing the converter before it is needed.
QUANTIZATIONS = ("none", "float16", "dynamic_range", "int8")


def define_flags(flag_values=FLAGS):
    """Defines the flags on `flag_values` (only the entry point calls this: importing defines none)."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string(
        "checkpoint",
        None,
        "A .keras file, or a model dir, checkpoints dir or checkpoint prefix written by alexnet_tf.train.",
        **fv,
    )
    flags.DEFINE_string(
        "export_dir",
        None,
        "SavedModel base path (TF Serving's --model_base_path); "
        "with --format=onnx a .onnx file or a folder for model.onnx; "
        "with --format=tflite a .tflite file or a folder for model.tflite.",
        **fv,
    )
    flags.DEFINE_integer("version", None, "Version folder number; default: the next free one.", **fv)
    flags.DEFINE_string(
        "labels",
        None,
        "Labels file (index<TAB>synset<TAB>name lines, or one "
        "label per line); default: labels.txt beside the checkpoint, else class numbers.",
        **fv,
    )
    flags.DEFINE_enum(
        "format",
        "saved_model",
        list(FORMATS),
        "What to write; default: the export_dir's extension (.tflite, .onnx), else saved_model.",
        **fv,
    )
    flags.DEFINE_enum(
        "quantize",
        "none",
        list(QUANTIZATIONS),
        "--format=tflite only: none (float32), float16 (weights), dynamic_range (int8 weights), "
        "int8 (full-integer, calibrated on --representative_data).",
        **fv,
    )
    flags.DEFINE_string(
        "representative_data",
        None,
        "--quantize=int8: a converted data dir whose validation images (train when it has none) "
        "calibrate the activation ranges.",
        **fv,
    )
    flags.DEFINE_integer(
        "representative_images",
        representative.DEFAULT_MAX_IMAGES,
        "--quantize=int8: calibrate on at most this many images.",
        **fv,
    )
    flags.DEFINE_integer(
        "max_pixels",
        DEFAULT_MAX_PIXELS,
        "Serving refuses an image with more "
        "pixels than this (width x height from its header, before decoding).",
        **fv,
    )
    flags.DEFINE_integer(
        "max_batch", DEFAULT_MAX_BATCH, "Serving refuses a request with more images than this.", **fv
    )


# ----------------------------------------------------------------------------- command line


def run(
    checkpoint,
    export_dir,
    version=None,
    labels_path=None,
    export_format="saved_model",
    max_pixels=DEFAULT_MAX_PIXELS,
    max_batch=DEFAULT_MAX_BATCH,
    quantize="none",
    representative_data=None,
    representative_images=representative.DEFAULT_MAX_IMAGES,
    progress=None,
):
    """The command line's work: loads the model and writes a SavedModel version, an ONNX or a .tflite file.

    Returns:
      The written version directory, .onnx or .tflite file.

    Raises:
      ConfigError or ValueError for bad input (the command's status 2), before anything is written.
    """
    check_tflite_options(export_format, quantize, representative_data, representative_images)
    if export_format == "tflite":
        options = (quantize, representative_data, representative_images)
        return export_tflite(checkpoint, export_dir, labels_path, *options, progress)
    if export_format == "onnx":
        from alexnet_tf.serving import onnx_export  # tf2onnx only when asked

        onnx_export.require_tf2onnx()  # before the model is loaded
    model, model_dir = load_model(checkpoint)
    if export_format == "onnx":
        path = export_dir if export_dir.lower().endswith(".onnx") else os.path.join(export_dir, "model.onnx")
        onnx_export.export_onnx(model, path)
        write_card(path, model, checkpoint, model_dir, "ONNX file")
        return path
    labels = _labels(model_dir, labels_path)
    path = export_saved_model(
        model, export_dir, labels=labels, version=version, max_pixels=max_pixels, max_batch=max_batch
    )
    write_card(path, model, checkpoint, model_dir, "SavedModel")
    return path


def write_card(path, model, checkpoint, model_dir, what, this_file=None):
    """The model card of an export at `path`, from the records of the model dir or `.keras` file it is of."""
    origin = f"{what} written by `python -m alexnet_tf.export` from {checkpoint}."
    if checkpoint.endswith(".keras"):  # an imported file has its import record beside it
        return model_card.write_model_card(
            path,
            model,
            imported=model_card.read_import_record(checkpoint),
            origin=origin,
            this_file=this_file,
        )
    spec = read_model_spec(os.path.join(model_dir, CHECKPOINT_SUBDIR))
    return model_card.write_model_card(
        path, model, records_dir=model_dir, spec=spec, origin=origin, this_file=this_file
    )


def tflite_card_lines(path, quantize):
    """What the card of a LiteRT file says about it: its input, its arithmetic, how to measure it."""
    from alexnet_tf.serving import litert

    metadata = litert.read_metadata(path) or {}
    size = metadata.get("image_size", "?")
    dtype = (metadata.get("input") or {}).get("dtype", "uint8" if quantize == "int8" else "float32")
    return [
        f"a LiteRT file, quantize={quantize}: it takes `images` {dtype} [N, {size}, {size}, 3], RGB pixels "
        "in [0, 255] of the evaluation crop (the central square of the image resized to "
        f"{preprocessing.RESIZE_SHORTER}x{preprocessing.RESIZE_SHORTER}, its central {size}x{size} crop); "
        "the mean subtraction and any input conversion happen inside the file: do not subtract the mean",
        "it returns logits (no softmax)"
        + (": int8, dequantise with the output tensor's scale and zero point" if quantize == "int8" else ""),
        "the validation figures below are the Keras model's; this file's own: "
        f"`python -m alexnet_tf.evaluate --tflite={path} --data_dir=...`",
        "its metadata (`alexnet_tf`) and docs/serving.md say the rest",
    ]


def check_tflite_options(export_format, quantize, representative_data, representative_images):
    """ConfigError when the LiteRT flags do not fit the format or each other."""
    if quantize not in QUANTIZATIONS:
        raise ConfigError(f"--quantize={quantize}: choose one of {', '.join(QUANTIZATIONS)}")
    if export_format != "tflite" and (quantize != "none" or representative_data):
        raise ConfigError(
            "--quantize and --representative_data apply to --format=tflite only, "
            f"not --format={export_format}"
        )
    if quantize == "int8" and not representative_data:
        raise ConfigError(
            "--quantize=int8 calibrates on images: pass --representative_data=DIR, a data dir "
            "written by python -m alexnet_tf.convert"
        )
    if representative_data and quantize != "int8":
        raise ConfigError(f"--representative_data is used by --quantize=int8 only, not --quantize={quantize}")
    if representative_images < 1:
        raise ConfigError(f"--representative_images must be at least 1, got {representative_images}")


def export_tflite(checkpoint, export_dir, labels_path, quantize, representative_data, count, progress):
    """--format=tflite: the model (and, for int8, its calibration crops) to one .tflite file."""
    from alexnet_tf.serving import tflite_export  # the converter only when asked

    model, model_dir = load_model(checkpoint)
    labels = _labels(model_dir, labels_path)
    images = None
    if quantize == "int8":
        image_size = int(model.input_shape[1])

        def reading(done, total):
            if progress is not None and (done == total or done % 64 == 0):
                progress(f"reading representative images: {done}/{total}")

        images, split = representative.representative_images(
            representative_data, image_size, count, progress=reading
        )
        if progress is not None:
            note = "" if split == "validation" else " (it has no validation split)"
            progress(f"calibrating on {len(images)} {split} images of {representative_data}{note}")
    path = export_dir if export_dir.lower().endswith(".tflite") else os.path.join(export_dir, "model.tflite")
    if os.path.exists(path) and not os.path.isfile(path):
        raise ConfigError(f"--export_dir={export_dir}: {path} exists and is not a file; pass another path")
    tflite_export.export_tflite(
        model, path, quantize, representative=images, labels=labels, progress=progress
    )
    write_card(
        path,
        model,
        checkpoint,
        model_dir,
        f"LiteRT file (quantize={quantize})",
        this_file=tflite_card_lines(path, quantize),
    )
    return path


def _labels(model_dir, labels_path):
    """--labels; else labels.txt beside the checkpoint; else that of the data dir the run trained on
    (its config.json, as the trainer's own export labels its SavedModel); else None (class numbers)."""
    if labels_path is None and tf.io.gfile.exists(os.path.join(model_dir, schema.LABELS_FILENAME)):
        labels_path = os.path.join(model_dir, schema.LABELS_FILENAME)
    if labels_path is None:
        data_dir = (model_card.read_json(os.path.join(model_dir, CONFIG_FILENAME)) or {}).get("data_dir")
        if data_dir and tf.io.gfile.exists(os.path.join(data_dir, schema.LABELS_FILENAME)):
            labels_path = os.path.join(data_dir, schema.LABELS_FILENAME)
    return schema.read_labels(labels_path) if labels_path else None


def tflite_summary(path):
    """The lines the command prints after a .tflite file: its size, quantisation and ops."""
    from alexnet_tf.serving import litert

    metadata = litert.read_metadata(path) or {}
    size = os.path.getsize(path)
    return [
        f"size: {size} bytes ({size / 2**20:.1f} MiB), quantize={metadata.get('quantize')}, "
        f"variant={metadata.get('variant')}, input {metadata.get('input', {}).get('dtype')} "
        f"[N, {metadata.get('image_size')}, {metadata.get('image_size')}, 3] RGB 0-255",
        f"ops: {litert.op_summary(litert.op_counts(path))}",
    ]


FILE_FORMATS = {".tflite": "tflite", ".onnx": "onnx"}


def format_of(export_dir, export_format=None):
    """--format, or without it the format an export_dir ending in .tflite or .onnx names.

    Raises:
      ConfigError: an explicit --format that a .tflite or .onnx export_dir contradicts.
    """
    named = FILE_FORMATS.get(os.path.splitext(export_dir)[1].lower())
    if export_format is None:
        return named or "saved_model"
    if named and named != export_format:
        raise ConfigError(
            f"--export_dir={export_dir} names a {named} file but --format={export_format}: "
            f"pass --format={named}, or an export dir without that extension"
        )
    return export_format


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.checkpoint or not FLAGS.export_dir:
        raise app.UsageError("--checkpoint and --export_dir are required")
    try:
        export_format = format_of(FLAGS.export_dir, FLAGS.format if FLAGS["format"].present else None)
        path = run(
            FLAGS.checkpoint,
            FLAGS.export_dir,
            FLAGS.version,
            FLAGS.labels,
            export_format,
            FLAGS.max_pixels,
            FLAGS.max_batch,
            FLAGS.quantize,
            FLAGS.representative_data,
            FLAGS.representative_images,
            progress=lambda line: print(line, flush=True),
        )
    except (ConfigError, ValueError, OSError) as e:
        cli.fail(PROGRAM, e)
    print(path)
    if export_format == "tflite":
        print("\n".join(tflite_summary(path)))


if __name__ == "__main__":
    define_flags()
    cli.run(main, PROGRAM)
