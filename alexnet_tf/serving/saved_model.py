"""The SavedModel on disk: versioned export with warm-up requests, and finding the version to load.

`export_saved_model` writes `export_dir/<version>/{saved_model.pb, variables/,
assets/labels.txt, assets.extra/tf_serving_warmup_requests}`, which `tensorflow_model_server
--model_base_path=/models/alexnet` serves as it is (docs/serving.md), with the signatures of
`alexnet_tf.serving.signatures`. Readers find the version to load with `resolve_saved_model`
(`alexnet_tf.predict`, `alexnet_tf.evaluate` and the features command share it).
"""

import os
import re
import shutil
import tempfile
import uuid

from absl import logging
import numpy as np
import tensorflow as tf

from alexnet_tf.data import schema
from alexnet_tf.layers import grouped_conv_implementation
from alexnet_tf.serving.signatures import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_PIXELS,
    FEATURES_SIGNATURE,
    PIXELS_SIGNATURE,
    SERVING_SIGNATURE,
    TEN_CROP_SIGNATURE,
    ServingModule,
)

LABELS_ASSET = "labels.txt"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
TOP_K = 5


def next_version(export_dir):
    """The smallest integer version above every existing numeric subdirectory (1 if none)."""
    return (latest_version(export_dir) or 0) + 1


def _label_text(label):
    return label.text if isinstance(label, schema.LabelEntry) else str(label)


def warmup_images(seed=0):
    """Two small encoded images (JPEG 300x200, PNG 180x240) for warm-up requests and smoke tests."""
    rng = np.random.default_rng(seed)
    pixels = [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in ((300, 200, 3), (180, 240, 3))]
    return [tf.io.encode_jpeg(pixels[0]).numpy(), tf.io.encode_png(pixels[1]).numpy()]


def write_warmup_requests(version_dir, model_name="alexnet", signatures=None):
    """Writes `assets.extra/tf_serving_warmup_requests`: PredictionLog records TF Serving replays on load.

    One request per signature (batch 1 on the bytes signatures, batch 2 of pixels), so every
    graph is traced before the first real request. Needs tensorflow-serving-api.

    Args:
      version_dir: the SavedModel version being written.
      model_name: TF Serving's model name (the base path's last folder).
      signatures: names of the signatures the SavedModel has; None: the three every export has.

    Returns:
      The file's path.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    jpeg, png = warmup_images()
    inputs = {
        SERVING_SIGNATURE: ("image_bytes", tf.make_tensor_proto([jpeg], dtype=tf.string, shape=[1])),
        TEN_CROP_SIGNATURE: ("image_bytes", tf.make_tensor_proto([png], dtype=tf.string, shape=[1])),
        PIXELS_SIGNATURE: ("images", tf.make_tensor_proto(np.full((2, 256, 256, 3), 128.0, np.float32))),
        FEATURES_SIGNATURE: ("image_bytes", tf.make_tensor_proto([jpeg], dtype=tf.string, shape=[1])),
    }
    wanted = (SERVING_SIGNATURE, TEN_CROP_SIGNATURE, PIXELS_SIGNATURE) if signatures is None else signatures
    inputs = {name: value for name, value in inputs.items() if name in wanted}
    path = os.path.join(version_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for signature, (name, tensor) in inputs.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
            )
            request.inputs[name].CopyFrom(tensor)
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def export_saved_model(
    model,
    export_dir,
    labels=None,
    version=None,
    warmup=True,
    max_pixels=DEFAULT_MAX_PIXELS,
    max_batch=DEFAULT_MAX_BATCH,
):
    """Writes `model` as a TF Serving SavedModel under `export_dir/<version>/`.

    Args:
      model: Keras classifier from float32 [N, S, S, 3] mean-subtracted crops to logits
        [N, C] (build it under the float32 policy: serving runs on any CPU).
      export_dir: the model's base path (TF Serving's --model_base_path).
      labels: C labels in class order (strings, or `schema.LabelEntry`s, saved as
        "synset name"), or None to use "0".."C-1".
      version: integer version; None takes the next free one.
      warmup: also write `assets.extra/tf_serving_warmup_requests` (skipped with a
        warning when tensorflow-serving-api is not installed).
      max_pixels: the signatures refuse an image with more pixels (read from its header).
      max_batch: the signatures refuse a request with more images.

    Returns:
      The path of the written version directory.
    """
    num_classes = int(model.output_shape[-1])
    image_size = int(model.input_shape[1])
    labels = [str(i) for i in range(num_classes)] if labels is None else [_label_text(x) for x in labels]
    if len(labels) != num_classes:
        raise ValueError(f"export: {len(labels)} labels for a model with {num_classes} classes")
    if any("\n" in label or "\r" in label for label in labels):
        raise ValueError("export: labels must not contain line breaks")
    version = next_version(export_dir) if version is None else int(version)
    final_path = os.path.join(export_dir, str(version))
    if tf.io.gfile.exists(final_path):
        raise ValueError(f"export: {final_path} already exists")
    tf.io.gfile.makedirs(export_dir)

    staging = tempfile.mkdtemp(prefix="alexnet_tf_export_")
    try:
        labels_path = os.path.join(staging, LABELS_ASSET)
        with open(labels_path, "w", encoding="utf-8") as f:
            f.write("\n".join(labels) + "\n")
        local = "://" not in export_dir
        # TF Serving polls the base path: build the version in a hidden folder beside it and
        # rename it into place, so a half-written version is never loaded.
        target = os.path.join(export_dir, f".{version}.tmp-{uuid.uuid4().hex}") if local else final_path
        # Graphs are traced with one Conv2D per group: the Eigen CPU kernels (TF Serving's CPU
        # build, any TF_ENABLE_ONEDNN_OPTS=0 process) have no fused grouped convolution.
        with grouped_conv_implementation("split"):
            module = ServingModule(
                model,
                labels_path,
                image_size,
                min(TOP_K, num_classes),
                max_pixels=max_pixels,
                max_batch=max_batch,
            )
            signatures = {
                SERVING_SIGNATURE: module.serve_image_bytes,
                TEN_CROP_SIGNATURE: module.serve_ten_crop,
                PIXELS_SIGNATURE: module.predict_images.get_concrete_function(
                    tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
                ),
            }
            if module.serve_features is not None:
                signatures[FEATURES_SIGNATURE] = module.serve_features
            tf.saved_model.save(module, target, signatures=signatures)
        if warmup:
            try:
                write_warmup_requests(
                    target, os.path.basename(os.path.normpath(export_dir)), signatures=list(signatures)
                )
            except ImportError:
                logging.warning("tensorflow-serving-api is not installed: no warm-up requests written")
        if local:
            os.rename(target, final_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final_path


def latest_version(export_dir):
    """The newest numeric version folder in `export_dir`, or None (any tf.io.gfile path, e.g. gs://)."""
    if not tf.io.gfile.isdir(export_dir):
        return None
    versions = [
        int(name.rstrip("/")) for name in tf.io.gfile.listdir(export_dir) if re.fullmatch(r"\d+/?", name)
    ]
    return max(versions) if versions else None


def resolve_saved_model(path):
    """The version dir to load: `path` itself if it holds saved_model.pb, else its newest version.

    Raises:
      FileNotFoundError: neither holds a SavedModel.
    """
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    version = latest_version(path)
    candidate = path if version is None else os.path.join(path, str(version))
    if not tf.io.gfile.exists(os.path.join(candidate, "saved_model.pb")):
        raise FileNotFoundError(f"no SavedModel in {path}")
    return candidate
