"""Serving speed on this machine: batch-1 latency and batch-64 throughput, SavedModel vs onnxruntime.

    python tools/benchmark_serving.py [--num_classes=1000] [--requests=200] [--batches=5]

(about 2 minutes on 2 CPU cores) exports the paper's AlexNet with random weights to a temp
dir, loads it back in-process, and times `serving_default` on one 256x341 JPEG per request
(decode and preprocessing included), `predict_images` on 64 float32 256x256 images, and the
ONNX model of the pixel signature (alexnet_tf.onnx_export) with onnxruntime on the same
256x256 pixels, batch 1 and batch 64. Prints one JSON object. `serve_benchmark` is the function.
"""

import json
import os
import shutil
import sys
import tempfile
import time

from absl import app, flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS


def _times(fn, count, warmup=3):
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return np.array(seconds)


def _latency(seconds):
    return {"median_ms": round(1e3 * float(np.median(seconds)), 2),
            "p99_ms": round(1e3 * float(np.percentile(seconds, 99)), 2), "requests": len(seconds)}


def _throughput(seconds, batch):
    return {"images_per_s": round(batch / float(np.median(seconds)), 1), "batch": batch, "batches": len(seconds)}


def serve_benchmark(num_classes=1000, requests=200, batches=5, batch_size=64, seed=0):
    """Returns {"saved_model": {...}, "onnxruntime": {...}} with latency and throughput figures."""
    import keras  # pylint: disable=g-import-not-at-top
    import onnxruntime  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    from alexnet_tf import export, onnx_export  # pylint: disable=g-import-not-at-top
    from alexnet_tf.model import build_alexnet  # pylint: disable=g-import-not-at-top

    keras.utils.set_random_seed(seed)
    model = build_alexnet(num_classes=num_classes, variant="paper", dropout_rate=0.0)
    rng = np.random.default_rng(seed)
    jpeg = tf.io.encode_jpeg(rng.integers(0, 256, (256, 341, 3), np.uint8)).numpy()
    pixels = rng.uniform(0, 255, (batch_size, 256, 256, 3)).astype(np.float32)
    workdir = tempfile.mkdtemp(prefix="alexnet_serving_bench_")
    try:
        loaded = tf.saved_model.load(export.export_saved_model(model, workdir, warmup=False))
        serve, predict_images = loaded.signatures["serving_default"], loaded.signatures["predict_images"]
        one_jpeg, batch = tf.constant([jpeg]), tf.constant(pixels)
        results = {"saved_model": {
            "batch1_jpeg_latency": _latency(_times(lambda: serve(image_bytes=one_jpeg), requests)),
            "batch1_pixels_latency": _latency(_times(lambda: predict_images(images=batch[:1]), requests)),
            f"batch{batch_size}_throughput": _throughput(
                _times(lambda: predict_images(images=batch), batches, warmup=1), batch_size)}}
        path = onnx_export.export_onnx(model, os.path.join(workdir, "alexnet.onnx"))
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        run = lambda x: session.run(None, {onnx_export.INPUT_NAME: x})  # noqa: E731
        results["onnxruntime"] = {
            "batch1_pixels_latency": _latency(_times(lambda: run(pixels[:1]), requests)),
            f"batch{batch_size}_throughput": _throughput(_times(lambda: run(pixels), batches, warmup=1), batch_size)}
        difference = np.abs(run(pixels[:4])[0] - predict_images(images=batch[:4])["probabilities"].numpy()).max()
        results["onnx_max_abs_probability_difference"] = float(difference)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["cpu_count"] = os.cpu_count()
    return results


def main(argv):
    del argv
    print(json.dumps(serve_benchmark(FLAGS.num_classes, FLAGS.requests, FLAGS.batches), indent=2))


if __name__ == "__main__":
    flags.DEFINE_integer("num_classes", 1000, "Classes of the benchmarked AlexNet.")
    flags.DEFINE_integer("requests", 200, "Timed batch-1 requests.")
    flags.DEFINE_integer("batches", 5, "Timed batch-64 calls.")
    app.run(main)
