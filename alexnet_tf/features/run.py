"""The features command: a layer's activations, nearest neighbours, top-5 and Grad-CAM pictures.

    python -m alexnet_tf.features --model=model.keras --layer=fc7 --output=features.npz a.jpg photos/
    python -m alexnet_tf.features --model=/runs/alexnet --data_dir=/data/imagenet --split=validation \\
        --output=features.npz
    python -m alexnet_tf.features --model=model.keras --neighbours=query1.jpg,query2.jpg \\
        --gallery=photos/ --output=neighbours.png
    python -m alexnet_tf.features --model=model.keras --predictions --output=predictions.png a.jpg b.jpg
    python -m alexnet_tf.features --model=/runs/alexnet --gradcam --data_dir=/data/imagenet \\
        --output=gradcam.png

`--model` is a `.keras` file, a training checkpoint (model dir, checkpoints dir or prefix) or an
exported SavedModel (version dir or base dir; its `features` signature gives fc7 only).
Images are image files and folders (searched recursively; as for the converter, content
decides, not names: JPEG, PNG, GIF, BMP and WebP are read, other files named and skipped,
hidden files left out), or the TFRecord shards `<split>-*` of a converted data dir. Every image
goes through the centre crop of evaluation and serving (`preprocessing.preprocess_for_eval` on
`preprocessing.decode_image`; `alexnet_tf.data.pipelines.evaluation_dataset` computes the same
crops), in batches, with a progress line on stderr.

- features: `--output=*.npz` holds `features` (float32 [N, ...], the layer's output),
  `files` (file paths, or the records' `image/filename`), `labels` (int32 [N], 0-based, -1
  when unknown), `label_names` (the data dir's class names, if any), `layer` and `model`;
- `--neighbours=Q1,Q2,... --gallery=DIR`: for each query image the `--num_neighbours` (6)
  gallery images nearest by the Euclidean distance of fc7 features, drawn one row per query
  (the paper's Figure 4, right); DIR is a folder of images or a converted data dir;
- `--predictions`: the images with their top-5 labels as bars, the true label in red when a
  data dir knows it (Figure 4, left), at most `--max_images` (default 16) of them. Class
  names: `--labels`, else labels.txt beside the model, else the data dir's when it has as
  many classes as the model, else class numbers (a SavedModel has its own);
- `--gradcam`: each image beside its Grad-CAM heat map (`alexnet_tf.explain.grad_cam`) laid
  over it, with its top-5 labels, the class the map explains in orange: `--layer` picks the
  convolution (default conv5), `--class_index` the class (default: each image's top-1); at
  most `--max_images` (default 16) images. A .keras file or checkpoint only: a SavedModel has
  no gradients.

`--max_images` (at least 1) also bounds the features file and the neighbours' gallery.
`--layer` is fc7 for features by default.

An image that cannot be read or decoded, and the records a corrupt, truncated or missing shard
lost (counted from manifest.json), are named on stderr and skipped; the output is written for
the others, a last line says how many images went in and how many were skipped, and the exit
status is 1. Bad flags, a model or data dir that cannot be read end with one
`alexnet_tf.features: error: ...` line and status 2.
"""

import sys

from absl import flags
import tensorflow as tf

from alexnet_tf import cli, explain
from alexnet_tf.cli import error_message
from alexnet_tf.features import figures
from alexnet_tf.features.models import SavedModel, load
from alexnet_tf.features.outputs import (
    features_file,
    gradcam_picture,
    neighbours_picture,
    predictions_picture,
)
from alexnet_tf.features.sources import (
    PROGRAM,
    UsageError,
    data_dir_source,
    files_source,
    gallery_source,
)
from alexnet_tf.serving import embedding

FLAGS = flags.FLAGS
DEFAULT_PICTURE_IMAGES = 16


