"""Owns the serving SavedModel: TF Serving's versioned layout, its signatures and warm-up requests.

    python -m alexnet_tf.export --checkpoint=/runs/alexnet --export_dir=models/alexnet [--version=N]
    python -m alexnet_tf.export --checkpoint=alexnet.keras --export_dir=models/alexnet --format=onnx

writes `export_dir/<version>/{saved_model.pb, variables/, assets/labels.txt,
assets.extra/tf_serving_warmup_requests}`, which `tensorflow_model_server
--model_base_path=/models/alexnet` serves as it is (docs/serving.md). Signatures:

- `serving_default`: `image_bytes` (tf.string [N], encoded JPEG/PNG/GIF/BMP; REST clients
  send `{"instances": [{"b64": "..."}]}`); bytes that are no image fail the request with an
  InvalidArgumentError naming the item;
- `predict_images`: `images` (float32 [N, H, W, 3] pixels in [0, 255], any H and W; the
  loaded object's `predict_images` function also takes uint8);
- `serving_ten_crop`: `image_bytes` like `serving_default`, softmax averaged over the paper's
  ten crops (`data.ten_crop`).

All decode/preprocess with `data.decode_image` + `data.preprocess_for_eval` (or
`data.ten_crop`), the exact functions evaluation uses, and return `probabilities` float32
[N, C], `top_k_classes` int32 [N, k], `top_k_scores` float32 [N, k] and `top_k_labels` string
[N, k] (read from the `labels.txt` asset, one label per line in class order; "synset name"
when the labels come from a labels file). The loaded object also has `logits(images)` on
already-preprocessed float32 [N, S, S, 3] crops, which `alexnet_tf.evaluate` uses for ten-crop
evaluation, and the variables `image_size` and `num_classes`.
"""

import os
import re
import shutil
import sys
import tempfile
import uuid

from absl import app, flags, logging
import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import data
from alexnet_tf.checkpointing import restore_model
from alexnet_tf.config import ConfigError
from alexnet_tf.layers import grouped_conv_implementation

FLAGS = flags.FLAGS

SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "predict_images"
TEN_CROP_SIGNATURE = "serving_ten_crop"
LABELS_ASSET = "labels.txt"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
TOP_K = 5
# Leading bytes of what tf.io.decode_image reads; checked first so that a request with other
# bytes fails with a message that names the item, not only "Unknown image file format".
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


