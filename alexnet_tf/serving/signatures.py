"""The serving contract: the SavedModel's signatures, its versioned layout and what a prediction is.

`export_saved_model` writes `export_dir/<version>/{saved_model.pb, variables/,
assets/labels.txt, assets.extra/tf_serving_warmup_requests}`, which `tensorflow_model_server
--model_base_path=/models/alexnet` serves as it is (docs/serving.md). Signatures:

- `serving_default`: `image_bytes` (tf.string [N], encoded JPEG/PNG/GIF/BMP; REST clients
  send `{"instances": [{"b64": "..."}]}`); bytes that are no image, a truncated JPEG, an image
  over `max_pixels` (read from its header before decoding) and a request over `max_batch`
  images fail the request with an InvalidArgumentError naming the item (docs/serving.md);
- `predict_images`: `images` (float32 [N, H, W, 3] pixels in [0, 255], any H and W; the
  loaded object's `predict_images` function also takes uint8);
- `serving_ten_crop`: `image_bytes` like `serving_default`, softmax averaged over the paper's
  ten crops (`preprocessing.ten_crop`, `metrics.ten_crop_probabilities`);
- `features` (models with an `fc7` layer, i.e. every AlexNet): `image_bytes` like
  `serving_default` (same limits and messages) -> `features`, float32 [N, 4096], the fc7
  activations of the centre crop that the paper's Figure 4 compares (`alexnet_tf.serving.embedding`).

All decode/preprocess with `preprocessing.decode_image` + `preprocessing.preprocess_for_eval` (or
`preprocessing.ten_crop`), the exact functions evaluation uses, and return `probabilities` float32
[N, C], `top_k_classes` int32 [N, k], `top_k_scores` float32 [N, k] and `top_k_labels` string
[N, k] (read from the `labels.txt` asset, one label per line in class order: `LabelEntry.text`).
The loaded object also has `logits(images)` on already-preprocessed float32 [N, S, S, 3] crops,
which `alexnet_tf.evaluate` uses for ten-crop evaluation, and the variables `image_size` and
`num_classes`.

Readers find versions with `resolve_saved_model` and read results with `top_k`/`format_result`
(`alexnet_tf.predict`, `alexnet_tf.client` and `alexnet_tf.evaluate` share them).
"""

import json
import os
import re
import shutil
import tempfile
import uuid

from absl import logging
import numpy as np
import tensorflow as tf

from alexnet_tf import metrics
from alexnet_tf.data import preprocessing, schema
from alexnet_tf.layers import grouped_conv_implementation
from alexnet_tf.serving import embedding

SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "predict_images"
TEN_CROP_SIGNATURE = "serving_ten_crop"
FEATURES_SIGNATURE = "features"
LABELS_ASSET = "labels.txt"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
TOP_K = 5
# Leading bytes of what tf.io.decode_image reads; checked first so that a request with other
# bytes fails with a message that names the item, not only "Unknown image file format".
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")
# What one request may cost (docs/serving.md). 40 MP is above any camera photo in ImageNet
# (its largest are ~12 MP) and a 40 MP image costs ~0.6 GB while it is decoded and resized
# (uint8 pixels + the float32 square the antialiased resize reads); 64 images per request.
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BATCH = 64
# A JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling: cost and memory drop
# with the square of the ratio) only while its shorter side stays >= this many times the
# 256-pixel resize target. With 4 the antialiased resize still shrinks by >= 4x and the
# 224 crop differs from the full decode's by < 1 grey level on average (tests/test_export.py);
# with 2 (the converter's margin) a texture near the crop's Nyquist limit differed by up to
# 6 levels, from the central square's offset rounding to whole pixels at the smaller scale.
_JPEG_SCALE_MARGIN = 4
_JPEG_RATIOS = (1, 2, 4, 8)
# Most JPEG segments scanned for the frame header (real files have < 30 before it).
_JPEG_MAX_SEGMENTS = 1000


