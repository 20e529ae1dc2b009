"""Times the train step with TensorFlow's oneDNN kernels off and on, alternately, in fresh processes.

    python tools/onednn_ab.py [--variant=paper --variant=one_weird_trick] [--rounds=2] [--batch_size=128]

`TF_ENABLE_ONEDNN_OPTS` is read once, when TensorFlow is imported, so each setting needs its own
process: every round runs `python -m alexnet_tf.benchmark --json` (float32, synthetic data)
once per (variant, setting), alternating, so a machine whose speed drifts hits both alike; the
medians over rounds and the on/off ratio are printed. docs/design/portability.md records the
figures and the decision they support.
"""

import json
import os
import statistics
import subprocess
import sys

from absl import app, flags

flags.DEFINE_multi_enum(
    "variant",
    ["paper", "one_weird_trick"],
    ["paper", "one_weird_trick", "caffe"],
    "Variants to time; repeat the flag for several.",
)
flags.DEFINE_integer("rounds", 2, "Alternating rounds; medians are reported.")
flags.DEFINE_integer("batch_size", 128, "Global batch.")
flags.DEFINE_integer("steps", 3, "Timed steps per process.")
flags.DEFINE_string("precision", "float32", "Precision policy (float32: bfloat16 is emulated on AVX2).")
FLAGS = flags.FLAGS


def _images_per_sec(variant, onednn):
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="2")
    command = [
        sys.executable,
        "-m",
        "alexnet_tf.benchmark",
        "--json",
        "--nomatmul",
        f"--variant={variant}",
        f"--precision={FLAGS.precision}",
        f"--batch_size={FLAGS.batch_size}",
        f"--steps={FLAGS.steps}",
        "--warmup_steps=1",
        "--repeats=1",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        sys.exit(
            f"onednn_ab: {' '.join(command)} with TF_ENABLE_ONEDNN_OPTS={onednn} failed:\n"
            f"{result.stderr[-2000:]}"
        )
    return json.loads(result.stdout)["results"][0]["images_per_sec"]


def main(argv):
    del argv
    rates = {(v, s): [] for v in dict.fromkeys(FLAGS.variant) for s in ("0", "1")}
    for round_index in range(FLAGS.rounds):
        for (variant, onednn), rounds in rates.items():
            rounds.append(_images_per_sec(variant, onednn))
            print(
                f"onednn_ab: round {round_index + 1}: {variant} TF_ENABLE_ONEDNN_OPTS={onednn} "
                f"{rounds[-1]:.1f} images/s",
                file=sys.stderr,
                flush=True,
            )
    print(f"| variant ({FLAGS.precision}, batch {FLAGS.batch_size}) | oneDNN off | oneDNN on | on / off |")
    print("|---|---:|---:|---:|")
    for variant in dict.fromkeys(FLAGS.variant):
        off, on = statistics.median(rates[variant, "0"]), statistics.median(rates[variant, "1"])
        print(f"| {variant} | {off:.1f} | {on:.1f} | {on / off:.2f}x |")


if __name__ == "__main__":
    app.run(main)
