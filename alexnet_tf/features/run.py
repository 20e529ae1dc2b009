"""The features command: a layer's activations, nearest neighbours and top-5 pictures.

    python -m alexnet_tf.features --model=model.keras --layer=fc7 --output=features.npz a.jpg photos/
    python -m alexnet_tf.features --model=/runs/alexnet --data_dir=/data/imagenet --split=validation \\
        --output=features.npz
    python -m alexnet_tf.features --model=model.keras --neighbours=query1.jpg,query2.jpg \\
        --gallery=photos/ --output=neighbours.png
    python -m alexnet_tf.features --model=model.keras --predictions --output=predictions.png a.jpg b.jpg

`--model` is a `.keras` file, a training checkpoint (model dir, checkpoints dir or prefix) or an
exported SavedModel (version dir or base dir; its `features` signature gives fc7 only).
Images are image files and folders (searched recursively; as for the converter, content
decides, not names: JPEG, PNG, GIF, BMP and WebP are read, other files named and skipped,
hidden files left out), or the TFRecord shards `<split>-*` of a converted data dir. Every image
goes through the centre crop of evaluation and serving (`preprocessing.preprocess_for_eval` on
`preprocessing.decode_image`; `alexnet_tf.data.make_dataset(training=False)` computes the same
crops), in batches, with a progress line on stderr.

- features: `--output=*.npz` holds `features` (float32 [N, ...], the layer's output),
  `files` (file paths, or the records' `image/filename`), `labels` (int32 [N], 0-based, -1
  when unknown), `label_names` (the data dir's class names, if any), `layer` and `model`;
- `--neighbours=Q1,Q2,... --gallery=DIR`: for each query image the `--num_neighbours` (6)
  gallery images nearest by the Euclidean distance of fc7 features, drawn one row per query
  (the paper's Figure 4, right); DIR is a folder of images or a converted data dir;
- `--predictions`: the images with their top-5 labels as bars, the true label in red when a
  data dir knows it (Figure 4, left), at most `--max_images` (default 16) of them. Class
  names: `--labels`, else labels.txt beside the model, else the data dir's when it has as
  many classes as the model, else class numbers (a SavedModel has its own).

`--max_images` (at least 1) also bounds the features file and the neighbours' gallery.

An image that cannot be read or decoded, and the records a corrupt, truncated or missing shard
lost (counted from manifest.json), are named on stderr and skipped; the output is written for
the others, a last line says how many images went in and how many were skipped, and the exit
status is 1. Bad flags, a model or data dir that cannot be read end with one
`alexnet_tf.features: error: ...` line and status 2.
"""

import dataclasses
import os
import sys
import uuid

from absl import flags
import numpy as np
import tensorflow as tf

from alexnet_tf import cli
from alexnet_tf.cli import error_message
from alexnet_tf.config import ConfigError
from alexnet_tf.data import convert, pipelines, preprocessing, schema
from alexnet_tf.features import figures
from alexnet_tf.serving import embedding, signatures
from alexnet_tf.weights import checkpointing

FLAGS = flags.FLAGS
PROGRAM = "alexnet_tf.features"
IMAGE_FORMATS = "JPEG, PNG, GIF, BMP or WebP"  # what preprocessing.decode_image reads
DEFAULT_PICTURE_IMAGES = 16


