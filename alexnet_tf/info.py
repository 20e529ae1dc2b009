"""Layer table of an AlexNet variant: output shapes, parameters and multiply-adds.

    python -m alexnet_tf.info [--variant=paper|one_weird_trick] [--num_classes=1000] [--json]

Builds the model on the CPU (a second or two, no data, no GPU needed) and prints one row
per layer and the totals; the paper variant has 60,965,224 parameters and about 0.72 G
multiply-adds per 224x224 image.
"""

import dataclasses
import json
import os

from absl import flags

from alexnet_tf import cli
from alexnet_tf.costs import layer_table, training_flops

FLAGS = flags.FLAGS
PROGRAM = "alexnet_tf.info"


def define_flags():
    """Defines the command-line flags; only the entry point calls this, so that importing
    this module for its functions defines no flags."""
    flags.DEFINE_enum("variant", "paper", ["paper", "one_weird_trick", "caffe"], "Which AlexNet to describe.")
    flags.DEFINE_integer("num_classes", 1000, "Number of output classes.")
    flags.DEFINE_integer("image_size", 224, "Input height and width.")
    flags.DEFINE_bool("json", False, "Print the table as JSON instead of text.")


def format_table(rows, title):
    """Formats `layer_table` rows as an aligned text table with totals.

    Args:
        rows: list of `alexnet_tf.costs.LayerInfo`.
        title: a first line naming the model.

    Returns:
        The table as one string.
    """
    total_params = sum(r.params for r in rows)
    total_macs = sum(r.macs for r in rows)
    header = f"{'layer':<10} {'type':<27} {'output shape':<16} {'params':>12} {'mult-adds':>14}"
    lines = [title, header, "-" * len(header)]
    for r in rows:
        shape = "x".join(str(d) for d in r.output_shape)
        lines.append(f"{r.name:<10} {r.kind:<27} {shape:<16} {r.params:>12,} {r.macs:>14,}")
    lines.append("-" * len(header))
    lines.append(f"{'total':<10} {'':<27} {'':<16} {total_params:>12,} {total_macs:>14,}")
    lines.append(
        f"{total_params / 1e6:.2f} M parameters, {total_macs / 1e9:.3f} G multiply-adds per image "
        f"forward, {training_flops(rows) / 1e9:.2f} GFLOP per training image"
    )
    return "\n".join(lines)


def main(argv):
    del argv
    # TensorFlow's C++ start-up notices (oneDNN, CPU flags) would bury the table.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from alexnet_tf.model import build_alexnet

    try:
        model = build_alexnet(
            num_classes=FLAGS.num_classes,
            variant=FLAGS.variant,
            input_shape=(FLAGS.image_size, FLAGS.image_size, 3),
        )
    except ValueError as e:
        cli.fail(PROGRAM, e)
    rows = layer_table(model)
    if FLAGS.json:
        print(
            json.dumps(
                {
                    "variant": FLAGS.variant,
                    "num_classes": FLAGS.num_classes,
                    "layers": [dataclasses.asdict(r) for r in rows],
                    "total_params": sum(r.params for r in rows),
                    "total_macs": sum(r.macs for r in rows),
                    "training_flops_per_image": training_flops(rows),
                },
                indent=2,
            )
        )
    else:
        print(
            format_table(
                rows,
                f"AlexNet variant={FLAGS.variant} num_classes={FLAGS.num_classes} "
                f"input={FLAGS.image_size}x{FLAGS.image_size}x3",
            )
        )
    return cli.ExitStatus.SUCCESS


def run_main():
    """Console-script entry point (`alexnet-info`)."""
    define_flags()
    cli.run(main, PROGRAM)


if __name__ == "__main__":
    run_main()