def define_flags(flag_values=FLAGS):
    """Defines the flags on `flag_values` (only the entry point calls this: importing defines none)."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string(
        "model", None, "A .keras file, a training checkpoint or model dir, or an exported SavedModel.", **fv
    )
    flags.DEFINE_string(
        "layer",
        None,
        "The layer whose output is the feature (any layer name; default fc7), or the convolution "
        f"--gradcam explains (default {explain.DEFAULT_LAYER}).",
        **fv,
    )
    flags.DEFINE_string("data_dir", None, "A converted data dir: read its <split>-* TFRecord shards.", **fv)
    flags.DEFINE_string("split", "validation", "Shard prefix in --data_dir and a data-dir --gallery.", **fv)
    flags.DEFINE_integer(
        "label_offset", None, "Subtracted from stored labels; default: from the data dir.", **fv
    )
    flags.DEFINE_string("output", None, "features.npz, or a .png for --neighbours/--predictions.", **fv)
    flags.DEFINE_integer("batch_size", 64, "Images per forward pass.", **fv)
    flags.DEFINE_integer(
        "max_images",
        None,
        f"Read at most this many images (of the gallery with --neighbours); default: all, "
        f"{DEFAULT_PICTURE_IMAGES} with --predictions.",
        **fv,
    )
    flags.DEFINE_list("neighbours", None, "Query images (files or folders) for the neighbours picture.", **fv)
    flags.DEFINE_string("gallery", None, "Folder of images, or converted data dir, to search.", **fv)
    flags.DEFINE_integer("num_neighbours", 6, "Nearest gallery images shown per query.", **fv)
    flags.DEFINE_bool("predictions", False, "Draw the images with their top-5 predictions.", **fv)
    flags.DEFINE_bool(
        "gradcam", False, "Draw each image beside its Grad-CAM heat map, with its top-5 labels.", **fv
    )
    flags.DEFINE_integer(
        "class_index", None, "The class --gradcam explains (0-based); default: each image's top-1.", **fv
    )
    flags.DEFINE_string(
        "labels",
        None,
        "Class names of the model (labels.txt); default: labels.txt beside it, else the data's names "
        "when as many, else numbers (either says so on stderr).",
        **fv,
    )
    flags.DEFINE_integer("thumbnail_size", 128, "Side of each image in the pictures, in pixels.", **fv)


# ----------------------------------------------------------------------------- command line


def run(argv_images, config, model=None):
    """The command's work; returns (what was written, [(name, reason)] of skipped images).

    Args:
      argv_images: image files and folders from the command line.
      config: the flags as an object with attributes (FLAGS, or any namespace).
      model: the --model already loaded (`load(config.model)`), for callers that hold one.
    """
    output = config.output
    if not config.model or not output:
        raise UsageError("--model and --output are required")
    picture = bool(config.neighbours) or config.predictions or config.gradcam
    if picture and not output.lower().endswith(".png"):
        raise UsageError(f"--output={output}: the picture is a PNG file; name it *.png")
    if not picture and not output.lower().endswith(".npz"):
        raise UsageError(f"--output={output}: features are written as NumPy .npz; name it *.npz")
    if config.predictions + config.gradcam + bool(config.neighbours) > 1:
        raise UsageError("--neighbours, --predictions and --gradcam draw different pictures: pass one")
    if config.class_index is not None and not config.gradcam:
        raise UsageError("--class_index picks the class --gradcam explains: pass --gradcam")
    if config.class_index is not None and config.class_index < 0:
        raise UsageError(f"--class_index={config.class_index}: pass a class number of at least 0")
    if config.neighbours and (argv_images or config.data_dir):
        raise UsageError("--neighbours takes its images from --neighbours and --gallery only")
    if config.neighbours and not config.gallery:
        raise UsageError("--neighbours needs --gallery=DIR (a folder of images or a data dir)")
    if not config.neighbours and bool(argv_images) == bool(config.data_dir):
        raise UsageError("give image files/folders or --data_dir (one of them)")
    for flag, least in (("batch_size", 1), ("num_neighbours", 1), ("thumbnail_size", 8), ("max_images", 1)):
        value = getattr(config, flag)
        if value is not None and value < least:
            unset = "; leave it out to read every image" if flag == "max_images" else ""
            raise UsageError(f"--{flag}={value}: pass a number of at least {least}{unset}")
    if picture:
        try:
            figures.pillow()
        except ImportError as e:
            raise UsageError(str(e)) from None

    max_images = config.max_images
    if (config.predictions or config.gradcam) and max_images is None:
        max_images = DEFAULT_PICTURE_IMAGES
    # The inputs are checked before the model is loaded: that takes seconds.
    if config.neighbours:
        queries = files_source(config.neighbours, "--neighbours")
        source = gallery_source(config.gallery, config.split, config.label_offset, max_images)
    elif config.data_dir:
        source = data_dir_source(config.data_dir, config.split, config.label_offset, max_images)
    else:
        source = files_source(argv_images, "images", max_images)

    if model is None:
        model = load(config.model, config.labels)
    if config.gradcam:
        return _gradcam(config, model, source)
    layer = (config.layer or embedding.FEATURES_LAYER) if not picture else None
    names = model.layer_names()
    wanted = "fc7" if config.neighbours else layer
    if wanted is not None and wanted not in names:
        if isinstance(model, SavedModel):
            raise UsageError(
                f"--layer={wanted}: a SavedModel gives only {names or 'no features (export it again)'}; "
                "pass the .keras file or checkpoint it was exported from for other layers"
            )
        raise UsageError(
            f"--layer={wanted}: the model has no such layer; pass one of its layers: {', '.join(names)}"
        )

    if config.neighbours:
        written = neighbours_picture(
            model, queries, source, output, config.num_neighbours, config.batch_size, config.thumbnail_size
        )
        sources = [queries, source]
        gallery, asked = _count(source.used, "gallery image"), _count(queries.used, "query", "queries")
        what = f"the nearest of {gallery} to {asked}"
    elif config.predictions:
        written = predictions_picture(model, source, output, config.batch_size, config.thumbnail_size)
        sources, what = [source], f"the top-5 predictions of {_count(source.used, 'image')}"
    else:
        written = features_file(model, source, output, layer, config.batch_size, config.model)
        sources, what = [source], f"the {layer} features of {_count(source.used, 'image')}"
    failures = [failure for s in sources for failure in s.failures]
    report(failures, sources, written and f"wrote {what} to {written}")
    return written, failures


def _gradcam(config, model, source):
    """The Grad-CAM picture, once the flags' layer and class fit the model."""
    if isinstance(model, SavedModel):
        raise UsageError(
            "--gradcam needs the model's gradients, which a SavedModel does not keep; pass the .keras "
            "file or checkpoint it was exported from"
        )
    layer = config.layer or explain.DEFAULT_LAYER
    try:
        explain.check_layer(model.model, layer)
    except ValueError as e:
        raise UsageError(f"--layer={layer}: {e}") from None
    if config.class_index is not None and config.class_index >= model.num_classes:
        raise UsageError(
            f"--class_index={config.class_index}: the model has {model.num_classes} classes (0 to "
            f"{model.num_classes - 1}); leave it out to explain each image's top-1"
        )
    written = gradcam_picture(
        model, source, config.output, layer, config.class_index, config.batch_size, config.thumbnail_size
    )
    failures = source.failures
    report(
        failures,
        [source],
        written and f"wrote the {layer} Grad-CAM of {_count(source.used, 'image')} to {written}",
    )
    return written, failures


