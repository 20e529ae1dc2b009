"""The features command's images: files and folders, or the records of a converted data dir's shards.

A `Source` holds images in a fixed order and what went wrong with them: an image that cannot be
read or decoded, and the records a corrupt, truncated or missing shard lost (counted from
manifest.json), are named and skipped.
"""

import dataclasses
import os

import tensorflow as tf

from alexnet_tf.cli import error_message
from alexnet_tf.data import convert, records, schema

IMAGE_FORMATS = "JPEG, PNG, GIF, BMP or WebP"  # what preprocessing.decode_image reads
PROGRAM = "alexnet_tf.features"  # how the command names itself on stderr


class UsageError(ValueError):
    """A flag or input that cannot work: one line on stderr, status 2."""


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
                # records.read_shard: it swallows tf.data's read error, which names no file,
                # and ends a damaged shard with a marker instead (skip_corrupt=True).
                read_shard = records.read_shard
                for group in read_shard(shard, tf.io.gfile.stat(shard).length, skip_corrupt=True):
                    for item in group.numpy():
                        if item == records.END_OF_SHARD:
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
