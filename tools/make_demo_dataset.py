r"""Renders the 10-class demo dataset and converts it to TFRecords (about 15 s on 2 CPU cores).

    python tools/make_demo_dataset.py --output_dir=/tmp/alexnet_demo

Prints the folder with the shards; `python -m alexnet_tf.train --demo` builds the same data
itself. See alexnet_tf/data/demo.py.
"""

import os

from absl import app, flags

flags.DEFINE_string(
    "output_dir",
    None,
    "Cache folder; the dataset goes into a sub-folder named "
    "after the settings, reused when it is already complete.",
)
flags.DEFINE_integer("seed", 0, "Rendering seed.")
flags.DEFINE_integer("num_classes", 10, "Classes (1..10).")
flags.DEFINE_integer("train_per_class", 100, "Training images per class.")
flags.DEFINE_integer("validation_per_class", 20, "Validation images per class.")
flags.DEFINE_integer("num_workers", 1, "Converter worker processes.")
flags.mark_flag_as_required("output_dir")

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up notices
    from alexnet_tf.data import demo  # after the log level

    print(
        demo.build_demo_dataset(
            FLAGS.output_dir,
            seed=FLAGS.seed,
            num_classes=FLAGS.num_classes,
            train_per_class=FLAGS.train_per_class,
            validation_per_class=FLAGS.validation_per_class,
            num_workers=FLAGS.num_workers,
            progress=True,
        )
    )


if __name__ == "__main__":
    app.run(main)
