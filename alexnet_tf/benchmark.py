"""Training-speed benchmark: images/sec of AlexNet forward+backward+SGD on in-memory data.

    python -m alexnet_tf.benchmark --precision=float32 --precision=mixed_bfloat16

takes about 3 minutes on a 2-core CPU with the defaults (batch 128, 3 repeats of 5 steps
per precision). Every precision given is built once and the repeats are interleaved
round-robin, so background noise hits all of them alike and their ratio is meaningful
even on a shared machine. Also measures this machine's bfloat16 matrix-multiply rate
(a 4096x4096 `tf.matmul`) in the same process, the practical ceiling for training, and
reports each precision's share of it at about 4.1 GFLOP per training image.
"""

import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags; only the entry point calls this, so that importing
    this module for its functions defines no flags."""
    flags.DEFINE_enum("variant", "paper", ["paper", "one_weird_trick"], "AlexNet variant.")
    flags.DEFINE_integer("batch_size", 128, "Global batch size.")
    flags.DEFINE_multi_enum("precision", ["float32", "mixed_bfloat16"],
                            ["float32", "mixed_bfloat16", "mixed_float16"], "Precision policies to time.")
    flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.")
    flags.DEFINE_integer("steps_per_execution", 1, "Train steps per tf.function call.")
    flags.DEFINE_integer("warmup_steps", 2, "Untimed steps after tracing.")
    flags.DEFINE_integer("steps", 5, "Timed steps per repeat.")
    flags.DEFINE_integer("repeats", 3, "Repeats per precision; the median is reported.")
    flags.DEFINE_integer("num_classes", 1000, "Number of classes.")
    flags.DEFINE_bool("matmul", True, "Also time a 4096x4096 bfloat16 matmul (the machine's ceiling).")
    flags.DEFINE_bool("json", False, "Print JSON instead of a table.")


@dataclasses.dataclass
class TrainResult:
    precision: str
    images_per_sec: float  # median over repeats
    images_per_sec_min: float
    images_per_sec_max: float
    tflops: float  # achieved, at the model's training FLOPs per image


def matmul_tflops(tf, dtype="bfloat16", n=4096, iters=10, repeats=3):
    """Best-of-`repeats` FLOP rate (in TFLOP/s) of an n x n x n `tf.matmul` in `dtype`."""
    a = tf.cast(tf.random.normal([n, n]), dtype)
    b = tf.cast(tf.random.normal([n, n]), dtype)
    step = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y)[:1, :1], tf.float32)))
    step(a, b).numpy()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            out = step(a, b)
        out.numpy()
        best = max(best, 2 * n**3 * iters / (time.perf_counter() - start) / 1e12)
    return best


def build_trainer(keras, precision, variant, num_classes, jit_compile, steps_per_execution):
    """Builds and compiles the model with the paper's optimiser under `precision`."""
    from alexnet_tf.model import build_alexnet

    keras.mixed_precision.set_global_policy(precision)
    try:
        model = build_alexnet(num_classes=num_classes, variant=variant)
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
        if precision == "mixed_float16":
            optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


def environment(tf, keras):
    """Versions and hardware the figures were measured on."""
    gpus = tf.config.list_physical_devices("GPU")
    cpu_flags = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    wanted = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")
                    cpu_flags = " ".join(fl for fl in line.split() if fl in wanted)
                    break
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_flags": cpu_flags,
        "gpus": [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus],
    }


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from alexnet_tf.info import layer_table, training_flops
    from alexnet_tf.model import build_alexnet

    if FLAGS.steps % FLAGS.steps_per_execution or FLAGS.warmup_steps % FLAGS.steps_per_execution:
        print("alexnet_tf.benchmark: --steps and --warmup_steps must be multiples of "
              f"--steps_per_execution ({FLAGS.steps_per_execution}).", file=sys.stderr)
        return 2
    flops_per_image = training_flops(layer_table(build_alexnet(FLAGS.num_classes, FLAGS.variant)))
    keras.backend.clear_session()
    rng = np.random.default_rng(0)
    images = rng.normal(scale=50.0, size=(FLAGS.batch_size, 224, 224, 3)).astype("float32")
    labels = rng.integers(0, FLAGS.num_classes, size=(FLAGS.batch_size,)).astype("int32")
    data = tf.data.Dataset.from_tensors((images, labels)).repeat().prefetch(2)

    models = {p: build_trainer(keras, p, FLAGS.variant, FLAGS.num_classes, FLAGS.jit_compile,
                               FLAGS.steps_per_execution) for p in FLAGS.precision}
    for model in models.values():  # trace, compile, warm up
        model.fit(data, steps_per_epoch=max(FLAGS.warmup_steps, FLAGS.steps_per_execution), epochs=1, verbose=0, shuffle=False)
    rates = {p: [] for p in models}
    for _ in range(FLAGS.repeats):
        for precision, model in models.items():
            start = time.perf_counter()
            model.fit(data, steps_per_epoch=FLAGS.steps, epochs=1, verbose=0, shuffle=False)
            rates[precision].append(FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start))
    results = []
    for precision, r in rates.items():
        median = statistics.median(r)
        results.append(TrainResult(precision, median, min(r), max(r), median * flops_per_image / 1e12))
    peak_tflops = matmul_tflops(tf) if FLAGS.matmul else None
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    report = {
        "mode": "train",
        "variant": FLAGS.variant,
        "batch_size": FLAGS.batch_size,
        "jit_compile": FLAGS.jit_compile,
        "steps_per_execution": FLAGS.steps_per_execution,
        "steps": FLAGS.steps,
        "repeats": FLAGS.repeats,
        "training_gflop_per_image": flops_per_image / 1e9,
        "bf16_matmul_tflops": peak_tflops,
        "peak_rss_gib": peak_rss_gib,
        "results": [dataclasses.asdict(r) for r in results],
        "environment": environment(tf, keras),
    }
    if FLAGS.json:
        print(json.dumps(report, indent=2))
        return 0
    env = report["environment"]
    print(f"AlexNet {FLAGS.variant} training, batch {FLAGS.batch_size}, synthetic in-memory data, "
          f"jit_compile={FLAGS.jit_compile}, steps_per_execution={FLAGS.steps_per_execution}; "
          f"median of {FLAGS.repeats} x {FLAGS.steps} steps")
    print(f"TensorFlow {env['tensorflow']}, Keras {env['keras']}, {env['cpus']} CPUs "
          f"[{env['cpu_flags']}] GPUs: {env['gpus'] or 'none'}")
    print("| precision | images/sec (median) | min-max | achieved TFLOP/s | share of bf16 matmul |")
    print("|---|---|---|---|---|")
    for r in results:
        share = f"{100 * r.tflops / peak_tflops:.0f}%" if peak_tflops else "-"
        print(f"| {r.precision} | {r.images_per_sec:.1f} | {r.images_per_sec_min:.1f}-"
              f"{r.images_per_sec_max:.1f} | {r.tflops:.3f} | {share} |")
    if peak_tflops:
        print(f"bf16 4096x4096 matmul: {peak_tflops:.3f} TFLOP/s; {flops_per_image / 1e9:.2f} GFLOP "
              "per training image")
    print(f"peak resident memory: {peak_rss_gib:.2f} GiB (all precisions' models together)")
    return 0


def run_main():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run_main()
