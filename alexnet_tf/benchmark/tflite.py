"""Owns the tflite mode of `python -m alexnet_tf.benchmark`: LiteRT files against the SavedModel.

    python -m alexnet_tf.benchmark --mode=tflite [--variants=paper --variants=caffe ...]
        [--quantize=none --quantize=int8 ...] [--requests=200] [--tflite_threads=N]

(by default every variant and every quantisation)

For each variant: builds it with random weights (float32, no dropout), exports the SavedModel as
`alexnet_tf.train` does and converts it to a `.tflite` file per quantisation with
`alexnet_tf.serving.tflite_export` (int8 calibrated on --representative_images random crops: the
weights are random too, so real images would measure nothing more), then times batch-1 latency
(median and p99 over --requests requests, after --warmup_steps untimed ones) of the SavedModel's
`logits` function on one mean-subtracted crop, and of every LiteRT file in the LiteRT interpreter
(ai-edge-litert) on the same crop as 0-255 pixels, with --tflite_threads threads (default: the
machine's CPU count). Also reported: each file's size, its conversion time, and its largest logit
difference from the SavedModel's on that crop, relative to the largest logit.
"""

import os
import shutil
import tempfile
import time

import numpy as np

from alexnet_tf.benchmark.serve import _latency


def run(
    *,
    variants,
    quantizations,
    num_classes,
    requests,
    warmup_steps,
    num_threads,
    representative_images,
    seed=0,
    progress=lambda message: None,
):
    """Exports, converts, loads and times every (variant, quantisation).

    Returns:
      A JSON-able dict: rows (one per variant and runtime: variant, runtime ("saved_model" or
      "litert"), quantize, file_mib, convert_s, median_ms, p99_ms, requests,
      max_logit_difference) and num_threads.
    """
    import keras
    import tensorflow as tf

    from alexnet_tf.data import preprocessing
    from alexnet_tf.model import build_alexnet
    from alexnet_tf.serving import litert, saved_model, tflite_export

    litert.require_litert()
    rng = np.random.default_rng(seed)
    rows = []
    for variant in variants:
        keras.utils.set_random_seed(seed)
        model = build_alexnet(num_classes=num_classes, variant=variant, dropout_rate=0.0)
        size = int(model.input_shape[1])
        pixels = rng.integers(0, 256, (1, size, size, 3), np.uint8)
        crop = tf.constant(pixels.astype(np.float32) - np.asarray(preprocessing.MEAN_RGB, np.float32))
        calibration = rng.integers(0, 256, (representative_images, size, size, 3), np.uint8)
        workdir = tempfile.mkdtemp(prefix="alexnet_tf_tflite_bench_")
        try:
            progress(f"{variant}: exporting and loading the SavedModel")
            start = time.perf_counter()
            version = saved_model.export_saved_model(model, workdir, warmup=False)
            export_s = time.perf_counter() - start
            loaded = tf.saved_model.load(version)
            reference = loaded.logits(crop).numpy()
            rows.append(
                {
                    "variant": variant,
                    "runtime": "saved_model",
                    "quantize": "none",
                    "file_mib": _size_mib(version),
                    "convert_s": export_s,
                    "max_logit_difference": 0.0,
                    **_latency(lambda m=loaded, x=crop: m.logits(x).numpy(), requests, warmup_steps),
                }
            )
            for quantize in quantizations:
                progress(f"{variant}: converting to LiteRT, quantize={quantize}")
                path = os.path.join(workdir, f"{variant}-{quantize}.tflite")
                start = time.perf_counter()
                tflite_export.export_tflite(
                    model, path, quantize, representative=calibration if quantize == "int8" else None
                )
                convert_s = time.perf_counter() - start
                interpreter = litert.LiteRTModel(path, num_threads=num_threads)
                difference = np.abs(interpreter(pixels) - reference).max() / np.abs(reference).max()
                progress(f"{variant}: batch-1 latency of the {quantize} file")
                rows.append(
                    {
                        "variant": variant,
                        "runtime": "litert",
                        "quantize": quantize,
                        "file_mib": os.path.getsize(path) / 2**20,
                        "convert_s": convert_s,
                        "max_logit_difference": float(difference),
                        **_latency(lambda m=interpreter, x=pixels: m(x), requests, warmup_steps),
                    }
                )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return {"rows": rows, "num_threads": num_threads}


def _size_mib(folder):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files) / 2**20


def table(result):
    """Markdown rows of run's result."""
    lines = [
        f"LiteRT interpreter threads: {result['num_threads']}; the SavedModel runs on TensorFlow's own "
        "thread pools.\n",
        "| variant | runtime | quantize | file (MiB) | export / convert (s) | batch-1 latency median / p99 "
        "(ms) | vs SavedModel | max logit difference / max logit |",
        "|---|---|---|---:|---:|---|---:|---:|",
    ]
    reference = {}
    for r in result["rows"]:
        if r["runtime"] == "saved_model":
            reference[r["variant"]] = r["median_ms"]
        ratio = reference[r["variant"]] / r["median_ms"]
        lines.append(
            f"| {r['variant']} | {r['runtime']} | {r['quantize']} | {r['file_mib']:.1f} | "
            f"{r['convert_s']:.1f} | {r['median_ms']:.2f} / {r['p99_ms']:.2f} | {ratio:.2f}x | "
            f"{r['max_logit_difference']:.1e} |"
        )
    lines.append("\n'vs SavedModel': the SavedModel's median latency over the row's (above 1: faster).")
    return "\n".join(lines)