def define_flags(flag_values=FLAGS):
    """Defines the flags on `flag_values` (only the entry point calls this: importing defines none)."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string(
        "model", None, "A .keras file, a training checkpoint or model dir, or an exported SavedModel.", **fv
    )
    flags.DEFINE_string("layer", "fc7", "The layer whose output is the feature (any layer name).", **fv)
    flags.DEFINE_string("data_dir", None, "A converted data dir: read its <split>-* TFRecord shards.", **fv)
    flags.DEFINE_string("split", "validation", "Shard prefix in --data_dir and a data-dir --gallery.", **fv)
    flags.DEFINE_integer(
        "label_offset", None, "Subtracted from stored labels; default: from the data dir.", **fv
    )
    flags.DEFINE_string("output", None, "features.npz, or a .png for --neighbours/--predictions.", **fv)
    flags.DEFINE_integer("batch_size", 64, "Images per forward pass.", **fv)
    flags.DEFINE_integer(
        "max_images",
        None,
        f"Read at most this many images (of the gallery with --neighbours); default: all, "
        f"{DEFAULT_PICTURE_IMAGES} with --predictions.",
        **fv,
    )
    flags.DEFINE_list("neighbours", None, "Query images (files or folders) for the neighbours picture.", **fv)
    flags.DEFINE_string("gallery", None, "Folder of images, or converted data dir, to search.", **fv)
    flags.DEFINE_integer("num_neighbours", 6, "Nearest gallery images shown per query.", **fv)
    flags.DEFINE_bool("predictions", False, "Draw the images with their top-5 predictions.", **fv)
    flags.DEFINE_string(
        "labels", None, "Class names of the model (labels.txt); default: labels.txt beside it.", **fv
    )
    flags.DEFINE_integer("thumbnail_size", 128, "Side of each image in the pictures, in pixels.", **fv)


class UsageError(ValueError):
    """A flag or input that cannot work: one line on stderr, status 2."""


# ----------------------------------------------------------------------------- images


@dataclasses.dataclass
class Source:
    """Images in a fixed order: files, or the records of TFRecord shards.

    `elements()` is a tf.data.Dataset of (index int64, name string, label int32, encoded
    bytes); index is the image's position in that order. Positions that give no image (a file
    that cannot be read, the records a damaged shard lost) are recorded with `skip`, so that
    every position is either given or named: `failures` lists them in order.
    """

    files: list = None  # image paths, or None for TFRecords
    shards: list = None
    label_offset: int = 0
    label_names: tuple = ()
    total: int = None  # number of images, when known
    max_images: int = None
    data_dir: str = None
    shard_counts: dict = dataclasses.field(default_factory=dict)  # {shard file name: records}
    problems: dict = dataclasses.field(default_factory=dict)  # {index in files: why it is no file}
    # What the last pass of `elements()` found:
    read: int = 0  # positions gone through, skipped ones included
    names: dict = dataclasses.field(default_factory=dict)  # {index: name} of the images given
    used: int = 0  # images the caller could use (set by `extract`)
    error: Exception = None
    skips: list = dataclasses.field(default_factory=list)  # [(position, name, reason, images)]

    def skip(self, position, name, reason, images=1):
        """Records images that are not given: `images` of them (None: how many is unknown)."""
        self.skips.append((position, name, reason, images))

    @property
    def failures(self):
        """[(name, reason)] of what was skipped, in order."""
        return [(name, reason) for _, name, reason, _ in sorted(self.skips, key=lambda s: s[0])]

    def skipped(self):
        """(images skipped, skips whose number of images is unknown)."""
        return (
            sum(images for *_, images in self.skips if images is not None),
            sum(images is None for *_, images in self.skips),
        )

    def elements(self):
        self.read, self.names, self.used, self.error, self.skips = 0, {}, 0, None, []

        def generate():
            try:
                for index, name, payload in self.entries(record=True):
                    self.names[index] = name
                    yield index, name, payload
            except Exception as e:  # noqa: BLE001  one unreadable image never stops a run
                self.error = e  # the ignore_errors after the reader would hide it: extract raises it

        spec = (tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string))
        dataset = tf.data.Dataset.from_generator(generate, output_signature=spec)
        if self.files is not None:
            return dataset.map(lambda index, name, encoded: (index, name, tf.constant(-1), encoded))
        keys = (schema.ENCODED_KEY, schema.LABEL_KEY, schema.FILENAME_KEY)
        spec = {key: schema.FEATURE_SPEC[key] for key in keys}

        def parse(index, name, record):
            example = tf.io.parse_single_example(record, spec)
            filename = example[schema.FILENAME_KEY]
            name = tf.where(tf.equal(filename, ""), name, filename)
            label = tf.cast(example[schema.LABEL_KEY], tf.int32) - self.label_offset
            return index, name, label, example[schema.ENCODED_KEY]

        return dataset.map(parse)

    def entries(self, record):
        """(position, name, file bytes or record) of each image the source can give, in order.

        With `record`, what it cannot give is passed to `skip` and `read` counts the positions.
        """
        if self.files is not None:
            for index, path in enumerate(self.files):
                if record:
                    self.read = index + 1
                if index in self.problems:
                    if record:
                        self.skip(index, path, self.problems[index])
                    continue
                try:
                    with open(path, "rb") as f:
                        encoded = f.read()
                except OSError as e:
                    if record:
                        self.skip(index, path, f"cannot read: {e.strerror or e}")
                    continue
                yield index, path, encoded
            return
        yield from self._records(record)

    def _records(self, record):
        position, limit, uncounted = 0, self.max_images, []
        for shard in self.shards:
            if limit is not None and position >= limit:
                return
            expected = self.shard_counts.get(os.path.basename(shard))
            read, whole = 0, tf.io.gfile.exists(shard)
            if whole:
                # data.py's shard reader: it swallows tf.data's read error, which names no file,
                # and ends a damaged shard with a marker instead (skip_corrupt=True).
                read_shard = pipelines.read_shard
                for group in read_shard(shard, tf.io.gfile.stat(shard).length, skip_corrupt=True):
                    for item in group.numpy():
                        if item == pipelines.END_OF_SHARD:
                            whole = False
                            continue
                        if limit is not None and position >= limit:
                            return
                        yield position, f"{shard} record {read}", item
                        position, read = position + 1, read + 1
                        if record:
                            self.read = position
                if limit is not None and position >= limit:
                    return  # what a damage took lies past --max_images: nothing asked for is lost
                what = "corrupt or truncated TFRecord shard"
            else:
                what = f"shard listed in {schema.MANIFEST_FILENAME} but missing"
            if whole and (expected is None or read >= expected):
                continue
            if expected is None:
                if record:
                    uncounted.append(len(self.skips))
                    self.skip(position, shard, f"{what}: the records after its first {read} are lost", None)
                continue
            lost = expected - read if limit is None else min(expected - read, limit - position)
            if not whole and read == expected:  # damaged after its last record: nothing lost
                lost = 0
            if lost > 0 and record:
                if whole:
                    what = f"TFRecord shard shorter than {schema.MANIFEST_FILENAME} says"
                self.skip(position, shard, f"{what}: {expected - read} of its {expected} images lost", lost)
            position += max(lost, 0)
            if record:
                self.read = position
        if record and self.total is not None and position < self.total:
            # The manifest's split size tells how many images are missing in all.
            missing = self.total - position
            # With --max_images below the split's size, only the shortfall against it is known.
            capped = self.max_images is not None and self.total == self.max_images
            if len(uncounted) == 1:
                where, shard, reason, _ = self.skips[uncounted[0]]
                if capped:
                    reason += f" ({missing} of the {self.total} images --max_images asks for)"
                else:
                    reason = reason.replace("the records after", f"{missing} images after")
                self.skips[uncounted[0]] = (where, shard, reason, missing)
            else:
                for i in uncounted:  # counted in the line below instead
                    self.skips[i] = (*self.skips[i][:3], 0)
                of = "--max_images asks for" if capped else f"that {schema.MANIFEST_FILENAME} counts"
                counted = f"{missing} of the {self.total} images {of}"
                self.skip(position, self.data_dir, f"{counted} are missing", missing)
            self.read = self.total

    def _payloads(self, indices):
        """{index: (name, file bytes or record)} of the images at `indices` (read again)."""
        wanted = set(int(i) for i in indices)
        found = {}
        if wanted:
            for index, name, payload in self.entries(record=False):
                if index in wanted:
                    found[index] = (name, payload)
                    if len(found) == len(wanted):
                        break
        return found

    def encoded(self, indices):
        """{index: encoded bytes} of the images at `indices` (a second read of those only)."""
        payloads = self._payloads(indices)
        gone = sorted(set(int(i) for i in indices) - set(payloads))
        if gone:  # it changed since the first read: main reports it in one line, status 2
            raise ValueError(f"{self.names[gone[0]]} could not be read again (did it change?); run again")
        if self.files is not None:
            return {index: payload for index, (_, payload) in payloads.items()}
        spec = {schema.ENCODED_KEY: schema.FEATURE_SPEC[schema.ENCODED_KEY]}
        return {
            index: tf.io.parse_single_example(record, spec)[schema.ENCODED_KEY].numpy()
            for index, (_, record) in payloads.items()
        }

    def explain(self, indices):
        """[(index, name, reason)] of the images at `indices` that could not be used: read again."""
        reasons, payloads = [], self._payloads(indices)
        for index in sorted(indices):
            if index not in payloads:
                reasons.append((index, self.names[index], "cannot be decoded, nor read again to tell why"))
                continue
            name, payload = payloads[index]
            if self.shards is not None:
                keys = (schema.ENCODED_KEY, schema.LABEL_KEY, schema.FILENAME_KEY)
                try:
                    example = tf.io.parse_single_example(payload, {k: schema.FEATURE_SPEC[k] for k in keys})
                except tf.errors.InvalidArgumentError as e:
                    why = error_message(e)  # TensorFlow's message quotes the whole record: keep the start
                    why = why if len(why) <= 120 else why[:117] + "..."
                    reasons.append((index, name, f"not an Example of the ImageNet schema ({why})"))
                    continue
                filename = example[schema.FILENAME_KEY].numpy().decode("utf-8", "replace")
                name = f"{name} ({filename})" if filename else name
                payload = example[schema.ENCODED_KEY].numpy()
            reasons.append((index, name, _why_no_image(payload, name)))
        return reasons


def _why_no_image(encoded, name):
    """Why bytes that preprocessing.decode_image refused are no image: the converter's verdict."""
    try:
        convert.convert_image(encoded, name, resize_shorter=0)
    except convert.BadImageError as e:
        return str(e)
    return f"cannot be decoded as a {IMAGE_FORMATS} image"


