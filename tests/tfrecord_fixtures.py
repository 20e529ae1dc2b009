"""Writes small, real ImageNet-style TFRecord shards (tf.train.Example + JPEG) for tests and benchmarks.

The records follow the model-garden schema that python -m alexnet_tf.convert also writes;
the images are smoothed noise, so their JPEGs are about as large as natural photos.
"""

import dataclasses
import io
import json
import os
import pathlib
import tarfile

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class FakeRecord:
    """One written record: where it went and what it holds (label is 0-based)."""

    shard: str
    index_in_shard: int
    label: int
    jpeg: bytes
    height: int
    width: int


def natural_image(rng, height, width):
    """Returns a uint8 [height, width, 3] image of smoothed noise with some fine texture."""
    coarse = rng.uniform(0.0, 255.0, size=(1, max(2, height // 24), max(2, width // 24), 3))
    image = tf.image.resize(coarse.astype(np.float32), [height, width], method="bicubic")[0].numpy()
    image += rng.normal(0.0, 6.0, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def make_example(jpeg, label, height, width, synset, text, filename, bbox=None):
    """Returns a tf.train.Example in the model-garden ImageNet schema (label stored as given)."""
    feature = {
        "image/encoded": _bytes(jpeg),
        "image/format": _bytes(b"JPEG"),
        "image/height": _int64(height),
        "image/width": _int64(width),
        "image/channels": _int64(3),
        "image/colorspace": _bytes(b"RGB"),
        "image/filename": _bytes(filename.encode()),
        "image/class/label": _int64(label),
        "image/class/synset": _bytes(synset.encode()),
        "image/class/text": _bytes(text.encode()),
    }
    if bbox is not None:  # [ymin, xmin, ymax, xmax] in [0, 1]
        ymin, xmin, ymax, xmax = bbox
        feature.update(
            {
                "image/object/bbox/xmin": _floats([xmin]),
                "image/object/bbox/ymin": _floats([ymin]),
                "image/object/bbox/xmax": _floats([xmax]),
                "image/object/bbox/ymax": _floats([ymax]),
            }
        )
    return tf.train.Example(features=tf.train.Features(feature=feature))


def write_fake_tfrecords(
    directory,
    *,
    num_records=32,
    num_shards=2,
    split="train",
    num_classes=10,
    label_offset=0,
    image_shapes=None,
    quality=90,
    seed=0,
    write_manifest=True,
    write_labels_file=True,
    labels_file_offset=None,
):
    """Writes `num_records` examples into `num_shards` shards named like `train-00000-of-00002`.

    Args:
      directory: output directory (created if missing).
      num_records: number of examples in all shards together.
      num_shards: number of shard files; records go round-robin.
      split: shard name prefix ("train" or "validation").
      num_classes: labels are drawn from range(num_classes) (0-based before the offset).
      label_offset: added to every stored label (1 imitates the model-garden converters).
      image_shapes: (height, width) pairs used in turn; by default random 256 x 256..340 in
        either orientation, i.e. what the converter writes.
      quality: JPEG quality.
      seed: seed of the images, shapes and labels.
      write_manifest: write manifest.json with `label_offset` and `num_classes`, as our
        converter does.
      write_labels_file: write labels.txt (`index<TAB>synset<TAB>name`).
      labels_file_offset: first index in labels.txt; defaults to `label_offset`.

    Returns:
      A list of FakeRecord in shard order (shard 0 records first, in file order).
    """
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    synsets = [f"n{9000000 + c:08d}" for c in range(num_classes)]
    names = [f"class {c}" for c in range(num_classes)]
    shards = [os.path.join(directory, f"{split}-{s:05d}-of-{num_shards:05d}") for s in range(num_shards)]
    per_shard = [[] for _ in shards]
    for i in range(num_records):
        if image_shapes:
            height, width = image_shapes[i % len(image_shapes)]
        else:
            height, width = 256, int(rng.integers(256, 341))
            if rng.random() < 0.3:
                height, width = width, height
        label = int(rng.integers(num_classes))
        jpeg = tf.io.encode_jpeg(natural_image(rng, height, width), quality=quality).numpy()
        per_shard[i % num_shards].append((label, jpeg, height, width, i))
    records = []
    for shard, items in zip(shards, per_shard):
        with tf.io.TFRecordWriter(shard) as writer:
            for position, (label, jpeg, height, width, i) in enumerate(items):
                example = make_example(
                    jpeg,
                    label + label_offset,
                    height,
                    width,
                    synsets[label],
                    names[label],
                    f"{synsets[label]}_{i}.JPEG",
                )
                writer.write(example.SerializeToString())
                records.append(FakeRecord(shard, position, label, jpeg, height, width))
    if write_manifest:
        with open(os.path.join(directory, "manifest.json"), "w") as f:
            json.dump(
                {
                    "label_offset": label_offset,
                    "num_classes": num_classes,
                    "splits": {split: {"num_examples": num_records, "num_shards": num_shards}},
                },
                f,
            )
    if write_labels_file:
        first = label_offset if labels_file_offset is None else labels_file_offset
        with open(os.path.join(directory, "labels.txt"), "w") as f:
            for c in range(num_classes):
                f.write(f"{c + first}\t{synsets[c]}\t{names[c]}\n")
    return records


def prepare_tfds_imagenet(root):
    """The data dir of imagenet2012 prepared by tfds's builder in `root` from tiny stand-in ILSVRC tars.

    Needs tensorflow_datasets and importlib_resources (tfds 4.9 imports it while preparing a
    dataset but does not declare it on Python >= 3.9).
    """
    import tensorflow_datasets as tfds  # slow; only these tests need it

    root = pathlib.Path(root)
    manual, rng = root / "manual", np.random.default_rng(11)
    manual.mkdir()

    def add(tar, name, content):
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))

    def jpeg():
        return tf.io.encode_jpeg(natural_image(rng, 300, 400)).numpy()

    with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as outer:
        for synset in ("n01440764", "n01443537"):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for i in range(3):
                    add(tar, f"{synset}_{i}.JPEG", jpeg())
            add(outer, f"{synset}.tar", inner.getvalue())
    with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as tar:
        for i in range(1, 5):
            add(tar, f"ILSVRC2012_val_{i:08d}.JPEG", jpeg())
    builder = tfds.builder("imagenet2012", data_dir=str(root / "data"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return str(root / "data")