def report(failures, sources, done):
    """Names each skipped image (or shard) on stderr, then what was `done` and how much skipped."""
    for name, reason in failures:
        print(f"{PROGRAM}: {name}: {reason}; skipped", file=sys.stderr)
    if not done:
        return
    images = sum(s.skipped()[0] for s in sources)
    unknown = sum(s.skipped()[1] for s in sources)
    skipped = _count(images, "image")
    if unknown:  # no manifest.json counts what those lost
        skipped += f" and the rest of {_count(unknown, 'damaged shard')}"
    skipped += " skipped"
    print(f"{PROGRAM}: {done}; {skipped}{' (named above)' * bool(failures)}", file=sys.stderr)


def _count(n, noun, nouns=None):
    return f"{n} {noun}" if n == 1 else f"{n} {nouns or noun + 's'}"


def fail(what):
    """Ends with one line `alexnet_tf.features: error: <what>`, status 2 (bad input)."""
    cli.fail(PROGRAM, what)


def main(argv):
    try:
        written, failures = run(argv[1:], FLAGS)
    except UsageError as e:
        fail(e)
    except (tf.errors.OpError, OSError, ValueError) as e:
        fail(
            f"{type(e).__name__}: {error_message(e)} (--model={FLAGS.model}): check that the model "
            "loads and the shards are whole (python -m alexnet_tf.convert --verify), then run again"
        )
    if written is None:
        fail("no image could be read; nothing written")
    print(written)
    return cli.ExitStatus.FAILED if failures else cli.ExitStatus.SUCCESS
