"""The on-disk contract between the converter and every reader of a converted dataset.

A converted data dir holds TFRecord shards of `tf.train.Example`s in the model-garden ImageNet
schema (the keys below), a `labels.txt` with one `index<TAB>synset<TAB>name` line per class,
and a `manifest.json` whose `splits.<split>.num_examples` counts the records of each split and
whose `label_offset` says what to subtract from stored labels to make them 0-based. This module
is the one place that spells any of it: `alexnet_tf.data.convert` writes it, `alexnet_tf.data.pipelines`, the
trainer, the exporter and the weight importer read it through the functions here.
"""

import dataclasses
import json
import os

import tensorflow as tf

MANIFEST_FILENAME = "manifest.json"
LABELS_FILENAME = "labels.txt"

# Our labels run 0..num_classes-1 (tensorflow-datasets' convention); the model-garden
# converters write 1..1000 with 0 for "background". Readers subtract the offset.
LABEL_OFFSET = 0

# tf.train.Example keys of the model-garden ImageNet schema.
ENCODED_KEY = "image/encoded"
FORMAT_KEY = "image/format"
HEIGHT_KEY = "image/height"
WIDTH_KEY = "image/width"
CHANNELS_KEY = "image/channels"
COLORSPACE_KEY = "image/colorspace"
FILENAME_KEY = "image/filename"
LABEL_KEY = "image/class/label"
SYNSET_KEY = "image/class/synset"
TEXT_KEY = "image/class/text"
BBOX_XMIN_KEY = "image/object/bbox/xmin"
BBOX_YMIN_KEY = "image/object/bbox/ymin"
BBOX_XMAX_KEY = "image/object/bbox/xmax"
BBOX_YMAX_KEY = "image/object/bbox/ymax"

FEATURE_SPEC = {
    ENCODED_KEY: tf.io.FixedLenFeature([], tf.string),
    FORMAT_KEY: tf.io.FixedLenFeature([], tf.string, default_value="JPEG"),
    HEIGHT_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    WIDTH_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    CHANNELS_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=3),
    COLORSPACE_KEY: tf.io.FixedLenFeature([], tf.string, default_value="RGB"),
    FILENAME_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    SYNSET_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    TEXT_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    BBOX_XMIN_KEY: tf.io.VarLenFeature(tf.float32),
    BBOX_YMIN_KEY: tf.io.VarLenFeature(tf.float32),
    BBOX_XMAX_KEY: tf.io.VarLenFeature(tf.float32),
    BBOX_YMAX_KEY: tf.io.VarLenFeature(tf.float32),
}


# ----------------------------------------------------------------------------- labels


@dataclasses.dataclass(frozen=True)
class LabelEntry:
    """One class: its 0-based (or stored) index, its synset id ("" if unknown) and its name."""

    index: int
    synset: str
    name: str

    @property
    def text(self):
        """What a served prediction shows: "synset name", or the one of them there is."""
        if not self.synset or self.synset == self.name:
            return self.name
        return f"{self.synset} {self.name}"


def format_labels(entries):
    """The text of a labels file for `entries` (what the converter writes)."""
    return "".join(f"{e.index}\t{e.synset}\t{e.name}\n" for e in entries)


def read_labels_file(path):
    """Reads a labels file in the converter's `index<TAB>synset<TAB>name` format.

    Args:
      path: file with one line per class, indices consecutive (0-based for our converter; the
        name may be missing).

    Returns:
      A list of LabelEntry in file order.

    Raises:
      ValueError: a line that is not in that format, naming the file and line.
    """
    entries = []
    with tf.io.gfile.GFile(path, "r") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) not in (2, 3) or not fields[0].strip().isdigit():
                raise ValueError(f"{path}:{line_number}: expected 'index<TAB>synset<TAB>name', got {line!r}")
            index = int(fields[0])
            if entries and index != entries[-1].index + 1:
                raise ValueError(f"{path}:{line_number}: index {index} does not follow {entries[-1].index}")
            entries.append(LabelEntry(index, fields[1], fields[2] if len(fields) == 3 else fields[1]))
    return entries


def read_labels(path):
    """Any labels file people bring: ours (`index<TAB>synset<TAB>name`) or one label per line.

    One-label-per-line files (Caffe's synset_words.txt, tfds' labels.txt) become entries with
    the line as the name and no synset, so every model serves the same text for the same file.

    Returns:
      A list of LabelEntry in class order.
    """
    with tf.io.gfile.GFile(path, "r") as f:
        lines = [line.rstrip("\r\n") for line in f if line.strip()]
    if lines and all("\t" in line and line.split("\t", 1)[0].isdigit() for line in lines):
        return read_labels_file(path)
    return [LabelEntry(i, "", line.strip()) for i, line in enumerate(lines)]


# ----------------------------------------------------------------------------- manifest