class ServingModule(tf.Module):
    """The exported object: a float32 Keras classifier plus preprocessing, top-k labels, fc7 features.

    Args:
      model: Keras model mapping float32 [N, S, S, 3] mean-subtracted crops to logits [N, C].
      labels_path: text file with one label per line, C lines, class order.
      image_size: S, the crop size the model takes.
      top_k: how many classes the top-k outputs hold (min(5, C) by default).
      max_pixels: an image with more pixels (width x height, read from its header before
        anything is decoded) fails the request with an InvalidArgumentError naming it.
      max_batch: a request with more images fails with an InvalidArgumentError.
    """

    def __init__(
        self,
        model,
        labels_path,
        image_size,
        top_k,
        max_pixels=DEFAULT_MAX_PIXELS,
        max_batch=DEFAULT_MAX_BATCH,
    ):
        super().__init__(name="alexnet_serving")
        if int(max_pixels) < 1 or int(max_batch) < 1:
            raise ValueError(
                f"export: max_pixels ({max_pixels}) and max_batch ({max_batch}) must be at least 1"
            )
        self.max_pixels, self.max_batch = int(max_pixels), int(max_batch)
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
            tf.lookup.TextFileInitializer(
                self.labels_asset,
                tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER,
                tf.string,
                tf.lookup.TextFileIndex.WHOLE_LINE,
            ),
            default_value="",
        )
        self._crop_spec = tf.TensorSpec([self.crop_size, self.crop_size, 3], tf.float32)
        self._ten_crop_spec = tf.TensorSpec([10, self.crop_size, self.crop_size, 3], tf.float32)
        bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")
        self.logits = tf.function(
            self._logits,
            input_signature=[
                tf.TensorSpec([None, self.crop_size, self.crop_size, 3], tf.float32, name="images")
            ],
        )
        # Decoding to centre crops is one function that serving_default and features both call:
        # traced and saved once.
        self._center_crops = tf.function(self._center_crops, input_signature=[bytes_spec])
        self.serve_image_bytes = tf.function(self._serve_image_bytes, input_signature=[bytes_spec])
        self.serve_ten_crop = tf.function(self._serve_ten_crop, input_signature=[bytes_spec])
        self.predict_images = tf.function(self._predict_images)
        # The fc7 embedding, when the model has that layer (any AlexNet; not a stand-in model).
        self.serve_features = None
        if embedding.has_layer(model, embedding.FEATURES_LAYER):
            self.feature_model = embedding.feature_model(model, embedding.FEATURES_LAYER)
            self.serve_features = tf.function(self._serve_features, input_signature=[bytes_spec])
        for dtype in (tf.float32, tf.uint8):
            self.predict_images.get_concrete_function(
                tf.TensorSpec([None, None, None, 3], dtype, name="images")
            )

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

    def _check_batch(self, batch_size, what):
        message = tf.strings.format(
            "request has {} "
            + what
            + ", over the limit of "
            + str(self.max_batch)
            + " per request (max_batch); send them in smaller requests",
            batch_size,
        )
        return tf.debugging.Assert(batch_size <= self.max_batch, [message])

    def image_header(self, index, encoded):
        """int32 [height, width, ratio] of one encoded image, from its header; asserts the limits.

        Nothing is decoded: the size comes from the JPEG frame header (SOFn), PNG IHDR, GIF
        logical screen or BMP info header, so an image over `max_pixels` costs only this. A
        JPEG must also hold an end-of-image marker after its frame header: a truncated one
        would otherwise fail inside the decoder with no word of which item it was.
        """
        length = tf.strings.length(encoded)
        head = _bytes_at(encoded, 0, 26)
        fmt = tf.stack([tf.reduce_all(head[: len(m)] == list(m)) for m in _MAGIC])
        is_jpeg, is_png, is_gif, _ = tf.unstack(fmt)
        known = tf.reduce_any(fmt)
        shown = tf.strings.substr(encoded, 0, 4)
        check_known = tf.debugging.Assert(
            known,
            [
                tf.strings.format(
                    "image_bytes[{}] is not a JPEG, PNG, GIF or BMP image ({} bytes starting with {})",
                    (index, length, shown),
                )
            ],
        )
        with tf.control_dependencies([check_known]):
            jpeg_height, jpeg_width, jpeg_state = tf.cond(
                is_jpeg, lambda: _jpeg_size(encoded), lambda: (0, 0, _JPEG_FOUND)
            )
        b = tf.cast(head, tf.int64)
        height = tf.case(
            [
                (is_jpeg, lambda: tf.cast(jpeg_height, tf.int64)),
                (is_png, lambda: b[20] * 2**24 + b[21] * 2**16 + b[22] * 2**8 + b[23]),
                (is_gif, lambda: b[8] + b[9] * 2**8),
            ],
            default=lambda: tf.abs(_int32_le(head[22:26])),
        )  # BMP: negative = top-down
        width = tf.case(
            [
                (is_jpeg, lambda: tf.cast(jpeg_width, tf.int64)),
                (is_png, lambda: b[16] * 2**24 + b[17] * 2**16 + b[18] * 2**8 + b[19]),
                (is_gif, lambda: b[6] + b[7] * 2**8),
            ],
            default=lambda: tf.abs(_int32_le(head[18:22])),
        )
        min_length = tf.where(is_jpeg, 4, tf.where(is_png, 24, tf.where(is_gif, 10, 26)))
        check_header = tf.debugging.Assert(
            tf.logical_and(length >= min_length, tf.equal(jpeg_state, _JPEG_FOUND)),
            [
                tf.strings.join(
                    [
                        tf.strings.format("image_bytes[{}] is a truncated or corrupt image: ", index),
                        tf.gather(_JPEG_PROBLEMS, jpeg_state),
                        "; send the whole file",
                    ]
                )
            ],
        )
        with tf.control_dependencies([check_header]):
            pixels = height * width
        check_size = tf.debugging.Assert(
            pixels <= self.max_pixels,
            [
                tf.strings.format(
                    "image_bytes[{}] is {}x{} pixels ({}), over the limit of "
                    + str(self.max_pixels)
                    + " pixels per image (max_pixels); send a smaller image",
                    (index, width, height, pixels),
                )
            ],
        )
        with tf.control_dependencies([check_size]):
            check_end = tf.cond(is_jpeg, lambda: _jpeg_has_end(encoded), lambda: True)
        check_whole = tf.debugging.Assert(
            check_end,
            [
                tf.strings.format(
                    "image_bytes[{}] is a truncated JPEG: no end-of-image marker after its {}x{} frame "
                    "header; send the whole file",
                    (index, width, height),
                )
            ],
        )
        shorter = tf.minimum(height, width)
        target = _JPEG_SCALE_MARGIN * preprocessing.RESIZE_SHORTER
        ratio = tf.constant(1, tf.int64)
        for r in _JPEG_RATIOS[1:]:
            ratio = tf.where(tf.logical_and(is_jpeg, shorter >= r * target), tf.constant(r, tf.int64), ratio)
        with tf.control_dependencies([check_whole]):
            return tf.cast(tf.stack([height, width, ratio]), tf.int32)

    def _decode_all(self, image_bytes, preprocess, spec):
        """Checks every item's header (limits, format, truncation), then decodes and preprocesses.

        All headers are checked before anything is decoded. Decoding runs up to 10 items at once
        (tf.map_fn's default) only while the request's decoded pixels add up to at most
        `max_pixels`; a heavier request decodes one item at a time, so that its peak memory is
        that of its largest image, whatever the batch size.
        """
        batch_size = tf.shape(image_bytes, out_type=tf.int32)[0]
        with tf.control_dependencies([self._check_batch(batch_size, "images")]):
            indices = tf.range(batch_size)
        headers = tf.map_fn(
            lambda args: self.image_header(*args),
            (indices, image_bytes),
            fn_output_signature=tf.TensorSpec([3], tf.int32),
        )

        def decode_one(args):
            encoded, ratio = args
            branches = [lambda: preprocessing.decode_image(encoded)] + [
                (lambda r=r: tf.io.decode_jpeg(encoded, channels=3, ratio=r)) for r in _JPEG_RATIOS[1:]
            ]
            image = tf.switch_case(tf.reduce_sum(tf.cast(ratio >= _JPEG_RATIOS[1:], tf.int32)), branches)
            image.set_shape([None, None, 3])
            return preprocess(image, self.crop_size)

        decoded = tf.reduce_sum(
            tf.cast(headers[:, 0] // headers[:, 2], tf.int64)
            * tf.cast(headers[:, 1] // headers[:, 2], tf.int64)
        )

        def decode(parallel):
            return lambda: tf.map_fn(
                decode_one,
                (image_bytes, headers[:, 2]),
                fn_output_signature=spec,
                parallel_iterations=parallel,
            )

        return tf.cond(decoded <= self.max_pixels, decode(10), decode(1))

    def _center_crops(self, image_bytes):
        return self._decode_all(image_bytes, preprocessing.preprocess_for_eval, self._crop_spec)

    def _serve_image_bytes(self, image_bytes):
        crops = self._center_crops(image_bytes)
        return self._outputs(tf.nn.softmax(self._logits(crops), axis=-1))

    def _serve_features(self, image_bytes):
        crops = self._center_crops(image_bytes)
        return {"features": tf.cast(self.feature_model(crops, training=False), tf.float32)}

    def _serve_ten_crop(self, image_bytes):
        crops = self._decode_all(image_bytes, preprocessing.ten_crop, self._ten_crop_spec)
        # The paper's test, as alexnet_tf.evaluate and the trainer run it.
        return self._outputs(metrics.ten_crop_probabilities(self._logits, crops))

    def _predict_images(self, images):
        shape = tf.shape(images, out_type=tf.int64)
        checks = [
            self._check_batch(shape[0], "images"),
            tf.debugging.Assert(
                shape[1] * shape[2] <= self.max_pixels,
                [
                    tf.strings.format(
                        "images are {}x{} pixels, over the limit of "
                        + str(self.max_pixels)
                        + " pixels per image (max_pixels); send smaller images",
                        (shape[2], shape[1]),
                    )
                ],
            ),
        ]
        with tf.control_dependencies(checks):
            images = tf.identity(images)
        crops = tf.map_fn(
            lambda image: preprocessing.preprocess_for_eval(image, self.crop_size),
            images,
            fn_output_signature=self._crop_spec,
        )
        return self._outputs(tf.nn.softmax(self._logits(crops), axis=-1))


# States of the JPEG frame-header scan, and what they mean as an error.
_JPEG_SCANNING, _JPEG_FOUND, _JPEG_NO_FRAME, _JPEG_NOT_MARKER, _JPEG_CUT = range(5)
_JPEG_PROBLEMS = [
    "the JPEG frame header was not found in the first segments",
    "",
    "the JPEG has no frame header before its image data",
    "the JPEG's segments do not follow one another",
    "the file ends inside the JPEG header",
]


def _bytes_at(encoded, position, count):
    """uint8 [count]: the bytes of a scalar string from `position`, zero-padded past its end."""
    position = tf.minimum(tf.cast(position, tf.int32), tf.strings.length(encoded))
    piece = tf.strings.join([tf.strings.substr(encoded, position, count), b"\0" * count])
    return tf.reshape(tf.io.decode_raw(tf.strings.substr(piece, 0, count), tf.uint8), [count])


def _int32_le(four):
    value = tf.reduce_sum(tf.cast(four, tf.int64) * [1, 2**8, 2**16, 2**24])
    return tf.where(value >= 2**31, value - 2**32, value)


def _jpeg_size(encoded):
    """(height, width, state) of a JPEG from its frame header (SOF0..SOF15), walking the segments."""
    length = tf.strings.length(encoded)

    def body(position, state, height, width):
        b = tf.cast(_bytes_at(encoded, position, 9), tf.int32)
        marker = b[1]
        is_frame = (
            (marker >= 0xC0) & (marker <= 0xCF) & (marker != 0xC4) & (marker != 0xC8) & (marker != 0xCC)
        )
        standalone = (marker == 0x01) | ((marker >= 0xD0) & (marker <= 0xD8))
        state = tf.where(
            position + 4 > length,
            _JPEG_CUT,
            tf.where(
                b[0] != 0xFF,
                _JPEG_NOT_MARKER,
                tf.where(
                    is_frame,
                    tf.where(position + 9 > length, _JPEG_CUT, _JPEG_FOUND),
                    tf.where((marker == 0xD9) | (marker == 0xDA), _JPEG_NO_FRAME, _JPEG_SCANNING),
                ),
            ),
        )
        step = tf.where(marker == 0xFF, 1, tf.where(standalone, 2, 2 + b[2] * 256 + b[3]))
        found = tf.equal(state, _JPEG_FOUND)
        return (
            tf.where(tf.equal(state, _JPEG_SCANNING), position + step, position),
            state,
            tf.where(found, b[5] * 256 + b[6], height),
            tf.where(found, b[7] * 256 + b[8], width),
        )

    _, state, height, width = tf.while_loop(
        lambda position, state, *_: tf.equal(state, _JPEG_SCANNING),
        body,
        (tf.constant(2), tf.constant(_JPEG_SCANNING), tf.constant(0), tf.constant(0)),
        maximum_iterations=_JPEG_MAX_SEGMENTS,
    )
    return height, width, state


def _jpeg_has_end(encoded):
    """Whether a JPEG holds an end-of-image marker (FF D9) after its first 2 bytes.

    Entropy-coded data never holds FF D9 (a data byte FF is stuffed as FF 00), so a file cut
    short has none, unless an embedded EXIF thumbnail ends before the cut; bytes after the
    marker (e.g. a phone's appended video) are allowed. The last 64 bytes are looked at first.
    """
    length = tf.strings.length(encoded)
    tail = tf.strings.substr(encoded, tf.maximum(length - 64, 2), 64)
    found_in_tail = tf.size(tf.strings.split(tail, sep=b"\xff\xd9")) > 1
    return tf.cond(
        found_in_tail,
        lambda: True,
        lambda: tf.size(tf.strings.split(tf.strings.substr(encoded, 2, length), sep=b"\xff\xd9")) > 1,
    )


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


# ----------------------------------------------------------------------------- readers


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


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def top_k(outputs, row=0):
    """[(label, score, class), ...] of row `row` of a signature's outputs (tensors, arrays or lists)."""
    labels, scores, classes = (
        list(outputs[k][row]) for k in ("top_k_labels", "top_k_scores", "top_k_classes")
    )
    return [(_text(label), float(s), int(c)) for label, s, c in zip(labels, scores, classes)]


def format_result(name, predictions, as_json=False):
    """One file's result: JSON on one line, or the name then one `  score  label` line per class."""
    if as_json:
        return json.dumps(
            {
                "file": name,
                "predictions": [
                    {"label": label, "score": round(s, 6), "class": c} for label, s, c in predictions
                ],
            }
        )
    return "\n".join([name] + [f"  {s:7.4f}  {label} ({c})" for label, s, c in predictions])
