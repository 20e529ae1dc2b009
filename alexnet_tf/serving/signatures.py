"""The serving contract: the signatures of the SavedModel that `alexnet_tf.serving.saved_model` writes.

Signatures:

- `serving_default`: `image_bytes` (tf.string [N], encoded JPEG/PNG/GIF/BMP; REST clients
  send `{"instances": [{"b64": "..."}]}`); bytes that are no image, a truncated JPEG, an image
  over `max_pixels` (read from its header before decoding, `alexnet_tf.serving.limits`) and a
  request over `max_batch` images fail the request with an InvalidArgumentError naming the item
  (docs/serving.md);
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
`num_classes`. Readers turn the outputs into text with `alexnet_tf.serving.results`.
"""

import tensorflow as tf

from alexnet_tf import metrics
from alexnet_tf.data import preprocessing
from alexnet_tf.serving import embedding, limits

SERVING_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "predict_images"
TEN_CROP_SIGNATURE = "serving_ten_crop"
FEATURES_SIGNATURE = "features"
# What one request may cost (docs/serving.md). 40 MP is above any camera photo in ImageNet
# (its largest are ~12 MP) and a 40 MP image costs ~0.6 GB while it is decoded and resized
# (uint8 pixels + the float32 square the antialiased resize reads); 64 images per request.
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BATCH = 64


class _Untracked:
    """Holds Keras models out of tf.Module's attribute tracking (a plain object is not tracked)."""

    def __init__(self, **models):
        self.__dict__.update(models)


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
        # The Keras models are called, not tracked: tracking them saved every weight twice (once
        # through Keras' own variable objects, once as the tf.Variables below), doubling the
        # SavedModel's size. The functions capture the tf.Variables, which are tracked here: unless
        # they are, the SavedModel's TF1 restore ops miss them and TF Serving / `saved_model_cli run`
        # fail with "Could not find variable" (keras-team/keras#19274; keras.export.ExportArchive
        # does the same).
        self._models = _Untracked(model=model)
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
            self._models.feature_model = embedding.feature_model(model, embedding.FEATURES_LAYER)
            self.serve_features = tf.function(self._serve_features, input_signature=[bytes_spec])
        for dtype in (tf.float32, tf.uint8):
            self.predict_images.get_concrete_function(
                tf.TensorSpec([None, None, None, 3], dtype, name="images")
            )

    def _logits(self, images):
        return tf.cast(self._models.model(images, training=False), tf.float32)

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
            lambda args: limits.image_header(*args, self.max_pixels),
            (indices, image_bytes),
            fn_output_signature=tf.TensorSpec([3], tf.int32),
        )

        def decode_one(args):
            encoded, ratio = args
            branches = [lambda: preprocessing.decode_image(encoded)] + [
                (lambda r=r: tf.io.decode_jpeg(encoded, channels=3, ratio=r)) for r in limits.JPEG_RATIOS[1:]
            ]
            image = tf.switch_case(
                tf.reduce_sum(tf.cast(ratio >= limits.JPEG_RATIOS[1:], tf.int32)), branches
            )
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
        return {"features": tf.cast(self._models.feature_model(crops, training=False), tf.float32)}

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
