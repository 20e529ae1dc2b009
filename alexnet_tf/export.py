"""Owns the serving SavedModel: TF Serving's versioned layout and its signatures.

    export_saved_model(model, "/models/alexnet", labels=names)  # -> "/models/alexnet/1"

writes `export_dir/<version>/{saved_model.pb, variables/, assets/labels.txt}`, which
`tensorflow_model_server --model_base_path=/models/alexnet` serves as it is. Signatures:

- `serving_default`: `image_bytes` (tf.string [N], encoded JPEG/PNG/GIF/BMP; REST clients
  send `{"instances": [{"b64": "..."}]}`);
- `predict_images`: `images` (float32 [N, H, W, 3] pixels in [0, 255], any H and W; the
  loaded object's `predict_images` function also takes uint8).

Both decode/preprocess with `data.decode_image` + `data.preprocess_for_eval`, the exact
functions evaluation uses, and return `probabilities` float32 [N, C], `top_k_classes`
int32 [N, 5], `top_k_scores` float32 [N, 5] and `top_k_labels` string [N, 5] (read from
the `labels.txt` asset, one label per line in class order). The loaded object also has
`logits(images)` on already-preprocessed float32 [N, S, S, 3] crops, which
`alexnet_tf.evaluate` uses for ten-crop evaluation, and the variables `image_size` and
`num_classes`.
"""

import os
import re
import shutil
import tempfile
import uuid

import tensorflow as tf

from alexnet_tf import data

SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "predict_images"
LABELS_ASSET = "labels.txt"
TOP_K = 5


class ServingModule(tf.Module):
    """The exported object: a float32 Keras classifier plus preprocessing and top-k labels.

    Args:
      model: Keras model mapping float32 [N, S, S, 3] mean-subtracted crops to logits [N, C].
      labels_path: text file with one label per line, C lines, class order.
      image_size: S, the crop size the model takes.
      top_k: how many classes the top-k outputs hold (min(5, C) by default).
    """

    def __init__(self, model, labels_path, image_size, top_k):
        super().__init__(name="alexnet_serving")
        self.model = model
        self.crop_size = int(image_size)
        self.k = int(top_k)
        self.image_size = tf.Variable(self.crop_size, trainable=False, name="image_size")
        self.num_classes = tf.Variable(int(model.output_shape[-1]), trainable=False, name="num_classes")
        self.labels_asset = tf.saved_model.Asset(labels_path)
        self.labels_table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(self.labels_asset, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                                          tf.string, tf.lookup.TextFileIndex.WHOLE_LINE),
            default_value="")
        crop = tf.TensorSpec([self.crop_size, self.crop_size, 3], tf.float32)
        self._crop_spec = crop
        self.logits = tf.function(self._logits, input_signature=[
            tf.TensorSpec([None, self.crop_size, self.crop_size, 3], tf.float32, name="images")])
        self.serve_image_bytes = tf.function(self._serve_image_bytes, input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes")])
        self.predict_images = tf.function(self._predict_images)
        for dtype in (tf.float32, tf.uint8):
            self.predict_images.get_concrete_function(
                tf.TensorSpec([None, None, None, 3], dtype, name="images"))

    def _logits(self, images):
        return tf.cast(self.model(images, training=False), tf.float32)

    def _outputs(self, crops):
        probabilities = tf.nn.softmax(self._logits(crops), axis=-1)
        scores, classes = tf.math.top_k(probabilities, k=self.k)
        return {
            "probabilities": probabilities,
            "top_k_classes": tf.cast(classes, tf.int32),
            "top_k_scores": scores,
            "top_k_labels": self.labels_table.lookup(tf.cast(classes, tf.int64)),
        }

    def _serve_image_bytes(self, image_bytes):
        crops = tf.map_fn(lambda b: data.preprocess_for_eval(data.decode_image(b), self.crop_size),
                          image_bytes, fn_output_signature=self._crop_spec)
        return self._outputs(crops)

    def _predict_images(self, images):
        crops = tf.map_fn(lambda image: data.preprocess_for_eval(image, self.crop_size),
                          images, fn_output_signature=self._crop_spec)
        return self._outputs(crops)


def next_version(export_dir):
    """The smallest integer version above every existing numeric subdirectory (1 if none)."""
    if not tf.io.gfile.isdir(export_dir):
        return 1
    versions = [int(name.rstrip("/")) for name in tf.io.gfile.listdir(export_dir)
                if re.fullmatch(r"\d+/?", name)]
    return max(versions, default=0) + 1


def export_saved_model(model, export_dir, labels=None, version=None):
    """Writes `model` as a TF Serving SavedModel under `export_dir/<version>/`.

    Args:
      model: Keras classifier from float32 [N, S, S, 3] mean-subtracted crops to logits
        [N, C] (build it under the float32 policy: serving runs on any CPU).
      export_dir: the model's base path (TF Serving's --model_base_path).
      labels: C label strings in class order, or None to use "0".."C-1".
      version: integer version; None takes the next free one.

    Returns:
      The path of the written version directory.
    """
    num_classes = int(model.output_shape[-1])
    image_size = int(model.input_shape[1])
    labels = [str(i) for i in range(num_classes)] if labels is None else [str(x) for x in labels]
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
        module = ServingModule(model, labels_path, image_size, min(TOP_K, num_classes))
        signatures = {
            SERVING_SIGNATURE: module.serve_image_bytes,
            PIXELS_SIGNATURE: module.predict_images.get_concrete_function(
                tf.TensorSpec([None, None, None, 3], tf.float32, name="images")),
        }
        local = "://" not in export_dir
        # TF Serving polls the base path: build the version in a hidden folder beside it and
        # rename it into place, so a half-written version is never loaded.
        target = os.path.join(export_dir, f".{version}.tmp-{uuid.uuid4().hex}") if local else final_path
        tf.saved_model.save(module, target, signatures=signatures)
        if local:
            os.rename(target, final_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final_path
