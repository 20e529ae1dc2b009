"""Dataset conversion: image folders or ILSVRC tars -> sharded TFRecords, labels.txt, manifest.json.

Every input is judged by its bytes, never its name: CMYK/grayscale JPEGs and PNG/GIF/BMP/WebP
content become RGB JPEGs ("repaired"); empty, truncated, corrupt and non-image files are
"skipped", and so are entries the scan cannot use (names that are not UTF-8, broken symlinks,
symlink loops, unreadable folders, pipes): one bad entry never stops a run. Both lists, the
per-shard record counts and sha256s, and a fingerprint of the input (names, sizes and
modification times) go into manifest.json, which is rewritten atomically as each shard
completes so that a killed run resumes where it stopped.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
import concurrent.futures
import contextlib
import dataclasses
import errno
import hashlib
import importlib.util
import json
import multiprocessing
import os
import random
import re
import stat
import sys
import tarfile
import time
from typing import NamedTuple

from absl import logging
import tensorflow as tf

# The on-disk contract (Example keys, labels.txt, manifest.json, label offset) is
# alexnet_tf.data.schema's: every reader of what this module writes reads it through that module.
from alexnet_tf.data import schema
from alexnet_tf.data.schema import (
    CHANNELS_KEY,
    COLORSPACE_KEY,
    ENCODED_KEY,
    FILENAME_KEY,
    FORMAT_KEY,
    HEIGHT_KEY,
    LABEL_KEY,
    LABEL_OFFSET,
    SYNSET_KEY,
    TEXT_KEY,
    WIDTH_KEY,
)
from alexnet_tf.data.schema import (
    LABELS_FILENAME as LABELS_NAME,
)
from alexnet_tf.data.schema import (
    MANIFEST_FILENAME as MANIFEST_NAME,
)

SPLITS = ("train", "validation")
FORMAT_VERSION = 1
DEFAULT_RESIZE_SHORTER = 256
# 95, not 90: resized images are encoded a second time on top of the originals' own
# compression; at 95 the added error stays below that of the originals (~q75-q90) for
# about 1.4x the bytes of q90, and the model garden itself re-encodes at 100.
DEFAULT_QUALITY = 95
DEFAULT_TRAIN_SHARDS = 1024
DEFAULT_VALIDATION_SHARDS = 128

_SHARD_RE = re.compile(r"^(train|validation)-\d{5}-of-\d{5}$")
_TMP_PREFIX = ".tmp-"
_JPEG_NAME_SUFFIXES = (".jpeg", ".jpg", ".jpe")


class ConversionError(ValueError):
    """An input or output problem that makes the whole run meaningless; names path and fix."""


class BadImageError(ValueError):
    """One input file cannot be turned into an RGB JPEG; the message is the reason."""


class ConvertedImage(NamedTuple):
    encoded: bytes  # JPEG bytes, 3 channels
    height: int
    width: int
    repair: str | None  # why the bytes differ from the input for reasons other than resizing


class _Item(NamedTuple):
    """One input image: bytes [offset, offset+size) of `source` (offset None: whole file)."""

    relpath: str
    source: str
    offset: int | None
    size: int
    synset: str | None  # class folder or class tar; None for a file outside any class folder
    mtime_ns: int = 0  # of the file, or of the tar that holds it: part of the fingerprint


def shard_name(split: str, index: int, num_shards: int) -> str:
    """Returns the file name of a shard, e.g. `train-00003-of-01024`."""
    return f"{split}-{index:05d}-of-{num_shards:05d}"


def tfds_validation_labels_path() -> str:
    """Returns the ILSVRC-2012 validation ground truth that tensorflow-datasets installs.

    Returns:
      Path to `validation_labels.txt`: one synset per line, in sorted file-name order.
    Raises:
      ConversionError: tensorflow-datasets is not installed or lacks the file.
    """
    spec = importlib.util.find_spec("tensorflow_datasets")  # locates without importing it
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(
            list(spec.submodule_search_locations)[0], "datasets", "imagenet2012", "validation_labels.txt"
        )
        if os.path.isfile(path):
            return path
    raise ConversionError(
        "the ILSVRC-2012 validation labels ship with tensorflow-datasets, which "
        "is not installed here; `pip install tensorflow-datasets` or pass "
        "--validation_labels"
    )


# ----------------------------------------------------------------------------- images


def sniff_format(data: bytes) -> str | None:
    """Returns the image format that the magic bytes announce ("JPEG", "PNG", ...) or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:2] == b"\xff\x0a" or data[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "JPEG XL"
    return None


class _JpegFrame(NamedTuple):
    components: int  # 1 grayscale, 3 YCbCr (or RGB), 4 CMYK/YCCK
    height: int
    width: int


def _jpeg_frame(data: bytes) -> _JpegFrame | None:
    """Reads the frame header (SOFn) of a JPEG; None when there is none before the scan."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
        elif marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 >= len(data):
                return None
            return _JpegFrame(
                data[i + 9],
                int.from_bytes(data[i + 5 : i + 7], "big"),
                int.from_bytes(data[i + 7 : i + 9], "big"),
            )
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _decode_rgb(data: bytes, fmt: str, shrink: int = 1) -> tf.Tensor:
    if fmt == "JPEG":
        # libjpeg turns grayscale and CMYK/YCCK into RGB itself (checked on TF 2.21), and
        # `ratio` scales in the DCT domain, far cheaper than decoding a big photo in full.
        # TF's default IDCT is the fast one, which here doubles the error against the truth.
        return tf.io.decode_jpeg(data, channels=3, ratio=shrink, dct_method="INTEGER_ACCURATE")
    image = tf.io.decode_image(data, channels=0, expand_animations=False)  # GIF: first frame
    if image.shape[-1] in (2, 4):  # composite transparency over white, as viewers show it
        alpha = tf.cast(image[..., -1:], tf.float32) / 255.0
        color = tf.cast(image[..., :-1], tf.float32)
        image = tf.cast(tf.round(color * alpha + 255.0 * (1.0 - alpha)), tf.uint8)
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return image


def _decode_failure(data: bytes, fmt: str, error: Exception) -> str:
    message = re.sub(r"\{\{[^}]*\}\}\s*", "", getattr(error, "message", str(error)))
    message = message.splitlines()[0].split(" [Op:")[0] if message else type(error).__name__
    if fmt == "JPEG" and data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        return f"truncated JPEG: no end-of-image marker ({message})"
    if fmt == "PNG" and b"IEND" not in data[-16:]:
        return f"truncated PNG: no IEND chunk ({message})"
    return f"corrupt {fmt} data: TensorFlow cannot decode it ({message})"


def resize_shorter_side(image: tf.Tensor, shorter: int) -> tf.Tensor:
    """Resizes so the shorter side is `shorter`, keeping aspect ratio and the whole image.

    Shrinking averages areas (a box filter: no aliasing, and ~5x faster than TF's antialiased
    bilinear); enlarging interpolates bilinearly.

    Args:
      image: uint8 [height, width, 3] tensor (eager).
      shorter: target length of the shorter side in pixels.
    Returns:
      uint8 [new_height, new_width, 3] tensor.
    """
    height, width = int(image.shape[0]), int(image.shape[1])
    if height <= width:
        size = (shorter, max(shorter, round(width * shorter / height)))
    else:
        size = (max(shorter, round(height * shorter / width)), shorter)
    method = "area" if min(height, width) > shorter else "bilinear"
    with tf.device("/CPU:0"):
        resized = tf.image.resize(image, size, method=method)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def convert_image(
    data: bytes, name: str, resize_shorter: int = DEFAULT_RESIZE_SHORTER, quality: int = DEFAULT_QUALITY
) -> ConvertedImage:
    """Checks one input by content and returns it as an RGB JPEG.

    An RGB JPEG that needs no resizing keeps its original bytes (no second compression).

    Args:
      data: the file's bytes.
      name: the file's name, used only to word the repair reason.
      resize_shorter: shorter side in pixels after resizing; 0 keeps the original size.
      quality: JPEG quality for images that are re-encoded.
    Returns:
      A ConvertedImage; `repair` says why the content changed (CMYK, PNG, ...) or is None.
    Raises:
      BadImageError: empty, truncated, corrupt or not an image; the message is the reason.
    """
    if not data:
        raise BadImageError("empty file (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        raise BadImageError(f"not an image: unrecognised content starting {data[:8]!r}")
    repair, shrink = None, 1
    if fmt == "JPEG":
        frame = _jpeg_frame(data)
        if frame is None or frame.components not in (1, 3, 4):
            raise BadImageError(
                "corrupt JPEG: no readable frame header"
                if frame is None
                else f"unsupported JPEG with {frame.components} colour components"
            )
        repair = {1: "grayscale JPEG converted to RGB", 4: "CMYK JPEG converted to RGB"}.get(frame.components)
        while (
            resize_shorter
            and shrink < 8
            and min(frame.height, frame.width) // (2 * shrink) >= 2 * resize_shorter
        ):  # keep 2x margin for the area resize
            shrink *= 2
    else:
        where = "under a JPEG file name" if name.lower().endswith(_JPEG_NAME_SUFFIXES) else "file"
        repair = f"{fmt} content {where} re-encoded as JPEG"
    with tf.device("/CPU:0"):
        try:
            image = _decode_rgb(data, fmt, shrink)
        except (tf.errors.OpError, ValueError) as e:
            raise BadImageError(_decode_failure(data, fmt, e)) from None
        height, width = int(image.shape[0]), int(image.shape[1])
        if height == 0 or width == 0:
            raise BadImageError(f"{fmt} image with no pixels ({height}x{width})")
        needs_resize = resize_shorter > 0 and min(height, width) != resize_shorter
        if not needs_resize and repair is None:
            return ConvertedImage(data, height, width, None)
        if needs_resize:
            image = resize_shorter_side(image, resize_shorter)
        encoded = tf.io.encode_jpeg(image, format="rgb", quality=quality).numpy()
    return ConvertedImage(encoded, int(image.shape[0]), int(image.shape[1]), repair)


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def make_example(
    image: ConvertedImage, filename: str, label: int, synset: str, text: str
) -> tf.train.Example:
    """Returns the model-garden `tf.train.Example` for one converted image."""
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                ENCODED_KEY: _bytes_feature(image.encoded),
                FORMAT_KEY: _bytes_feature(b"JPEG"),
                HEIGHT_KEY: _int_feature(image.height),
                WIDTH_KEY: _int_feature(image.width),
                CHANNELS_KEY: _int_feature(3),
                COLORSPACE_KEY: _bytes_feature(b"RGB"),
                FILENAME_KEY: _bytes_feature(filename.encode()),
                LABEL_KEY: _int_feature(label + LABEL_OFFSET),
                SYNSET_KEY: _bytes_feature(synset.encode()),
                TEXT_KEY: _bytes_feature(text.encode()),
            }
        )
    )


# ----------------------------------------------------------------------------- inputs


def _tar_items(
    path: str,
    base: int,
    prefix: str,
    synset_of: Callable[[str], str | None],
    classes: set[str],
    problems: list[tuple[str, str]],
    fileobj=None,
    mtime_ns: int | None = None,
) -> list[_Item]:
    """Lists a tar's files as byte ranges of `path`, descending into per-class member tars.

    Members whose names are not UTF-8 go to `problems` as (path, reason) instead.
    """
    items = []
    if mtime_ns is None:
        mtime_ns = os.stat(path).st_mtime_ns
    try:
        archive = tarfile.open(path if fileobj is None else None, mode="r:", fileobj=fileobj)
    except tarfile.ReadError as e:
        raise ConversionError(
            f"{prefix or path} is not an uncompressed tar archive ({e}); "
            "extract it, or repack it without compression"
        ) from None
    with archive:
        for member in archive:
            name = member.name.strip("/")
            if not member.isfile() or os.path.basename(name).startswith("."):
                continue
            shown = f"{prefix}/{name}" if prefix else name
            if not _is_utf8(shown):
                problems.append((_printable(shown), _NOT_UTF8))
                continue
            if fileobj is None and "/" not in name and name.endswith(".tar"):
                classes.add(name[:-4])
                items += _tar_items(
                    path,
                    member.offset_data,
                    name,
                    lambda _, s=name[:-4]: s,
                    classes,
                    problems,
                    fileobj=archive.extractfile(member),
                    mtime_ns=mtime_ns,
                )
            else:
                synset = synset_of(name)
                classes.update([synset] if synset else [])
                items.append(_Item(shown, path, base + member.offset_data, member.size, synset, mtime_ns))
    return items


_NOT_UTF8 = "file name is not valid UTF-8; rename it"


def _is_utf8(name: str) -> bool:
    """False for names holding bytes that are not UTF-8 (os/tarfile keep them as surrogates)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _printable(name: str) -> str:
    """The name with its non-UTF-8 bytes written as \\xNN, for the manifest and messages."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _entry_problem(error: OSError, entry: os.DirEntry | None = None) -> str:
    """Why a directory entry cannot be used, from the error that following it raised."""
    try:
        is_folder = entry is not None and entry.is_dir(follow_symlinks=False)
    except OSError:
        is_folder = False
    if is_folder:
        return f"unreadable folder: {error.strerror or error}"
    if error.errno == errno.ELOOP:
        return "symlink loop: following it never reaches a file"
    if isinstance(error, FileNotFoundError):
        return "broken symlink: its target does not exist"
    return f"cannot read: {error.strerror or error}"


def walk_class_folder(
    root: str,
    folder: str,
    synset: str,
    items: list[_Item],
    problems: list[tuple[str, str]],
    seen: set[tuple[int, int]],
) -> None:
    """Lists the files under one class folder (following symlinks), recording what it cannot use.

    Unlike os.walk, a folder that cannot be listed is recorded, not silently left out, and a
    folder already in `seen` (the input folder, a class folder, or one reached by another path:
    a symlink to an ancestor loops) is recorded and not scanned again.
    """
    relpath = os.path.relpath(folder, root).replace(os.sep, "/")
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        problems.append((_printable(relpath), f"unreadable folder: {e.strerror or e}"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = os.path.join(folder, entry.name)
        shown = f"{relpath}/{entry.name}"
        if not _is_utf8(entry.name):
            problems.append((_printable(shown), _NOT_UTF8))
            continue
        try:
            info = os.stat(path)  # follows symlinks
        except OSError as e:
            problems.append((shown, _entry_problem(e, entry)))
            continue
        if stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in seen:
                problems.append(
                    (
                        shown,
                        "folder already scanned through another path (a symlink "
                        "loop, or a second link to it)",
                    )
                )
                continue
            seen.add((info.st_dev, info.st_ino))
            walk_class_folder(root, path, synset, items, problems, seen)
        elif stat.S_ISREG(info.st_mode):
            items.append(_Item(shown, path, None, info.st_size, synset, info.st_mtime_ns))
        else:
            problems.append((shown, "not a regular file (a pipe, socket or device)"))


def _scan(root: str, flag: str) -> tuple[list[_Item], list[str], list[tuple[str, str]]]:
    """Lists every file under an input folder or tar, the class folders/tars found, and problems.

    Returns:
      (items, classes, problems): items outside any class folder have synset None; classes
      include empty class folders, so an empty class never shifts the labels of the others;
      problems are (path, reason) of entries that cannot be used (names that are not UTF-8,
      broken symlinks, symlink loops, unreadable folders, pipes): they are skipped.
    """
    if not os.path.exists(root):
        raise ConversionError(
            f"{flag} {root} does not exist; pass the folder that holds one "
            "sub-folder per class (or the ILSVRC .tar file)"
        )
    classes, problems = set(), []
    if os.path.isfile(root):
        if not tarfile.is_tarfile(root):
            raise ConversionError(
                f"{flag} {root} is a file but not a tar archive; pass a folder or an uncompressed .tar"
            )
        items = _tar_items(root, 0, "", lambda n: n.split("/")[0] if "/" in n else None, classes, problems)
        return items, sorted(classes), problems
    items = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        raise ConversionError(
            f"cannot list {flag} {root} ({e.strerror or e}); pass a readable folder"
        ) from None
    kinds = []  # (entry, stat) of the usable top-level entries
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if not _is_utf8(entry.name):
            problems.append((_printable(entry.name), _NOT_UTF8))
            continue
        try:
            kinds.append((entry, os.stat(entry.path)))  # follows symlinks
        except OSError as e:
            problems.append((entry.name, _entry_problem(e, entry)))
    root_info = os.stat(root)
    seen = {(root_info.st_dev, root_info.st_ino)} | {
        (info.st_dev, info.st_ino) for _, info in kinds if stat.S_ISDIR(info.st_mode)
    }
    for entry, info in kinds:
        if stat.S_ISDIR(info.st_mode):
            classes.add(entry.name)
            walk_class_folder(root, entry.path, entry.name, items, problems, seen)
        elif not stat.S_ISREG(info.st_mode):
            problems.append((entry.name, "not a regular file (a pipe, socket or device)"))
        elif entry.name.endswith(".tar") and tarfile.is_tarfile(entry.path):
            classes.add(entry.name[:-4])
            items += _tar_items(entry.path, 0, entry.name, lambda _, s=entry.name[:-4]: s, classes, problems)
        else:
            items.append(_Item(entry.name, entry.path, None, info.st_size, None, info.st_mtime_ns))
    return items, sorted(classes), problems


def _read_labels_file(path: str) -> list[list[str]]:
    with open(_existing(path, "--validation_labels"), encoding="utf-8") as f:
        return [line.split() for line in f if line.strip()]


def _label_flat_validation(items: list[_Item], labels_path: str | None, root: str) -> list[_Item]:
    """Gives flat validation files their synsets from a ground-truth list."""
    rows = _read_labels_file(labels_path or tfds_validation_labels_path())
    if rows and all(len(r) >= 2 for r in rows):  # "file_name synset" lines
        by_name = {r[0]: r[1] for r in rows}
        missing = [i.relpath for i in items if os.path.basename(i.relpath) not in by_name]
        if missing:
            raise ConversionError(
                f"validation labels {labels_path} have no line for {missing[0]} "
                f"(and {len(missing) - 1} more) in {root}; fix the labels file"
            )
        return [i._replace(synset=by_name[os.path.basename(i.relpath)]) for i in items]
    if len(rows) != len(items):
        source = (
            f"validation labels {labels_path}"
            if labels_path
            else "the ILSVRC-2012 ground truth from tensorflow-datasets (the default, which "
            "fits only the 50,000 official validation images)"
        )
        raise ConversionError(
            f"validation folder {root} holds {len(items)} files but {source} lists {len(rows)}; "
            "pass --validation_labels with one synset per line for these files in sorted "
            "file-name order"
        )
    ordered = sorted(items, key=lambda i: i.relpath)
    return [item._replace(synset=row[0]) for item, row in zip(ordered, rows)]


def _read_class_names(path: str | None, synsets: list[str]) -> list[str]:
    if path is None:
        return list(synsets)
    names = {}
    with open(_existing(path, "--class_names"), encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(None, 1)
            if parts:
                names[parts[0]] = parts[1] if len(parts) > 1 else parts[0]
    missing = [s for s in synsets if s not in names]
    if missing:
        logging.warning(
            "class names file %s has no name for %d classes (e.g. %s); using the synset as the name",
            path,
            len(missing),
            missing[0],
        )
    return [names.get(s, s) for s in synsets]


def _existing(path: str, flag: str) -> str:
    if not os.path.isfile(path):
        raise ConversionError(f"{flag} {path} does not exist; pass an existing file")
    return path


@dataclasses.dataclass
class _Plan:
    synsets: list[str]
    names: list[str]
    shards: dict[str, list[list[_Item]]]  # split -> items of each shard
    skipped: list[dict]  # files found by the scan that belong to no class
    fingerprint: str
    inputs: dict


def _split_items(split: str, root: str, validation_labels: str | None):
    """Returns (labelled items, class list, skip notes) of one split's input tree or tar."""
    items, classes, problems = _scan(root, f"--{split}_dir")
    skipped = [{"split": split, "shard": None, "path": path, "reason": reason} for path, reason in problems]
    if split == "train" and not classes:
        raise ConversionError(
            f"no class folders found in --train_dir {root}; expected one "
            f"sub-folder (or per-class .tar) per class, e.g. "
            f"{os.path.join(root, 'n01440764', '*.JPEG')}"
        )
    if classes:  # class-per-folder tree; loose files belong to no class
        if split == "validation" and validation_labels:
            logging.warning("--validation_labels ignored: %s has class folders", root)
        skipped += [
            {"split": split, "shard": None, "path": i.relpath, "reason": "file outside any class folder"}
            for i in items
            if i.synset is None
        ]
        items = [i for i in items if i.synset is not None]
    elif items:  # flat validation folder: labels from the ground-truth list
        items = _label_flat_validation(items, validation_labels, root)
        classes = sorted({i.synset for i in items})
    if not items:
        raise ConversionError(
            f"no image files found in --{split}_dir {root}; pass the folder that holds the images"
        )
    empty = sorted(set(classes) - {i.synset for i in items})
    if empty:
        logging.warning("%s: %d classes have no files (e.g. %s)", split, len(empty), empty[0])
    return items, classes, skipped


def _plan(
    train_dir, validation_dir, validation_labels, class_names, train_shards, validation_shards, shuffle_seed
) -> _Plan:
    """Scans the inputs and decides classes, labels and each shard's items; writes nothing."""
    if not train_dir and not validation_dir:
        raise ConversionError("no input: pass --train_dir and/or --validation_dir")
    scans, skipped, synsets = {}, [], None
    for split, root in (("train", train_dir), ("validation", validation_dir)):
        if root:
            scans[split], classes, notes = _split_items(split, root, validation_labels)
            skipped += notes
            unknown = sorted(set(classes) - set(synsets or classes))
            if unknown:
                raise ConversionError(
                    f"validation class {unknown[0]} (and {len(unknown) - 1} "
                    f"more) has no folder in --train_dir {train_dir}; the "
                    "splits must share one class list"
                )
            synsets = synsets or classes
    listing = hashlib.sha256("\n".join(synsets).encode())
    shards = {}
    for split, items in scans.items():
        items.sort(key=lambda i: i.relpath)
        for i in items:
            # The modification time too: a file replaced by another of the same size is new.
            listing.update(f"{split}\t{i.synset}\t{i.relpath}\t{i.size}\t{i.mtime_ns}\n".encode())
        if split == "train":  # model-garden habit: mix classes across training shards
            random.Random(shuffle_seed).shuffle(items)
        wanted = train_shards if split == "train" else validation_shards
        n = min(wanted, len(items))
        if n != wanted:
            logging.warning("%s: %d shards requested for %d images; writing %d", split, wanted, len(items), n)
        shards[split] = [items[k * len(items) // n : (k + 1) * len(items) // n] for k in range(n)]
    inputs = {
        "train_dir": train_dir,
        "validation_dir": validation_dir,
        "validation_labels": validation_labels,
        "class_names": class_names,
    }
    return _Plan(
        synsets, _read_class_names(class_names, synsets), shards, skipped, listing.hexdigest(), inputs
    )


# ----------------------------------------------------------------------------- shards


class _ShardTask(NamedTuple):
    split: str
    index: int
    num_shards: int
    items: list[_Item]
    synsets: list[str]
    names: list[str]
    output_dir: str
    resize_shorter: int
    quality: int


_COUNTER = None  # in worker processes: shared count of images done, for the progress line


def _init_worker(counter, threads: int) -> None:
    global _COUNTER
    _COUNTER = counter
    # Workers only decode/resize/encode: keep them off GPUs (each would grab all the memory)
    # and share the cores between them instead of each sizing its thread pool to all of them.
    tf.config.set_visible_devices([], "GPU")
    tf.config.threading.set_intra_op_parallelism_threads(threads)


def _bump_counter() -> None:
    with _COUNTER.get_lock():
        _COUNTER.value += 1


def _atomic_write(path: str, text: str) -> None:
    tmp = os.path.join(os.path.dirname(path), _TMP_PREFIX + os.path.basename(path))
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Reader(contextlib.ExitStack):
    """Reads items' bytes, keeping tar archives open between items."""

    def __init__(self):
        super().__init__()
        self._archives = {}

    def read(self, item: _Item) -> bytes:
        if item.offset is None:
            with open(item.source, "rb") as f:
                return f.read()
        if item.source not in self._archives:
            self._archives[item.source] = self.enter_context(open(item.source, "rb"))
        archive = self._archives[item.source]
        archive.seek(item.offset)
        return archive.read(item.size)


def _convert_shard(task: _ShardTask, on_image: Callable[[], None]) -> dict:
    """Writes one shard under a temporary name, then renames it; returns its manifest entry."""
    file = shard_name(task.split, task.index, task.num_shards)
    tmp = os.path.join(task.output_dir, _TMP_PREFIX + file)
    index = {s: k for k, s in enumerate(task.synsets)}
    per_class, skipped, repaired = collections.Counter(), [], []
    with tf.io.TFRecordWriter(tmp) as writer, _Reader() as reader:
        for item in task.items:
            where = {"split": task.split, "shard": task.index, "path": item.relpath}
            try:
                image = convert_image(reader.read(item), item.relpath, task.resize_shorter, task.quality)
            except BadImageError as e:
                skipped.append({**where, "reason": str(e)})
            except OSError as e:
                skipped.append({**where, "reason": f"cannot read: {e.strerror or e}"})
            except Exception as e:  # noqa: BLE001  one file never stops a run
                skipped.append({**where, "reason": f"cannot convert: {type(e).__name__}: {e}"})
            else:
                label = index[item.synset]
                example = make_example(
                    image, os.path.basename(item.relpath), label, item.synset, task.names[label]
                )
                # Deterministic: the feature map's order otherwise varies between processes.
                writer.write(example.SerializeToString(deterministic=True))
                per_class[item.synset] += 1
                if image.repair:
                    repaired.append({**where, "reason": image.repair})
            on_image()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    entry = {
        "file": file,
        "num_records": sum(per_class.values()),
        "num_bytes": os.path.getsize(tmp),
        "sha256": sha256_file(tmp),
    }
    os.replace(tmp, os.path.join(task.output_dir, file))
    return {
        "split": task.split,
        "shard": entry,
        "per_class": dict(per_class),
        "skipped": skipped,
        "repaired": repaired,
    }


def _pool_convert_shard(task: _ShardTask) -> dict:
    return _convert_shard(task, _bump_counter)


class Progress:
    """One status line on stderr: rewritten in place on a terminal, plain lines otherwise.

    Args:
      total: how many images there are; None when unknown (the line then shows no ETA).
      label: what is being done ("converting", "features").
      enabled: False prints nothing.
    """

    def __init__(self, total: int | None, label: str, enabled: bool = True):
        self._total, self._label = total, label
        self._enabled = enabled and (total is None or total > 0)
        self._tty = sys.stderr.isatty()
        self._start = self._last = time.monotonic()
        self._done = self._shown = 0

    def add(self, n: int = 1) -> None:
        self.update(self._done + n)

    def update(self, done: int, force: bool = False) -> None:
        self._done = done
        now = time.monotonic()
        if not self._enabled or (not force and now - self._last < (0.5 if self._tty else 10.0)):
            return
        self._last, self._shown = now, done
        rate = done / max(now - self._start, 1e-6)
        if self._total is None:
            line = f"{self._label}: {done} images, {rate:.1f} images/s"
        else:
            left = int((self._total - done) / rate) if rate else 0
            eta = f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}" if rate else "?"
            line = (
                f"{self._label}: {done}/{self._total} images ({100 * done / self._total:.1f}%), "
                f"{rate:.1f} images/s, ETA {eta}"
            )
        sys.stderr.write(f"\r{line:<79}" if self._tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self._shown != self._done or self._done == 0:
            self.update(self._done, force=True)
        if self._enabled and self._tty:
            sys.stderr.write("\n")


def _run_pool(
    tasks: list,
    local_fn: Callable,
    pool_fn: Callable,
    num_workers: int,
    progress: Progress,
    on_result: Callable[[dict], None],
) -> None:
    """Runs every task in this process (local_fn) or in worker processes (pool_fn).

    Workers are spawned, not forked (a forked TensorFlow runtime can deadlock), so a script
    that calls this with num_workers > 1 needs the usual `if __name__ == "__main__":` guard.
    Each task is a whole shard: each worker imports TensorFlow once. A worker that dies
    (e.g. killed for memory) fails the run with BrokenProcessPool instead of hanging it.
    """
    if num_workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            on_result(local_fn(task, progress.add))
        return
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    workers = min(num_workers, len(tasks))
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(counter, threads)
    )
    try:
        pending = {pool.submit(pool_fn, task) for task in tasks}
        while pending:
            done, pending = concurrent.futures.wait(
                pending, timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                on_result(future.result())
            progress.update(counter.value)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------- convert


def _our_files(output_dir: str) -> list[str]:
    return sorted(
        n
        for n in os.listdir(output_dir)
        if n in (MANIFEST_NAME, LABELS_NAME) or _SHARD_RE.match(n) or n.startswith(_TMP_PREFIX)
    )


def load_manifest(output_dir: str) -> dict:
    """Returns the parsed manifest.json of a converted folder.

    Raises:
      ConversionError: the folder has no readable manifest.
    """
    try:
        manifest = schema.read_manifest(output_dir)
    except (ValueError, tf.errors.OpError) as e:
        raise ConversionError(f"{e}; convert the dataset into {output_dir} first") from None
    if not manifest:
        raise ConversionError(
            f"no {MANIFEST_NAME} in {output_dir}; convert the dataset into {output_dir} first"
        )
    return manifest


def _previous_manifest(output_dir: str, fingerprint: str, settings: dict, overwrite: bool) -> dict | None:
    """Returns the manifest of an earlier run of the same conversion, or clears/refuses."""
    ours = _our_files(output_dir)
    if not ours:
        return None
    try:
        old = load_manifest(output_dir)
    except ConversionError:
        old = None
    if old and old.get("fingerprint") == fingerprint and old.get("settings") == settings:
        return old
    if not overwrite:
        if old is None:
            why = "holds TFRecord files without a readable manifest.json"
        elif old.get("fingerprint") != fingerprint:
            why = "holds a different dataset (its input fingerprint differs)"
        else:
            changed = sorted(k for k in settings if old.get("settings", {}).get(k) != settings[k])
            why = f"was written with different settings ({', '.join(changed)})"
        raise ConversionError(
            f"output folder {output_dir} {why}; choose another --output_dir or pass --overwrite to replace it"
        )
    logging.warning("--overwrite: removing %d earlier output files from %s", len(ours), output_dir)
    for name in ours:
        os.remove(os.path.join(output_dir, name))
    return None


def _kept_shards(old: dict | None, output_dir: str) -> dict[tuple[str, str], dict]:
    """Shards an earlier run finished: in its manifest and on disk with the recorded size."""
    kept = {}
    for split, info in ((old or {}).get("splits") or {}).items():
        for entry in info.get("shards", []):
            path = os.path.join(output_dir, entry["file"])
            if os.path.isfile(path) and os.path.getsize(path) == entry.get("num_bytes"):
                kept[(split, entry["file"])] = entry
    return kept


def _split_work(
    plan: _Plan, old: dict | None, kept: dict, output_dir: str, resize_shorter: int, quality: int
) -> tuple[list[dict], list[_ShardTask]]:
    """Splits the plan into results of kept shards (rebuilt from the old manifest) and tasks."""
    results, tasks = [], []
    old_notes = {
        key: [n for n in (old or {}).get(key, []) if n.get("shard") is not None]
        for key in ("skipped", "repaired")
    }
    for split, shards in plan.shards.items():
        for k, items in enumerate(shards):
            file = shard_name(split, k, len(shards))
            if (split, file) not in kept:
                tasks.append(
                    _ShardTask(
                        split,
                        k,
                        len(shards),
                        items,
                        plan.synsets,
                        plan.names,
                        output_dir,
                        resize_shorter,
                        quality,
                    )
                )
                continue
            notes = {
                key: [n for n in old_notes[key] if (n["split"], n["shard"]) == (split, k)]
                for key in old_notes
            }
            lost = {n["path"] for n in notes["skipped"]}
            per_class = collections.Counter(i.synset for i in items if i.relpath not in lost)
            results.append({"split": split, "shard": kept[(split, file)], "per_class": per_class, **notes})
    return results, tasks


def convert(
    output_dir: str,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    validation_labels: str | None = None,
    class_names: str | None = None,
    resize_shorter: int = DEFAULT_RESIZE_SHORTER,
    quality: int = DEFAULT_QUALITY,
    train_shards: int = DEFAULT_TRAIN_SHARDS,
    validation_shards: int = DEFAULT_VALIDATION_SHARDS,
    num_workers: int | None = None,
    overwrite: bool = False,
    shuffle_seed: int = 0,
    progress: bool = True,
) -> dict:
    """Converts image folders/tars into TFRecord shards, labels.txt and manifest.json.

    Re-running the same call resumes: shards listed in the manifest with their recorded size
    are kept, the others are rewritten. Nothing is written before all inputs are checked.

    Args:
      output_dir: folder for the shards, labels.txt and manifest.json (created if missing).
      train_dir: one sub-folder (or per-class .tar) per class, or the ILSVRC-2012 train tar.
      validation_dir: class-per-folder tree, or a flat folder/tar labelled by
        `validation_labels`.
      validation_labels: one synset per line in sorted file-name order (or "file synset"
        lines); default: the ILSVRC-2012 ground truth installed with tensorflow-datasets.
      class_names: optional "synset name..." lines (e.g. LOC_synset_mapping.txt).
      resize_shorter: shorter side after resizing (whole image kept); 0 keeps originals.
      quality: JPEG quality of re-encoded images.
      train_shards: number of training shards (fewer when there are fewer images).
      validation_shards: number of validation shards.
      num_workers: worker processes; default os.cpu_count(); 1 runs in this process. Workers
        are spawned: a calling script needs an `if __name__ == "__main__":` guard.
      overwrite: replace an output folder that holds a different conversion.
      shuffle_seed: seed of the order of training images across shards.
      progress: print a progress line on stderr.
    Returns:
      The final manifest (also written to output_dir/manifest.json).
    Raises:
      ConversionError: bad arguments or inputs, or an output folder holding other data.
    """
    if resize_shorter < 0 or not 1 <= quality <= 100 or min(train_shards, validation_shards) < 1:
        raise ConversionError(
            f"bad settings: need --resize_shorter >= 0 (got {resize_shorter}), "
            f"1 <= --quality <= 100 (got {quality}) and at least one shard"
        )
    plan = _plan(
        train_dir,
        validation_dir,
        validation_labels,
        class_names,
        train_shards,
        validation_shards,
        shuffle_seed,
    )
    settings = {
        "format_version": FORMAT_VERSION,
        "resize_shorter": resize_shorter,
        "quality": quality,
        "train_shards": train_shards,
        "validation_shards": validation_shards,
        "shuffle_seed": shuffle_seed,
        "class_names_sha256": hashlib.sha256("\n".join(plan.names).encode()).hexdigest(),
    }
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ConversionError(f"--output_dir {output_dir} is a file; pass a folder")
    os.makedirs(output_dir, exist_ok=True)
    old = _previous_manifest(output_dir, plan.fingerprint, settings, overwrite)
    kept = _kept_shards(old, output_dir)
    for name in os.listdir(output_dir):
        if name.startswith(_TMP_PREFIX):  # partial shards of a killed run
            os.remove(os.path.join(output_dir, name))
    _atomic_write(os.path.join(output_dir, LABELS_NAME), _labels_text(plan.synsets, plan.names))

    results, tasks = _split_work(plan, old, kept, output_dir, resize_shorter, quality)
    if kept:
        logging.info("resuming in %s: %d shards kept, %d to write", output_dir, len(kept), len(tasks))

    def write_manifest(complete: bool) -> dict:
        manifest = _manifest(plan, settings, results, complete)
        _atomic_write(os.path.join(output_dir, MANIFEST_NAME), json.dumps(manifest, indent=1))
        return manifest

    write_manifest(complete=not tasks)
    bar = Progress(sum(len(t.items) for t in tasks), "converting", progress)

    def on_result(result: dict) -> None:
        results.append(result)
        write_manifest(complete=False)

    _run_pool(tasks, _convert_shard, _pool_convert_shard, num_workers or os.cpu_count() or 1, bar, on_result)
    bar.close()
    manifest = write_manifest(complete=True)
    for split, info in manifest["splits"].items():
        logging.info("%s: %d images in %d shards", split, info["num_examples"], info["num_shards"])
    logging.info(
        "%d files skipped, %d repaired; manifest: %s",
        len(manifest["skipped"]),
        len(manifest["repaired"]),
        os.path.join(output_dir, MANIFEST_NAME),
    )
    return manifest


def _labels_text(synsets: list[str], names: list[str]) -> str:
    entries = [schema.LabelEntry(k + LABEL_OFFSET, s, n) for k, (s, n) in enumerate(zip(synsets, names))]
    return schema.format_labels(entries)


def _manifest(plan: _Plan, settings: dict, results: list[dict], complete: bool) -> dict:
    splits = {}
    for split, shards in plan.shards.items():
        mine = sorted((r for r in results if r["split"] == split), key=lambda r: r["shard"]["file"])
        per_class = collections.Counter({s: 0 for s in plan.synsets})
        for r in mine:
            per_class.update(r["per_class"])
        splits[split] = {
            "num_examples": sum(r["shard"]["num_records"] for r in mine),
            "num_inputs": sum(len(s) for s in shards),
            "num_shards": len(shards),
            "shards": [r["shard"] for r in mine],
            "per_class": dict(per_class),
        }
    notes = {
        key: plan.skipped * (key == "skipped") + [n for r in results for n in r[key]]
        for key in ("skipped", "repaired")
    }
    return {
        "format_version": FORMAT_VERSION,
        "complete": complete,
        "label_offset": LABEL_OFFSET,
        "num_classes": len(plan.synsets),
        "classes": [
            {"index": k, "synset": s, "name": n} for k, (s, n) in enumerate(zip(plan.synsets, plan.names))
        ],
        "settings": settings,
        "fingerprint": plan.fingerprint,
        "inputs": plan.inputs,
        "splits": splits,
        **{key: sorted(v, key=lambda n: (n["split"], n["path"])) for key, v in notes.items()},
    }


# ----------------------------------------------------------------------------- verify


class _VerifyTask(NamedTuple):
    split: str
    path: str
    entry: dict
    synsets: list[str]
    names: list[str]
    resize_shorter: int


def _verify_shard(task: _VerifyTask, on_image: Callable[[], None]) -> dict:
    """Reads and decodes every record of one shard; returns problems and per-class counts."""
    name, problems, per_class = os.path.basename(task.path), [], collections.Counter()
    if not os.path.isfile(task.path):
        return {"split": task.split, "problems": [f"{name}: missing"], "per_class": per_class}
    if sha256_file(task.path) != task.entry["sha256"]:
        problems.append(f"{name}: sha256 differs from the manifest")
    count = 0
    try:
        for count, record in enumerate(tf.data.TFRecordDataset(task.path).as_numpy_iterator(), 1):
            feature = tf.train.Example.FromString(record).features.feature
            try:
                value = {
                    k: (feature[k].bytes_list.value or feature[k].int64_list.value)[0]
                    for k in (
                        ENCODED_KEY,
                        FORMAT_KEY,
                        HEIGHT_KEY,
                        WIDTH_KEY,
                        CHANNELS_KEY,
                        COLORSPACE_KEY,
                        FILENAME_KEY,
                        LABEL_KEY,
                        SYNSET_KEY,
                        TEXT_KEY,
                    )
                }
            except IndexError:
                problems.append(f"{name} record {count}: a schema feature is missing")
                continue
            where = f"{name} record {count} ({value[FILENAME_KEY].decode()})"
            label = value[LABEL_KEY] - LABEL_OFFSET
            if not 0 <= label < len(task.synsets):
                problems.append(f"{where}: label {label} out of range")
                continue
            per_class[task.synsets[label]] += 1
            if (value[SYNSET_KEY].decode(), value[TEXT_KEY].decode()) != (
                task.synsets[label],
                task.names[label],
            ):
                problems.append(f"{where}: synset/text do not match label {label}")
            if (value[FORMAT_KEY], value[COLORSPACE_KEY], value[CHANNELS_KEY]) != (
                b"JPEG",
                b"RGB",
                3,
            ) or sniff_format(value[ENCODED_KEY]) != "JPEG":
                problems.append(f"{where}: not a 3-channel RGB JPEG")
                continue
            try:
                shape = tuple(tf.io.decode_jpeg(value[ENCODED_KEY]).shape)
            except tf.errors.OpError:
                problems.append(f"{where}: image does not decode")
                continue
            if shape != (value[HEIGHT_KEY], value[WIDTH_KEY], 3):
                problems.append(f"{where}: decoded shape {shape} differs from the stored size")
            elif task.resize_shorter and min(shape[:2]) != task.resize_shorter:
                problems.append(f"{where}: shorter side {min(shape[:2])} is not {task.resize_shorter}")
            on_image()
    except tf.errors.OpError as e:
        problems.append(f"{name}: unreadable after {count} records ({e.message.splitlines()[0]})")
    if count != task.entry["num_records"]:
        problems.append(f"{name}: {count} records, manifest says {task.entry['num_records']}")
    return {"split": task.split, "problems": problems, "per_class": per_class}


def _pool_verify_shard(task: _VerifyTask) -> dict:
    return _verify_shard(task, _bump_counter)


def verify(output_dir: str, num_workers: int | None = None, progress: bool = True) -> list[str]:
    """Reads every record of a converted folder and checks it against manifest.json.

    Checks shard sha256s and record counts, decodes every image, and compares labels,
    synsets, sizes, per-class totals and labels.txt with the manifest.

    Args:
      output_dir: a folder written by `convert`.
      num_workers: worker processes; default os.cpu_count(); 1 runs in this process.
      progress: print a progress line on stderr.
    Returns:
      Human-readable problems; empty when the folder is sound.
    Raises:
      ConversionError: there is no readable manifest in `output_dir`.
    """
    manifest = load_manifest(output_dir)
    problems = [] if manifest.get("complete") else ["manifest says the conversion is incomplete"]
    synsets = [c["synset"] for c in manifest["classes"]]
    names = [c["name"] for c in manifest["classes"]]
    labels = _labels_text(synsets, names)
    try:
        with open(os.path.join(output_dir, LABELS_NAME), encoding="utf-8") as f:
            if f.read() != labels:
                problems.append(f"{LABELS_NAME} differs from the manifest's classes")
    except OSError:
        problems.append(f"{LABELS_NAME} is missing")
    listed = {e["file"] for info in manifest["splits"].values() for e in info["shards"]}
    problems += [
        f"{n}: not listed in the manifest"
        for n in _our_files(output_dir)
        if n not in listed and n not in (MANIFEST_NAME, LABELS_NAME)
    ]
    tasks, per_class = [], {}
    for split, info in manifest["splits"].items():
        tasks += [
            _VerifyTask(
                split,
                os.path.join(output_dir, e["file"]),
                e,
                synsets,
                names,
                manifest["settings"]["resize_shorter"],
            )
            for e in info["shards"]
        ]
        if len(info["shards"]) != info["num_shards"]:
            problems.append(f"{split}: {len(info['shards'])} of {info['num_shards']} shards in the manifest")
        per_class[split] = collections.Counter({s: 0 for s in synsets})

    def on_result(result: dict) -> None:
        problems.extend(result["problems"])
        per_class[result["split"]].update(result["per_class"])

    bar = Progress(sum(t.entry["num_records"] for t in tasks), "verifying", progress)
    _run_pool(tasks, _verify_shard, _pool_verify_shard, num_workers or os.cpu_count() or 1, bar, on_result)
    bar.close()
    for split, info in manifest["splits"].items():
        if dict(per_class[split]) != info["per_class"]:
            problems.append(f"{split}: per-class totals differ from the manifest")
        if sum(per_class[split].values()) != info["num_examples"]:
            problems.append(
                f"{split}: {sum(per_class[split].values())} records, manifest says {info['num_examples']}"
            )
    return problems
