"""The export command: a checkpoint or .keras file to a TF Serving SavedModel version or ONNX.

    python -m alexnet_tf.export --checkpoint=/runs/alexnet --export_dir=models/alexnet [--version=N]
    python -m alexnet_tf.export --checkpoint=alexnet.keras --export_dir=models/alexnet --format=onnx

writes `export_dir/<version>/` in TF Serving's layout, with the signatures `alexnet_tf.serving.signatures`
describes (serving_default on image bytes, predict_images on pixels, serving_ten_crop), and
the labels.txt beside the checkpoint as the labels asset (docs/serving.md). Each export gets a
model card (`alexnet_tf.serving.model_card`) from the records of the run or import it came from:
`MODEL_CARD.md` in the version dir, `X.MODEL_CARD.md` beside an ONNX file `X.onnx`.
"""

import os

from absl import app, flags
import tensorflow as tf

from alexnet_tf import cli
from alexnet_tf.config import ConfigError
from alexnet_tf.data import schema
from alexnet_tf.serving import model_card
from alexnet_tf.serving.saved_model import export_saved_model
from alexnet_tf.serving.signatures import DEFAULT_MAX_BATCH, DEFAULT_MAX_PIXELS
from alexnet_tf.weights.checkpointing import CHECKPOINT_SUBDIR, load_model, read_model_spec

FLAGS = flags.FLAGS
PROGRAM = "alexnet_tf.export"


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
        "with --format=onnx a .onnx file or a folder for model.onnx.",
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
    flags.DEFINE_enum("format", "saved_model", ["saved_model", "onnx"], "What to write.", **fv)
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
):
    """The command line's work: loads the model and writes a SavedModel version or an ONNX file.

    Returns:
      The written version directory or .onnx file.
    """
    if export_format == "onnx":
        from alexnet_tf.serving import onnx_export  # tf2onnx only when asked

        onnx_export.require_tf2onnx()  # before the model is loaded
    model, model_dir = load_model(checkpoint)
    if export_format == "onnx":
        path = export_dir if export_dir.endswith(".onnx") else os.path.join(export_dir, "model.onnx")
        onnx_export.export_onnx(model, path)
        write_card(path, model, checkpoint, model_dir, "ONNX file")
        return path
    if labels_path is None and tf.io.gfile.exists(os.path.join(model_dir, schema.LABELS_FILENAME)):
        labels_path = os.path.join(model_dir, schema.LABELS_FILENAME)
    labels = schema.read_labels(labels_path) if labels_path else None
    path = export_saved_model(
        model, export_dir, labels=labels, version=version, max_pixels=max_pixels, max_batch=max_batch
    )
    write_card(path, model, checkpoint, model_dir, "SavedModel")
    return path


def write_card(path, model, checkpoint, model_dir, what):
    """The model card of an export at `path`, from the records of the model dir or `.keras` file it is of."""
    origin = f"{what} written by `python -m alexnet_tf.export` from {checkpoint}."
    if checkpoint.endswith(".keras"):  # an imported file has its import record beside it
        return model_card.write_model_card(
            path, model, imported=model_card.read_import_record(checkpoint), origin=origin
        )
    spec = read_model_spec(os.path.join(model_dir, CHECKPOINT_SUBDIR))
    return model_card.write_model_card(path, model, records_dir=model_dir, spec=spec, origin=origin)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.checkpoint or not FLAGS.export_dir:
        raise app.UsageError("--checkpoint and --export_dir are required")
    try:
        path = run(
            FLAGS.checkpoint,
            FLAGS.export_dir,
            FLAGS.version,
            FLAGS.labels,
            FLAGS.format,
            FLAGS.max_pixels,
            FLAGS.max_batch,
        )
    except (ConfigError, ValueError, OSError) as e:
        cli.fail(PROGRAM, e)
    print(path)


if __name__ == "__main__":
    define_flags()
    cli.run(main, PROGRAM)