def read_manifest(data_dir):
    """The parsed manifest.json of a data dir, or {} when it has none.

    Raises:
      ValueError: the manifest exists but is not a JSON object, naming the file.
    """
    path = os.path.join(data_dir, MANIFEST_FILENAME)
    if not tf.io.gfile.exists(path):
        return {}
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            manifest = json.load(f)
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); convert the dataset again") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a JSON object; convert the dataset again")
    return manifest


def split_size(manifest, split):
    """Records of `split` ("train", "validation") per the manifest, or None when it does not say."""
    entry = manifest.get("splits", {}).get(split)
    count = entry.get("num_examples") if isinstance(entry, dict) else None
    return count if isinstance(count, int) else None


def shard_records(manifest):
    """{shard file name: records} of every shard the manifest lists with its count (all splits)."""
    counts = {}
    for entry in manifest.get("splits", {}).values():
        shards = entry.get("shards") if isinstance(entry, dict) else None
        for shard in shards if isinstance(shards, list) else []:
            if isinstance(shard, dict) and isinstance(shard.get("num_records"), int) and shard.get("file"):
                counts[shard["file"]] = shard["num_records"]
    return counts


def converted_shorter_side(manifest, files):
    """The shorter side of every image in `files` when the converter's manifest guarantees one, else None.

    A complete conversion with resize_shorter > 0 writes only 3-channel JPEGs whose shorter side
    is exactly that (alexnet_tf.data.convert re-encodes everything else), so a reader may decode the
    crop directly without checking each image; every one of `files` must be a shard it lists.
    """
    settings = manifest.get("settings")
    side = settings.get("resize_shorter") if isinstance(settings, dict) else None
    if manifest.get("complete") is not True or not isinstance(side, int) or side <= 0:
        return None
    listed = shard_records(manifest)
    return side if all(os.path.basename(f) in listed for f in files) else None


def label_offset_of(manifest, labels, data_dir):
    """The label offset that a data dir's parsed manifest and labels.txt entries state, or None.

    The manifest's top-level "label_offset" wins; else the first index of labels.txt. Pass
    what was already read ({} and None for missing files) so nothing is parsed twice.

    Raises:
      ValueError: the two disagree.
    """
    from_manifest = manifest.get("label_offset")
    from_labels = labels[0].index if labels else None
    if None not in (from_manifest, from_labels) and from_manifest != from_labels:
        raise ValueError(
            f"{data_dir}: {MANIFEST_FILENAME} says label_offset={from_manifest} but "
            f"{LABELS_FILENAME} starts at index {from_labels}"
        )
    return from_labels if from_manifest is None else int(from_manifest)


def read_labels_if_present(data_dir):
    """The entries of `data_dir`'s labels.txt, or None when it has none."""
    path = os.path.join(data_dir, LABELS_FILENAME)
    return read_labels_file(path) if tf.io.gfile.exists(path) else None


def detect_label_offset(data_dir):
    """Returns the value to subtract from stored labels to make them 0-based, or None if unknown.

    Looks at `manifest.json` (top-level "label_offset") and then `labels.txt` (the first index).
    Model-garden and tfds data carry neither; pass the offset explicitly for them (1 and 0).

    Raises:
      ValueError: the two files disagree, or one of them is malformed.
    """
    return label_offset_of(read_manifest(data_dir), read_labels_if_present(data_dir), data_dir)


def unknown_label_offset(data_dir, option="label_offset"):
    """The one message for shards whose label base cannot be read from `data_dir`."""
    return (
        f"cannot tell whether the labels in {data_dir} are 0- or 1-based: no {MANIFEST_FILENAME} "
        f"or {LABELS_FILENAME} there; pass {option}=1 for model-garden shards (labels 1..1000) "
        f"or {option}=0 for 0-based labels"
    )


# ----------------------------------------------------------------------------- ImageNet


def ilsvrc2012_synsets():
    """The 1000 ILSVRC-2012 synsets in class order (tensorflow-datasets' imagenet2012 labels.txt), or None.

    None when tensorflow-datasets, or that file, is not installed. The file is found without
    importing tensorflow-datasets (slow).
    """
    import importlib.util

    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "imagenet2012", "labels.txt")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def data_synsets(data_dir):
    """The synsets of a converted data dir in class order (labels.txt, else manifest.json), or None."""
    labels = read_labels_if_present(data_dir)
    if labels:
        return [entry.synset for entry in labels]
    classes = read_manifest(data_dir).get("classes")
    if isinstance(classes, list) and all(isinstance(c, dict) for c in classes):
        return [str(c.get("synset", "")) for c in classes]
    return None


def is_imagenet(synsets):
    """Whether `synsets` are ImageNet's (ILSVRC-2012's) 1000 classes, in their order."""
    if synsets is None or len(synsets) != 1000:
        return False
    return list(synsets) == ilsvrc2012_synsets()
