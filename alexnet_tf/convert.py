r"""Converts ILSVRC-2012 (or any class-per-folder image tree) into sharded TFRecords.

    python -m alexnet_tf.convert \
        --train_dir=/data/ILSVRC2012_img_train.tar --validation_dir=/data/ILSVRC2012_img_val \
        --class_names=/data/LOC_synset_mapping.txt --output_dir=/data/imagenet-tfrecords

Writes train-NNNNN-of-01024, validation-NNNNN-of-00128, labels.txt and manifest.json (0-based
labels, model-garden schema, shorter side resized to 256). Re-running the same command resumes;
`--verify --output_dir=...` re-reads and checks a finished folder. See alexnet_tf/data/convert/.
"""

import os
import sys

from absl import app, flags

from alexnet_tf import cli

# Flags left unset take alexnet_tf.data.convert.convert()'s defaults, so the values live in one place.
flags.DEFINE_string(
    "train_dir",
    None,
    "One sub-folder (or per-class .tar) per class, or the ILSVRC2012_img_train.tar of per-class tars.",
)
flags.DEFINE_string(
    "validation_dir",
    None,
    "Class-per-folder tree, or a flat folder/tar of images labelled by --validation_labels.",
)
flags.DEFINE_string(
    "validation_labels",
    None,
    "For a flat validation folder: one synset per "
    "line in sorted file-name order. Default: the ILSVRC-2012 ground truth "
    "installed with tensorflow-datasets.",
)
flags.DEFINE_string(
    "class_names", None, "Optional 'synset name' lines, e.g. the devkit's LOC_synset_mapping.txt."
)
flags.DEFINE_string("output_dir", None, "Folder for the shards, labels.txt and manifest.json.")
flags.DEFINE_integer(
    "resize_shorter",
    None,
    "Resize so the shorter side has this many pixels, "
    "keeping the whole image (default 256, the paper's); 0 keeps originals.",
)
flags.DEFINE_integer("quality", None, "JPEG quality of re-encoded images (default 95).")
flags.DEFINE_integer("train_shards", None, "Training shards (default 1024).")
flags.DEFINE_integer("validation_shards", None, "Validation shards (default 128).")
flags.DEFINE_integer("num_workers", None, "Worker processes (default: all cores).")
flags.DEFINE_integer("shuffle_seed", None, "Seed of the order of training images across shards (default 0).")
flags.DEFINE_bool("overwrite", False, "Replace an output folder that holds a different dataset.")
flags.DEFINE_bool(
    "verify",
    False,
    "Re-read and decode every record of --output_dir and check "
    "it against manifest.json (after converting, if inputs are given).",
)
flags.mark_flag_as_required("output_dir")

FLAGS = flags.FLAGS
PROGRAM = "alexnet_tf.convert"
_CONVERT_FLAGS = (
    "train_dir",
    "validation_dir",
    "validation_labels",
    "class_names",
    "resize_shorter",
    "quality",
    "train_shards",
    "validation_shards",
    "num_workers",
    "shuffle_seed",
    "overwrite",
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    # TensorFlow's C++ start-up notices would bury the progress line (workers inherit this).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from alexnet_tf.data import convert, schema  # after the log level

    status = cli.ExitStatus.SUCCESS
    try:
        if FLAGS.train_dir or FLAGS.validation_dir or not FLAGS.verify:
            manifest = convert.convert(
                FLAGS.output_dir,
                **{name: FLAGS[name].value for name in _CONVERT_FLAGS if FLAGS[name].value is not None},
            )
            status = report_skipped(
                manifest["skipped"], os.path.join(FLAGS.output_dir, schema.MANIFEST_FILENAME)
            )
        if FLAGS.verify:
            problems = convert.verify(FLAGS.output_dir, num_workers=FLAGS.num_workers)
            if problems:
                print("\n".join(f"{PROGRAM}: {problem}" for problem in problems), file=sys.stderr)
                cli.fail(
                    PROGRAM,
                    f"{FLAGS.output_dir} is not sound ({len(problems)} problems above): delete the shards "
                    "they name and run the same conversion again (it writes the missing shards), or "
                    "convert again with --overwrite",
                )
            print(f"verify: {FLAGS.output_dir} is sound", file=sys.stderr)
    except convert.ConversionError as e:  # an input or output the user must fix
        cli.fail(PROGRAM, e)
    return status


def report_skipped(skipped, manifest_path, shown=10):
    """Names the files the conversion skipped on stderr; FAILED when there are any."""
    if not skipped:
        return cli.ExitStatus.SUCCESS
    for note in skipped[:shown]:
        print(f"{PROGRAM}: skipped {note['split']}/{note['path']}: {note['reason']}", file=sys.stderr)
    more = f" ({len(skipped) - shown} more not shown)" if len(skipped) > shown else ""
    print(
        f"{PROGRAM}: {len(skipped)} files skipped{more}, all listed under 'skipped' in "
        f"{manifest_path}; the shards hold every other image",
        file=sys.stderr,
    )
    return cli.ExitStatus.FAILED


if __name__ == "__main__":
    cli.run(main, PROGRAM)
