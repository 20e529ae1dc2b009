"""The features command's models: a Keras model (.keras file or checkpoint) or an exported SavedModel.

Both answer the same calls: their layer names, a layer's features, the class probabilities
and the class names; `load` picks the kind from the path. Grad-CAM maps need the gradient of
the Keras model: only a KerasModel has `gradcam`.
"""

import os
import sys

import tensorflow as tf

from alexnet_tf import explain
from alexnet_tf.cli import error_message
from alexnet_tf.config import ConfigError
from alexnet_tf.data import schema
from alexnet_tf.features.sources import PROGRAM, UsageError
from alexnet_tf.serving import embedding, saved_model, signatures
from alexnet_tf.weights import checkpointing


class KerasModel:
    """A Keras model (.keras file or training checkpoint): any layer, crops preprocessed here."""

    takes_crops = True

    def __init__(self, model, labels_dir, labels_path=None):
        self.model = model
        self.image_size = int(model.input_shape[1])
        self.labels_dir = labels_dir
        self.labels_path = labels_path
        self._functions = {}

    def layer_names(self):
        return embedding.layer_names(self.model)

    def _function(self, layer):
        if layer not in self._functions:
            model = self.model if layer is None else embedding.feature_model(self.model, layer)
            self._functions[layer] = tf.function(
                lambda crops: tf.cast(model(crops, training=False), tf.float32), reduce_retracing=True
            )
        return self._functions[layer]

    def features(self, crops, layer):
        return self._function(layer)(crops).numpy()

    def probabilities(self, crops):
        return tf.nn.softmax(self._function(None)(crops), axis=-1).numpy()

    @property
    def num_classes(self):
        return int(self.model.output_shape[-1])

    def gradcam(self, crops, layer, class_index=None):
        """(Grad-CAM maps [N, h, w] in [0, 1], the classes they explain [N], probabilities [N, C])."""
        heatmaps, classes, logits = explain.grad_cam(self.model, crops, class_index, layer)
        return heatmaps, classes, tf.nn.softmax(logits, axis=-1).numpy()

    def class_names(self, num_classes, fallback=()):
        """--labels, else labels.txt beside the model, else `fallback` if as long, else numbers.

        The last two say so on stderr: names taken from the data are only right if the model was
        trained on the same classes in the same order.
        """
        path = self.labels_path
        if path is None and self.labels_dir is not None:
            beside = os.path.join(self.labels_dir, schema.LABELS_FILENAME)
            path = beside if os.path.exists(beside) else None
        if path is None:
            missing = f"{PROGRAM}: no --labels and no {schema.LABELS_FILENAME} beside the model"
            if len(fallback) == num_classes:
                print(
                    f"{missing}: its {num_classes} classes are named after the data's labels, in "
                    "their order; pass --labels=FILE if the model's classes differ",
                    file=sys.stderr,
                )
                return list(fallback)
            other = f" (the data names {len(fallback)})" if len(fallback) else ""
            print(
                f"{missing}: its {num_classes} classes are shown by number{other}; "
                "pass --labels=FILE to name them",
                file=sys.stderr,
            )
            return [str(c) for c in range(num_classes)]
        try:
            names = [entry.name for entry in schema.read_labels(path)]
        except (OSError, ValueError, tf.errors.OpError) as e:
            raise UsageError(f"cannot read the labels file {path} ({error_message(e)})") from None
        if len(names) != num_classes:
            raise UsageError(
                f"{path} lists {len(names)} classes but the model has {num_classes}; "
                f"pass --labels=FILE with {num_classes} names, one per line"
            )
        return names


class SavedModel:
    """An exported SavedModel: its `features` (fc7) and `serving_default` signatures, on bytes."""

    takes_crops = False

    def __init__(self, path):
        self.path = saved_model.resolve_saved_model(path)
        self.loaded = tf.saved_model.load(self.path)
        self.image_size = int(self.loaded.image_size.numpy())
        self.max_batch = int(getattr(self.loaded, "max_batch", signatures.DEFAULT_MAX_BATCH))

    def layer_names(self):
        return [embedding.FEATURES_LAYER] if signatures.FEATURES_SIGNATURE in self.loaded.signatures else []

    def features(self, encoded, layer):
        del layer  # fc7, the only one a SavedModel has
        signature = self.loaded.signatures[signatures.FEATURES_SIGNATURE]
        return signature(image_bytes=encoded)["features"].numpy()

    def probabilities(self, encoded):
        return self.loaded.signatures[signatures.SERVING_SIGNATURE](image_bytes=encoded)[
            "probabilities"
        ].numpy()

    def class_names(self, num_classes, fallback=()):
        del fallback  # the export's labels asset always names every class
        path = self.loaded.labels_asset.asset_path.numpy().decode()
        with tf.io.gfile.GFile(path) as f:
            return [line.rstrip("\n") for line in f][:num_classes]


def load(path, labels_path=None):
    """A KerasModel or SavedModel for `--model`."""
    if not path.endswith(".keras") and tf.io.gfile.isdir(path):
        try:
            saved_model.resolve_saved_model(path)
            is_saved_model = True
        except FileNotFoundError:
            is_saved_model = False
        if is_saved_model:
            return SavedModel(path)
    try:
        model, labels_dir = checkpointing.load_model(path)
    except ConfigError as e:
        raise UsageError(
            f"{e} (--model): pass a .keras file, a model dir or checkpoint written by alexnet_tf.train, "
            "or an exported SavedModel"
        ) from None
    return KerasModel(model, labels_dir, labels_path)
