"""Owns the serve mode of `python -m alexnet_tf.benchmark`: SavedModel (and ONNX) inference speed.

    python -m alexnet_tf.benchmark --mode=serve [--requests=200] [--serve_batch_size=64]

Exports the chosen AlexNet variant with random weights to a temporary folder as
`alexnet_tf.train` exports it, loads it back in this process, and times:
  - batch-1 latency (median and p99 over --requests requests, after --warmup_steps untimed
    ones) of `serving_default` on one 256x341 JPEG (decode and preprocessing included) and of
    `predict_images` on one float32 256x256 image;
  - throughput of `predict_images` on --serve_batch_size images: --steps batches per
    repeat, --repeats repeats, images/sec median/min/max over the repeats;
  - the same pixel input through the ONNX model (alexnet_tf.serving.onnx_export) in onnxruntime,
    batch 1 and batch --serve_batch_size, timed round-robin with the SavedModel. Only with --onnx and when
    onnxruntime and tf2onnx import; otherwise the result says it was skipped.
"""

import os
import shutil
import statistics
import tempfile
import time

import numpy as np


def _latency(call, requests, warmup):
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(requests):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return {
        "median_ms": 1e3 * float(np.median(seconds)),
        "p99_ms": 1e3 * float(np.percentile(seconds, 99)),
        "requests": requests,
    }


def _seconds(call, count):
    start = time.perf_counter()
    for _ in range(count):
        call()
    return time.perf_counter() - start


def _onnx_missing():
    """None when onnxruntime and tf2onnx import, else the reason for skipping."""
    try:
        import onnxruntime
        import tf2onnx
    except ImportError as e:
        return f"skipped: not installed ({e.name}; pip install onnxruntime tf2onnx)"
    return None


def run(
    *,
    variant,
    num_classes,
    requests,
    batch_size,
    warmup_steps,
    timed_steps,
    repeats,
    onnx=True,
    seed=0,
    progress=lambda message: None,
):
    """Exports, loads and times the model.

    Args:
      variant, num_classes: the AlexNet to export (random weights, float32, no dropout).
      requests: timed batch-1 requests per latency row.
      batch_size: images per throughput batch.
      warmup_steps: untimed calls before each latency row and each runtime's throughput.
      timed_steps: throughput batches per repeat.
      repeats: throughput rounds, round-robin over the runtimes.
      onnx: also time onnxruntime when it and tf2onnx are installed.
      seed: seed of the weights and inputs.
      progress: called with a line of progress.

    Returns:
      A JSON-able dict: latency (rows with median_ms, p99_ms), throughput (rows with
      images/sec median/min/max), skipped (runtimes not run, with the reason) and, with
      onnxruntime, onnx_max_abs_probability_difference.
    """
    import keras
    import tensorflow as tf

    from alexnet_tf.model import build_alexnet
    from alexnet_tf.serving import saved_model, signatures

    keras.utils.set_random_seed(seed)
    model = build_alexnet(num_classes=num_classes, variant=variant, dropout_rate=0.0)
    rng = np.random.default_rng(seed)
    one_jpeg = tf.constant([tf.io.encode_jpeg(rng.integers(0, 256, (256, 341, 3), np.uint8)).numpy()])
    pixels = rng.uniform(0, 255, (batch_size, 256, 256, 3)).astype(np.float32)
    batch, one_image = tf.constant(pixels), tf.constant(pixels[:1])
    workdir = tempfile.mkdtemp(prefix="alexnet_tf_serve_bench_")
    skipped, result = [], {}
    try:
        progress("exporting and loading the SavedModel")
        loaded = tf.saved_model.load(saved_model.export_saved_model(model, workdir, warmup=False))
        serve = loaded.signatures[signatures.SERVING_SIGNATURE]
        predict_images = loaded.signatures[signatures.PIXELS_SIGNATURE]
        latency_calls = {
            ("saved_model", signatures.SERVING_SIGNATURE, "one JPEG"): lambda: serve(image_bytes=one_jpeg),
            ("saved_model", signatures.PIXELS_SIGNATURE, "one 256x256 float32 image"): lambda: predict_images(
                images=one_image
            ),
        }
        batch_calls = {("saved_model", signatures.PIXELS_SIGNATURE): lambda: predict_images(images=batch)}
        missing = _onnx_missing() if onnx else "skipped: no --onnx"
        if missing:
            skipped.append({"runtime": "onnxruntime", "reason": missing})
        else:
            import onnxruntime

            from alexnet_tf.serving import onnx_export

            progress("converting to ONNX (tf2onnx: about a minute and 10 GiB of memory for the full model)")
            path = onnx_export.export_onnx(model, os.path.join(workdir, "alexnet.onnx"))
            session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            run_onnx = lambda x: session.run(None, {onnx_export.INPUT_NAME: x})  # noqa: E731
            latency_calls["onnxruntime", "pixels", "one 256x256 float32 image"] = lambda: run_onnx(pixels[:1])
            batch_calls["onnxruntime", "pixels"] = lambda: run_onnx(pixels)
            difference = run_onnx(pixels[:4])[0] - predict_images(images=batch[:4])["probabilities"].numpy()
            result["onnx_max_abs_probability_difference"] = float(np.abs(difference).max())
        result["latency"] = []
        for (runtime, signature, inputs), call in latency_calls.items():
            progress(f"batch-1 latency of {runtime} {signature}")
            result["latency"].append(
                {
                    "runtime": runtime,
                    "signature": signature,
                    "input": inputs,
                    "batch": 1,
                    **_latency(call, requests, warmup_steps),
                }
            )
        for call in batch_calls.values():
            for _ in range(warmup_steps):
                call()
        rates = {key: [] for key in batch_calls}
        for repeat in range(repeats):
            progress(f"batch-{batch_size} throughput, repeat {repeat + 1}/{repeats}")
            for key, call in batch_calls.items():
                rates[key].append(timed_steps * batch_size / _seconds(call, timed_steps))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["throughput"] = [
        {
            "runtime": runtime,
            "signature": signature,
            "batch": batch_size,
            "images_per_sec": statistics.median(r),
            "images_per_sec_min": min(r),
            "images_per_sec_max": max(r),
            "rounds_images_per_sec": r,
        }
        for (runtime, signature), r in rates.items()
    ]
    result["skipped"] = skipped
    return result


def table(result):
    """Markdown rows of run's result."""
    lines = [
        "| runtime | signature | input | batch | latency median / p99 (ms) | images/sec (median) | min-max |",
        "|---|---|---|---:|---|---:|---|",
    ]
    for r in result["latency"]:
        lines.append(
            f"| {r['runtime']} | {r['signature']} | {r['input']} | 1 | "
            f"{r['median_ms']:.1f} / {r['p99_ms']:.1f} | | |"
        )
    for r in result["throughput"]:
        lines.append(
            f"| {r['runtime']} | {r['signature']} | float32 256x256 | {r['batch']} | | "
            f"{r['images_per_sec']:.1f} | {r['images_per_sec_min']:.1f}-"
            f"{r['images_per_sec_max']:.1f} |"
        )
    lines += [f"| {s['runtime']} | {s['reason']} | | | | | |" for s in result["skipped"]]
    if "onnx_max_abs_probability_difference" in result:
        lines.append(
            f"\nonnxruntime vs predict_images: max probability difference "
            f"{result['onnx_max_abs_probability_difference']:.1e}"
        )
    return "\n".join(lines)
