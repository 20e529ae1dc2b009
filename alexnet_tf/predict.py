"""Owns local prediction: top-5 labels of image files from an exported SavedModel.

    python -m alexnet_tf.predict --saved_model=models/alexnet/1 image.jpg [more.jpg ...] [--json]
    python -m alexnet_tf.predict --tflite=model.tflite image.jpg [more.jpg ...] [--json]

runs each file through the SavedModel's `serving_default` signature (the bytes as they are
on disk, so preprocessing is the export's; `--signature=predict_images` sends the decoded
pixels instead), or through a LiteRT file of `alexnet_tf.export --format=tflite` (decoded and
centre-cropped here as the SavedModel does, the crop its metadata records, then the LiteRT
interpreter), and prints its top-5 labels and scores; with
--json one JSON object per file. A file that cannot be read or decoded is reported on stderr
by name and the others go on; the exit status is 1 if any failed. A SavedModel that cannot be
loaded ends the program with one `alexnet_tf.predict: error: ...` line and status 2.
`serving.results.format_result` is shared with `alexnet_tf.client`, so both print the same thing.
"""

import sys

from absl import app, flags

from alexnet_tf import cli
from alexnet_tf.serving.results import format_result, top_k
from alexnet_tf.serving.saved_model import resolve_saved_model

FLAGS = flags.FLAGS
PROGRAM = "alexnet_tf.predict"
TOP_K = 5  # as the SavedModel's signatures


def define_flags(flag_values=FLAGS):
    """Defines the flags on `flag_values` (only the entry point calls this: importing defines none)."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string(
        "saved_model", None, "SavedModel version dir, or the base dir for its newest version.", **fv
    )
    flags.DEFINE_string("tflite", None, "A .tflite file of alexnet_tf.export --format=tflite, instead.", **fv)
    flags.DEFINE_integer("tflite_threads", None, "LiteRT interpreter threads; default: LiteRT's own.", **fv)
    flags.DEFINE_string("signature", "serving_default", "Image-bytes signature to call.", **fv)
    flags.DEFINE_bool("json", False, "Print one JSON object per file.", **fv)


def run(saved_model, files, as_json=False, signature="serving_default", out=None, err=None):
    """Predicts every file and prints the results; returns how many files failed.

    A bytes signature (`serving_default`, `serving_ten_crop`) gets each file's bytes as they
    are; a pixel signature (`predict_images`) gets them decoded to [1, H, W, 3] pixels.

    Raises:
      FileNotFoundError: no SavedModel at `saved_model`.
      KeyError: the SavedModel has no signature `signature`.
      (tf.errors.OpError, ValueError, OSError): the SavedModel cannot be loaded.
    """
    out, err = out or sys.stdout, err or sys.stderr
    import tensorflow as tf  # keeps --help fast

    signatures = tf.saved_model.load(resolve_saved_model(saved_model)).signatures
    if signature not in signatures:
        raise KeyError(f"no signature {signature!r}; it has {', '.join(sorted(signatures))}")
    serve = signatures[signature]
    ((input_name, spec),) = serve.structured_input_signature[1].items()
    failures = 0
    for name in files:
        try:
            with open(name, "rb") as f:
                encoded = f.read()
            if spec.dtype == tf.string:
                inputs = tf.constant([encoded])
            else:
                pixels = tf.io.decode_image(encoded, channels=3, expand_animations=False)
                inputs = tf.cast(pixels, spec.dtype)[tf.newaxis]
            outputs = serve(**{input_name: inputs})
            print(format_result(name, top_k({k: v.numpy() for k, v in outputs.items()}), as_json), file=out)
        except (OSError, ValueError, tf.errors.OpError) as e:  # this file only: the others go on
            failures += 1
            print(cli.error_line(PROGRAM, name, getattr(e, "strerror", None) or e), file=err)
    return failures


def run_tflite(path, files, as_json=False, num_threads=None, out=None, err=None):
    """`run` for a LiteRT file: each image decoded, centre-cropped as the export recorded, then the
    interpreter; returns how many files failed.

    Raises:
      ValueError: no file at `path`, or not a LiteRT file of this package.
      ImportError: ai-edge-litert is not installed.
    """
    out, err = out or sys.stdout, err or sys.stderr
    import numpy as np
    import tensorflow as tf

    from alexnet_tf.data import preprocessing
    from alexnet_tf.serving import litert

    model = litert.LiteRTModel(path, num_threads=num_threads)
    recipe = (model.metadata.get("input") or {}).get("crop") or {}
    resize_shorter = int(recipe.get("resize_shorter", preprocessing.RESIZE_SHORTER))
    labels = model.labels or [str(c) for c in range(model.num_classes)]
    k = min(TOP_K, model.num_classes)
    failures = 0
    for name in files:
        try:
            with open(name, "rb") as f:
                image = preprocessing.decode_image(tf.constant(f.read()))
            crop = preprocessing.center_crop(image, model.image_size, resize_shorter)
            logits = model(crop.numpy()[np.newaxis])[0]
            probabilities = tf.nn.softmax(tf.constant(logits, tf.float32)).numpy()
            classes = np.argsort(-probabilities, kind="stable")[:k]
            predictions = [(labels[c], float(probabilities[c]), int(c)) for c in classes]
            print(format_result(name, predictions, as_json), file=out)
        except (OSError, ValueError, tf.errors.OpError) as e:  # this file only: the others go on
            failures += 1
            print(cli.error_line(PROGRAM, name, getattr(e, "strerror", None) or e), file=err)
    return failures


def main(argv):
    if bool(FLAGS.saved_model) == bool(FLAGS.tflite) or len(argv) < 2:
        raise app.UsageError(
            "usage: python -m alexnet_tf.predict --saved_model=DIR|--tflite=FILE image [image ...]"
        )
    import tensorflow as tf

    if FLAGS.tflite:
        try:
            failures = run_tflite(FLAGS.tflite, argv[1:], FLAGS.json, FLAGS.tflite_threads)
        except ImportError as e:
            fail(f"{e} (--tflite={FLAGS.tflite})", "install it, then run again")
        except ValueError as e:  # its message says what to do
            cli.fail(
                PROGRAM, f"cannot load the LiteRT file (--tflite={FLAGS.tflite}): {cli.error_message(e)}"
            )
        return cli.ExitStatus.FAILED if failures else cli.ExitStatus.SUCCESS
    where = FLAGS.saved_model
    try:
        failures = run(FLAGS.saved_model, argv[1:], FLAGS.json, FLAGS.signature)
    except FileNotFoundError as e:
        fail(f"{e} ({where})", "pass --saved_model=<export dir or version dir> written by alexnet_tf.export")
    except KeyError as e:
        fail(f"{e.args[0]} ({where})", "pass one of them as --signature")
    except (tf.errors.OpError, ValueError, OSError) as e:
        fail(
            f"cannot load the SavedModel: {cli.error_message(e)} ({where})",
            "check the path, or export the model again with python -m alexnet_tf.export",
        )
    return cli.ExitStatus.FAILED if failures else cli.ExitStatus.SUCCESS


def fail(what, todo):
    """Ends with one line `alexnet_tf.predict: error: <what> (<input>): <what to do>`, status 2."""
    cli.fail(PROGRAM, f"{what}: {todo}")


if __name__ == "__main__":
    define_flags()
    cli.run(main, PROGRAM)