def define_flags(flag_values=FLAGS):
    """Defines the flags on `flag_values` (only the entry point calls this: importing defines none)."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string("checkpoint", None, "A .keras file, or a model dir, checkpoints dir or "
                        "checkpoint prefix written by alexnet_tf.train.", **fv)
    flags.DEFINE_string("export_dir", None, "SavedModel base path (TF Serving's --model_base_path); "
                        "with --format=onnx a .onnx file or a folder for model.onnx.", **fv)
    flags.DEFINE_integer("version", None, "Version folder number; default: the next free one.", **fv)
    flags.DEFINE_string("labels", None, "Labels file (index<TAB>synset<TAB>name lines, or one "
                        "label per line); default: labels.txt beside the checkpoint, else class numbers.", **fv)
    flags.DEFINE_enum("format", "saved_model", ["saved_model", "onnx"], "What to write.", **fv)


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
        # Keras 3 variables wrap tf.Variables; unless those are tracked here too, the SavedModel's
        # TF1 restore ops miss them and TF Serving / `saved_model_cli run` fail with "Could not
        # find variable" (keras-team/keras#19274; keras.export.ExportArchive does the same).
        self.model_variables = [v.value for v in model.variables]
        self.crop_size = int(image_size)
        self.k = int(top_k)
        self.image_size = tf.Variable(self.crop_size, trainable=False, name="image_size")
        self.num_classes = tf.Variable(int(model.output_shape[-1]), trainable=False, name="num_classes")
        self.labels_asset = tf.saved_model.Asset(labels_path)
        self.labels_table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(self.labels_asset, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                                          tf.string, tf.lookup.TextFileIndex.WHOLE_LINE),
            default_value="")
        self._crop_spec = tf.TensorSpec([self.crop_size, self.crop_size, 3], tf.float32)
        self._ten_crop_spec = tf.TensorSpec([10, self.crop_size, self.crop_size, 3], tf.float32)
        bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")
        self.logits = tf.function(self._logits, input_signature=[
            tf.TensorSpec([None, self.crop_size, self.crop_size, 3], tf.float32, name="images")])
        self.serve_image_bytes = tf.function(self._serve_image_bytes, input_signature=[bytes_spec])
        self.serve_ten_crop = tf.function(self._serve_ten_crop, input_signature=[bytes_spec])
        self.predict_images = tf.function(self._predict_images)
        for dtype in (tf.float32, tf.uint8):
            self.predict_images.get_concrete_function(
                tf.TensorSpec([None, None, None, 3], dtype, name="images"))

    def _logits(self, images):
        return tf.cast(self.model(images, training=False), tf.float32)

    def _outputs(self, probabilities):
        scores, classes = tf.math.top_k(probabilities, k=self.k)
        return {
            "probabilities": probabilities,
            "top_k_classes": tf.cast(classes, tf.int32),
            "top_k_scores": scores,
            "top_k_labels": self.labels_table.lookup(tf.cast(classes, tf.int64)),
        }

    def _decode_all(self, image_bytes, preprocess, spec):
        def decode_one(args):
            index, encoded = args
            head = tf.strings.substr(encoded, 0, 4)
            known = tf.reduce_any([tf.strings.substr(head, 0, len(m)) == m for m in _MAGIC])
            message = tf.strings.format(
                "image_bytes[{}] is not a JPEG, PNG, GIF or BMP image ({} bytes starting with {})",
                (index, tf.strings.length(encoded), head))
            check = tf.debugging.Assert(known, [message])
            with tf.control_dependencies([check]):
                return preprocess(data.decode_image(tf.identity(encoded)), self.crop_size)

        indices = tf.range(tf.shape(image_bytes, out_type=tf.int32)[0])
        return tf.map_fn(decode_one, (indices, image_bytes), fn_output_signature=spec)

    def _serve_image_bytes(self, image_bytes):
        crops = self._decode_all(image_bytes, data.preprocess_for_eval, self._crop_spec)
        return self._outputs(tf.nn.softmax(self._logits(crops), axis=-1))

    def _serve_ten_crop(self, image_bytes):
        crops = self._decode_all(image_bytes, data.ten_crop, self._ten_crop_spec)
        logits = self._logits(tf.reshape(crops, [-1, self.crop_size, self.crop_size, 3]))
        # The paper's test: the softmax of the ten crops averaged (as alexnet_tf.evaluate does).
        probabilities = tf.reduce_mean(tf.nn.softmax(tf.reshape(logits, [-1, 10, logits.shape[-1]])), axis=1)
        return self._outputs(probabilities)

    def _predict_images(self, images):
        crops = tf.map_fn(lambda image: data.preprocess_for_eval(image, self.crop_size),
                          images, fn_output_signature=self._crop_spec)
        return self._outputs(tf.nn.softmax(self._logits(crops), axis=-1))


def next_version(export_dir):
    """The smallest integer version above every existing numeric subdirectory (1 if none)."""
    if not tf.io.gfile.isdir(export_dir):
        return 1
    versions = [int(name.rstrip("/")) for name in tf.io.gfile.listdir(export_dir)
                if re.fullmatch(r"\d+/?", name)]
    return max(versions, default=0) + 1


def _label_text(label):
    if isinstance(label, data.LabelEntry):
        return label.synset if label.name == label.synset else f"{label.synset} {label.name}"
    return str(label)


def warmup_images(seed=0):
    """Two small encoded images (JPEG 300x200, PNG 180x240) for warm-up requests and smoke tests."""
    rng = np.random.default_rng(seed)
    pixels = [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in ((300, 200, 3), (180, 240, 3))]
    return [tf.io.encode_jpeg(pixels[0]).numpy(), tf.io.encode_png(pixels[1]).numpy()]


def write_warmup_requests(version_dir, model_name="alexnet"):
    """Writes `assets.extra/tf_serving_warmup_requests`: PredictionLog records TF Serving replays on load.

    One request per signature (batch 1 on the bytes signatures, batch 2 of pixels), so every
    graph is traced before the first real request. Needs tensorflow-serving-api.

    Returns:
      The file's path.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2  # pylint: disable=g-import-not-at-top

    jpeg, png = warmup_images()
    inputs = {
        SERVING_SIGNATURE: ("image_bytes", tf.make_tensor_proto([jpeg], dtype=tf.string, shape=[1])),
        TEN_CROP_SIGNATURE: ("image_bytes", tf.make_tensor_proto([png], dtype=tf.string, shape=[1])),
        PIXELS_SIGNATURE: ("images", tf.make_tensor_proto(np.full((2, 256, 256, 3), 128.0, np.float32))),
    }
    path = os.path.join(version_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for signature, (name, tensor) in inputs.items():
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
                name=model_name, signature_name=signature))
            request.inputs[name].CopyFrom(tensor)
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def export_saved_model(model, export_dir, labels=None, version=None, warmup=True):
    """Writes `model` as a TF Serving SavedModel under `export_dir/<version>/`.

    Args:
      model: Keras classifier from float32 [N, S, S, 3] mean-subtracted crops to logits
        [N, C] (build it under the float32 policy: serving runs on any CPU).
      export_dir: the model's base path (TF Serving's --model_base_path).
      labels: C labels in class order (strings, or `data.LabelEntry`s, saved as
        "synset name"), or None to use "0".."C-1".
      version: integer version; None takes the next free one.
      warmup: also write `assets.extra/tf_serving_warmup_requests` (skipped with a
        warning when tensorflow-serving-api is not installed).

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
            module = ServingModule(model, labels_path, image_size, min(TOP_K, num_classes))
            signatures = {
                SERVING_SIGNATURE: module.serve_image_bytes,
                TEN_CROP_SIGNATURE: module.serve_ten_crop,
                PIXELS_SIGNATURE: module.predict_images.get_concrete_function(
                    tf.TensorSpec([None, None, None, 3], tf.float32, name="images")),
            }
            tf.saved_model.save(module, target, signatures=signatures)
        if warmup:
            try:
                write_warmup_requests(target, model_name=os.path.basename(os.path.normpath(export_dir)))
            except ImportError:
                logging.warning("tensorflow-serving-api is not installed: no warm-up requests written")
        if local:
            os.rename(target, final_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final_path


# ----------------------------------------------------------------------------- command line


def load_model(path):
    """(Keras model, directory to look for labels.txt in) from a `.keras` file or a training checkpoint."""
    if path.endswith(".keras"):
        if not tf.io.gfile.exists(path):
            raise ConfigError(f"no such file: {path}")
        return keras.models.load_model(path, compile=False), os.path.dirname(path)
    if not tf.io.gfile.exists(path):
        raise ConfigError(f"no checkpoint or .keras file at {path}")
    model, prefix = restore_model(path)
    return model, os.path.dirname(os.path.dirname(prefix))


def read_labels(path):
    """Labels of a labels file: `data.LabelEntry`s for index<TAB>synset<TAB>name lines, else the lines."""
    with tf.io.gfile.GFile(path, "r") as f:
        lines = [line.rstrip("\r\n") for line in f if line.strip()]
    if lines and all("\t" in line and line.split("\t", 1)[0].isdigit() for line in lines):
        return data.read_labels_file(path)
    return [line.strip() for line in lines]


def run(checkpoint, export_dir, version=None, labels_path=None, export_format="saved_model"):
    """The command line's work: loads the model and writes a SavedModel version or an ONNX file.

    Returns:
      The written version directory or .onnx file.
    """
    model, model_dir = load_model(checkpoint)
    if export_format == "onnx":
        from alexnet_tf import onnx_export  # pylint: disable=g-import-not-at-top  (tf2onnx only when asked)
        path = export_dir if export_dir.endswith(".onnx") else os.path.join(export_dir, "model.onnx")
        return onnx_export.export_onnx(model, path)
    if labels_path is None and tf.io.gfile.exists(os.path.join(model_dir, data.LABELS_FILENAME)):
        labels_path = os.path.join(model_dir, data.LABELS_FILENAME)
    labels = read_labels(labels_path) if labels_path else None
    return export_saved_model(model, export_dir, labels=labels, version=version)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.checkpoint or not FLAGS.export_dir:
        raise app.UsageError("--checkpoint and --export_dir are required")
    try:
        path = run(FLAGS.checkpoint, FLAGS.export_dir, FLAGS.version, FLAGS.labels, FLAGS.format)
    except (ConfigError, ValueError, OSError) as e:
        print(f"alexnet_tf.export: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(path)


if __name__ == "__main__":
    define_flags()
    app.run(main)
