"""Times the candidate implementations of a grouped convolution on AlexNet's grouped layers.

    python tools/benchmark_grouped_conv.py [--batch_size=128] [--steps=10] [--repeats=3]

Candidates, each timed forward+backward (input and kernel gradients) inside one
`tf.function`, interleaved round-robin so machine noise hits them alike:
  split:  tf.split the input and kernel, one tf.nn.conv2d per group, tf.concat.
  native: one tf.nn.conv2d whose kernel has in_channels // groups input channels
          (TensorFlow infers the group count; oneDNN on CPU, cuDNN on GPU).
  keras:  keras.ops.conv (what keras.layers.Conv2D(groups=2) calls), which on CPU wraps
          the op in an XLA-compiled function.
The winner is what `alexnet_tf.layers.GroupedConv2D` uses (docs/design/grouped-convolution.md
records the figures).
"""

import json
import statistics
import time

from absl import app, flags

flags.DEFINE_integer("batch_size", 128, "Images per step.")
flags.DEFINE_integer("steps", 10, "Timed steps per repeat.")
flags.DEFINE_integer("repeats", 3, "Repeats; the median is reported.")
flags.DEFINE_multi_string("dtype", ["float32", "bfloat16"], "Compute dtypes to time.")
flags.DEFINE_bool("json", False, "Print JSON instead of a table.")
FLAGS = flags.FLAGS

# (name, H=W, in_channels, filters, kernel) of the paper's grouped layers, groups=2.
_LAYERS = (("conv2", 27, 96, 256, 5), ("conv4", 13, 384, 384, 3), ("conv5", 13, 384, 256, 3))


def _candidates(tf, keras, groups):
    def split(x, k):
        xs = tf.split(x, groups, axis=-1)
        ks = tf.split(k, groups, axis=-1)
        return tf.concat([tf.nn.conv2d(a, b, 1, "SAME") for a, b in zip(xs, ks)], axis=-1)

    def native(x, k):
        return tf.nn.conv2d(x, k, 1, "SAME")

    def keras_conv(x, k):
        # keras.ops.conv infers groups from the kernel; on CPU its TensorFlow backend runs
        # grouped convolutions through a jit-compiled (XLA) inner function.
        return keras.ops.conv(x, k, strides=1, padding="same")

    return {"split": split, "native": native, "keras": keras_conv}


def _step_fn(tf, conv):
    @tf.function
    def step(x, k):
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            y = conv(x, k)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
        return tape.gradient(loss, [x, k])

    return step


def main(argv):
    del argv
    import keras
    import tensorflow as tf

    results = []
    for dtype in FLAGS.dtype:
        for name, size, cin, filters, ksize in _LAYERS:
            x = tf.cast(tf.random.normal([FLAGS.batch_size, size, size, cin]), dtype)
            k = tf.cast(tf.random.normal([ksize, ksize, cin // 2, filters], stddev=0.01), dtype)
            steps = {}
            for impl, conv in _candidates(tf, keras, 2).items():
                fn = _step_fn(tf, conv)
                try:
                    [g.numpy() for g in fn(x, k)]  # trace, compile and warm up
                    steps[impl] = fn
                except Exception as e:  # noqa: BLE001  a candidate that cannot run here is reported, not fatal
                    results.append({"dtype": dtype, "layer": name, "impl": impl, "error": str(e)[:200]})
            times = {impl: [] for impl in steps}
            for _ in range(FLAGS.repeats):
                for impl, fn in steps.items():
                    start = time.perf_counter()
                    for _ in range(FLAGS.steps):
                        out = fn(x, k)
                    [g.numpy() for g in out]
                    times[impl].append((time.perf_counter() - start) / FLAGS.steps)
            for impl, ts in times.items():
                results.append(
                    {
                        "dtype": dtype,
                        "layer": name,
                        "impl": impl,
                        "ms_per_step": 1e3 * statistics.median(ts),
                        "ms_min": 1e3 * min(ts),
                        "ms_max": 1e3 * max(ts),
                    }
                )
    if FLAGS.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"grouped conv forward+backward, batch {FLAGS.batch_size}, "
        f"median of {FLAGS.repeats} x {FLAGS.steps} steps"
    )
    print("| dtype | layer | impl | ms/step (median) | min-max |")
    print("|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['dtype']} | {r['layer']} | {r['impl']} | error: {r['error']} | |")
        else:
            print(
                f"| {r['dtype']} | {r['layer']} | {r['impl']} | {r['ms_per_step']:.1f} | "
                f"{r['ms_min']:.1f}-{r['ms_max']:.1f} |"
            )


if __name__ == "__main__":
    app.run(main)