def _image_files(paths, what):
    """The files named by `paths` (folders searched recursively, sorted), and {index: reason}.

    The reasons are those of folder entries that cannot be read (broken symlinks, loops, pipes).
    """
    entries = []
    for path in paths:
        if os.path.isdir(path):
            # The converter's scan of a class folder: every file whatever its name (the content
            # decides, as there), symlinks followed, what it cannot use named; hidden files are
            # left out as there.
            items, problems = [], []
            info, walk = os.stat(path), convert.walk_class_folder
            walk(path, path, None, items, problems, {(info.st_dev, info.st_ino)})
            found = [(item.source, None) for item in items]
            found += [(os.path.join(path, shown.removeprefix("./")), reason) for shown, reason in problems]
            if not found:
                raise UsageError(f"no files in the folder {path} ({what}); pass a folder of images")
            entries += sorted(found)
        elif os.path.exists(path):
            entries.append((path, None))
        else:
            raise UsageError(f"no such file or folder: {path} ({what})")
    return [name for name, _ in entries], {i: reason for i, (_, reason) in enumerate(entries) if reason}


def _shards(data_dir, split):
    return sorted(tf.io.gfile.glob(os.path.join(data_dir, f"{split}-*")))


def data_dir_source(data_dir, split, label_offset=None, max_images=None, what="--data_dir"):
    """The Source of a converted data dir's `<split>-*` shards, with its class names."""
    if not tf.io.gfile.isdir(data_dir):
        raise UsageError(f"{what}={data_dir} is not a folder")
    shards = _shards(data_dir, split)
    if not shards:
        raise UsageError(
            f"no TFRecord shards {split}-* in {data_dir} ({what}); pass --split=train or another "
            "prefix, or convert the images with python -m alexnet_tf.convert"
        )
    try:
        manifest = schema.read_manifest(data_dir)
        labels = schema.read_labels_if_present(data_dir)
        offset = (
            label_offset if label_offset is not None else schema.label_offset_of(manifest, labels, data_dir)
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    if offset is None:
        raise UsageError(schema.unknown_label_offset(data_dir, "--label_offset"))
    total = schema.split_size(manifest, split)
    if max_images is not None and total is not None:
        total = min(total, max_images)
    names = tuple(entry.name for entry in labels) if labels else ()
    # A shard the manifest lists but that is gone is read as one that lost all its records.
    entry = manifest.get("splits", {}).get(split)
    listed = entry.get("shards") if isinstance(entry, dict) else None
    listed = [s.get("file") for s in listed if isinstance(s, dict)] if isinstance(listed, list) else []
    on_disk = {os.path.basename(shard) for shard in shards}
    gone = [os.path.join(data_dir, name) for name in listed if isinstance(name, str) and name not in on_disk]
    return Source(
        shards=sorted(shards + gone, key=os.path.basename),
        label_offset=int(offset),
        label_names=names,
        total=total,
        max_images=max_images,
        data_dir=data_dir,
        shard_counts=schema.shard_records(manifest),
    )


def files_source(paths, what, max_images=None):
    files, problems = _image_files(paths, what)
    if max_images is not None:
        files = files[:max_images]
    return Source(
        files=files, total=len(files), problems={i: r for i, r in problems.items() if i < len(files)}
    )


def gallery_source(path, split, label_offset=None, max_images=None):
    """A data dir when `path` holds `<split>-*` shards or a manifest.json, else a folder of images."""
    # A data dir without that split's shards is refused, not read as a folder of non-images.
    is_data_dir = _shards(path, split) or tf.io.gfile.exists(os.path.join(path, schema.MANIFEST_FILENAME))
    if tf.io.gfile.isdir(path) and is_data_dir:
        return data_dir_source(path, split, label_offset, max_images, what="--gallery")
    return files_source([path], "--gallery", max_images)


# ----------------------------------------------------------------------------- models


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

    def class_names(self, num_classes, fallback=()):
        """--labels, else labels.txt beside the model, else `fallback` if as long, else numbers."""
        path = self.labels_path
        if path is None and self.labels_dir is not None:
            beside = os.path.join(self.labels_dir, schema.LABELS_FILENAME)
            path = beside if os.path.exists(beside) else None
        if path is None:
            return list(fallback) if len(fallback) == num_classes else [str(c) for c in range(num_classes)]
        try:
            names = [entry.name for entry in schema.read_labels(path)]
        except (OSError, ValueError, tf.errors.OpError) as e:
            raise UsageError(f"cannot read the labels file {path} ({error_message(e)})") from None
        if len(names) != num_classes:
            raise UsageError(
                f"{path} lists {len(names)} classes but the model has {num_classes}; pass --labels"
            )
        return names


class SavedModel:
    """An exported SavedModel: its `features` (fc7) and `serving_default` signatures, on bytes."""

    takes_crops = False

    def __init__(self, path):
        self.path = signatures.resolve_saved_model(path)
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
            signatures.resolve_saved_model(path)
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


# ----------------------------------------------------------------------------- extraction


@dataclasses.dataclass
class Extracted:
    """What came out of a Source, in its order: failed images are missing."""

    indices: np.ndarray  # int64 [N], positions in the source
    names: list
    labels: np.ndarray  # int32 [N], -1 unknown
    values: np.ndarray  # features [N, ...] or probabilities [N, C]


def extract(model, source, batch_size, layer=None, progress=True):
    """Runs `model` over `source`: its `layer` features, or with layer=None its probabilities.

    Images that cannot be used are left out and recorded with `source.skip`.
    """

    def crop(index, name, label, encoded):
        image = preprocessing.decode_image(encoded)
        return index, name, label, preprocessing.preprocess_for_eval(image, model.image_size)

    dataset = source.elements()
    if model.takes_crops:
        dataset = dataset.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        batch_size = min(batch_size, model.max_batch)
    # A record that is no Example, or bytes that are no image, fail their element: dropped here
    # and named after the loop. The reader's own errors never get here (see Source.elements).
    dataset = dataset.ignore_errors().batch(batch_size).prefetch(2)
    bar = convert.Progress(source.total, "features" if layer else "predictions", progress)
    indices, names, labels, values = [], [], [], []
    refused = set()  # indices the SavedModel refused, already recorded
    compute = (lambda x: model.features(x, layer)) if layer else model.probabilities
    for batch_indices, batch_names, batch_labels, inputs in dataset:
        try:
            rows = [(slice(None), compute(inputs))]
        except tf.errors.InvalidArgumentError:  # a SavedModel refused a bad image: find it
            rows = []
            for i in range(len(batch_indices)):
                try:
                    rows.append((slice(i, i + 1), compute(inputs[i : i + 1])))
                except tf.errors.InvalidArgumentError as e:
                    index = int(batch_indices[i])
                    refused.add(index)
                    source.skip(index, batch_names[i].numpy().decode("utf-8", "replace"), error_message(e))
        for where, value in rows:
            indices.append(batch_indices.numpy()[where])
            names += [n.decode("utf-8", "replace") for n in batch_names.numpy()[where]]
            labels.append(batch_labels.numpy()[where])
            values.append(value)
        bar.update(int(batch_indices[-1]) + 1)  # images read, skipped ones included
    if source.error is not None:
        raise source.error
    bar.update(source.read)  # skipped images at the end are read too: the line ends at N/N
    bar.close()
    done = set(np.concatenate(indices).tolist()) if indices else set()
    source.used = len(done)
    dropped = [i for i in source.names if i not in done and i not in refused]
    for index, name, reason in source.explain(dropped):
        source.skip(index, name, reason)
    if not indices:
        return Extracted(np.zeros([0], np.int64), [], np.zeros([0], np.int32), np.zeros([0], np.float32))
    return Extracted(
        np.concatenate(indices), names, np.concatenate(labels).astype(np.int32), np.concatenate(values)
    )


def thumbnails(encoded, image_size, size):
    """uint8 [size, size, 3] pictures of the centre crops the model sees, one per encoded image."""
    pictures = []
    for image in encoded:
        crop = preprocessing.center_crop(preprocessing.decode_image(tf.constant(image)), image_size)
        picture = tf.image.resize(crop, [size, size], method="bilinear", antialias=True)
        pictures.append(tf.saturate_cast(tf.round(picture), tf.uint8).numpy())
    return pictures


# ----------------------------------------------------------------------------- outputs


def write_atomically(path, write):
    """Calls `write(file)` on a new file that then replaces `path`: no reader sees half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    try:
        with open(temporary, "wb") as f:
            write(f)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def save_png(picture, path):
    return write_atomically(path, lambda f: picture.save(f, format="PNG"))


def _display_name(name, label, label_names):
    if 0 <= label < len(label_names):
        return label_names[label]
    return os.path.basename(name)


def features_file(model, source, output, layer, batch_size, model_path=""):
    found = extract(model, source, batch_size, layer)
    if not len(found.indices):
        return None
    arrays = dict(
        features=found.values.astype(np.float32),
        files=np.array(found.names, dtype=str),
        labels=found.labels,
        label_names=np.array(source.label_names, dtype=str),
        layer=np.array(layer),
        model=np.array(model_path),
    )
    return write_atomically(output, lambda f: np.savez(f, **arrays))


def neighbours_picture(model, queries, gallery, output, k, batch_size, thumbnail):
    found_queries = extract(model, queries, batch_size, embedding.FEATURES_LAYER)
    found_gallery = extract(model, gallery, batch_size, embedding.FEATURES_LAYER)
    if not len(found_queries.indices) or not len(found_gallery.indices):
        return None
    order, distances = embedding.nearest_neighbours(found_queries.values, found_gallery.values, k)
    query_bytes = queries.encoded(found_queries.indices)
    gallery_bytes = gallery.encoded(found_gallery.indices[order.ravel()])
    rows = []
    for q, (index, name) in enumerate(zip(found_queries.indices, found_queries.names)):
        (picture,) = thumbnails([query_bytes[index]], model.image_size, thumbnail)
        row = [figures.Cell(picture, (os.path.basename(name), "query"))]
        for g, distance in zip(order[q], distances[q]):
            source_index = found_gallery.indices[g]
            (picture,) = thumbnails([gallery_bytes[source_index]], model.image_size, thumbnail)
            title = _display_name(found_gallery.names[g], found_gallery.labels[g], gallery.label_names)
            row.append(figures.Cell(picture, (title, f"distance {distance:.3g}")))
        rows.append(row)
    return save_png(figures.neighbours_figure(rows, thumbnail), output)


def predictions_picture(model, source, output, batch_size, thumbnail):
    found = extract(model, source, batch_size, layer=None)
    if not len(found.indices):
        return None
    class_names = model.class_names(found.values.shape[1], fallback=source.label_names)
    encoded = source.encoded(found.indices)
    items = []
    for index, name, label, probabilities in zip(found.indices, found.names, found.labels, found.values):
        (picture,) = thumbnails([encoded[index]], model.image_size, thumbnail)
        top = np.argsort(-probabilities, kind="stable")[: figures.TOP_K]
        bars = [(class_names[c], float(probabilities[c]), bool(c == label)) for c in top]
        truth = source.label_names[label] if 0 <= label < len(source.label_names) else os.path.basename(name)
        items.append((figures.Cell(picture, (truth,)), bars))
    return save_png(figures.predictions_figure(items, thumbnail), output)


# ----------------------------------------------------------------------------- command line


def run(argv_images, config, model=None):
    """The command's work; returns (what was written, [(name, reason)] of skipped images).

    Args:
      argv_images: image files and folders from the command line.
      config: the flags as an object with attributes (FLAGS, or any namespace).
      model: the --model already loaded (`load(config.model)`), for callers that hold one.
    """
    output = config.output
    if not config.model or not output:
        raise UsageError("--model and --output are required")
    picture = bool(config.neighbours) or config.predictions
    if picture and not output.lower().endswith(".png"):
        raise UsageError(f"--output={output}: the picture is a PNG file; name it *.png")
    if not picture and not output.lower().endswith(".npz"):
        raise UsageError(f"--output={output}: features are written as NumPy .npz; name it *.npz")
    if config.neighbours and (argv_images or config.data_dir or config.predictions):
        raise UsageError("--neighbours takes its images from --neighbours and --gallery only")
    if config.neighbours and not config.gallery:
        raise UsageError("--neighbours needs --gallery=DIR (a folder of images or a data dir)")
    if not config.neighbours and bool(argv_images) == bool(config.data_dir):
        raise UsageError("give image files/folders or --data_dir (one of them)")
    for flag, least in (("batch_size", 1), ("num_neighbours", 1), ("thumbnail_size", 8), ("max_images", 1)):
        value = getattr(config, flag)
        if value is not None and value < least:
            unset = "; leave it out to read every image" if flag == "max_images" else ""
            raise UsageError(f"--{flag}={value}: pass a number of at least {least}{unset}")
    if picture:
        try:
            figures.pillow()
        except ImportError as e:
            raise UsageError(str(e)) from None

    max_images = config.max_images
    if config.predictions and max_images is None:
        max_images = DEFAULT_PICTURE_IMAGES
    # The inputs are checked before the model is loaded: that takes seconds.
    if config.neighbours:
        queries = files_source(config.neighbours, "--neighbours")
        source = gallery_source(config.gallery, config.split, config.label_offset, max_images)
    elif config.data_dir:
        source = data_dir_source(config.data_dir, config.split, config.label_offset, max_images)
    else:
        source = files_source(argv_images, "images", max_images)

    if model is None:
        model = load(config.model, config.labels)
    layer = config.layer if not picture else None
    names = model.layer_names()
    wanted = "fc7" if config.neighbours else layer
    if wanted is not None and wanted not in names:
        if isinstance(model, SavedModel):
            raise UsageError(
                f"--layer={wanted}: a SavedModel gives only {names or 'no features (export it again)'}; "
                "pass the .keras file or checkpoint it was exported from for other layers"
            )
        raise UsageError(
            f"--layer={wanted}: the model has no such layer; pass one of its layers: {', '.join(names)}"
        )

    if config.neighbours:
        written = neighbours_picture(
            model, queries, source, output, config.num_neighbours, config.batch_size, config.thumbnail_size
        )
        sources = [queries, source]
        gallery, asked = _count(source.used, "gallery image"), _count(queries.used, "query", "queries")
        what = f"the nearest of {gallery} to {asked}"
    elif config.predictions:
        written = predictions_picture(model, source, output, config.batch_size, config.thumbnail_size)
        sources, what = [source], f"the top-5 predictions of {_count(source.used, 'image')}"
    else:
        written = features_file(model, source, output, layer, config.batch_size, config.model)
        sources, what = [source], f"the {layer} features of {_count(source.used, 'image')}"
    failures = [failure for s in sources for failure in s.failures]
    report(failures, sources, written and f"wrote {what} to {written}")
    return written, failures


def report(failures, sources, done):
    """Names each skipped image (or shard) on stderr, then what was `done` and how much skipped."""
    for name, reason in failures:
        print(f"{PROGRAM}: {name}: {reason}; skipped", file=sys.stderr)
    if not done:
        return
    images = sum(s.skipped()[0] for s in sources)
    unknown = sum(s.skipped()[1] for s in sources)
    skipped = _count(images, "image")
    if unknown:  # no manifest.json counts what those lost
        skipped += f" and the rest of {_count(unknown, 'damaged shard')}"
    skipped += " skipped"
    print(f"{PROGRAM}: {done}; {skipped}{' (named above)' * bool(failures)}", file=sys.stderr)


def _count(n, noun, nouns=None):
    return f"{n} {noun}" if n == 1 else f"{n} {nouns or noun + 's'}"


def fail(what):
    """Ends with one line `alexnet_tf.features: error: <what>`, status 2 (bad input)."""
    cli.fail(PROGRAM, what)


def main(argv):
    try:
        written, failures = run(argv[1:], FLAGS)
    except UsageError as e:
        fail(e)
    except (tf.errors.OpError, OSError, ValueError) as e:
        fail(
            f"{type(e).__name__}: {error_message(e)} (--model={FLAGS.model}): check that the model "
            "loads and the shards are whole (python -m alexnet_tf.convert --verify), then run again"
        )
    if written is None:
        fail("no image could be read; nothing written")
    print(written)
    return cli.ExitStatus.FAILED if failures else cli.ExitStatus.SUCCESS
