"""The inputs: class folders and tars scanned into items, labels given, the plan of every shard.

Entries the scan cannot use (names that are not UTF-8, broken symlinks, symlink loops, unreadable
folders, pipes) are recorded as problems, never fatal; an input that makes the whole run
meaningless raises ConversionError. Nothing here reads an image or writes a file.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import errno
import hashlib
import importlib.util
import os
import random
import stat
import tarfile
from typing import NamedTuple

from absl import logging


class ConversionError(ValueError):
    """An input or output problem that makes the whole run meaningless; names path and fix."""


class Item(NamedTuple):
    """One input image: bytes [offset, offset+size) of `source` (offset None: whole file)."""

    relpath: str
    source: str
    offset: int | None
    size: int
    synset: str | None  # class folder or class tar; None for a file outside any class folder
    mtime_ns: int = 0  # of the file, or of the tar that holds it: part of the fingerprint


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


def _tar_items(
    path: str,
    base: int,
    prefix: str,
    synset_of: Callable[[str], str | None],
    classes: set[str],
    problems: list[tuple[str, str]],
    fileobj=None,
    mtime_ns: int | None = None,
) -> list[Item]:
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
                items.append(Item(shown, path, base + member.offset_data, member.size, synset, mtime_ns))
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
    items: list[Item],
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
            items.append(Item(shown, path, None, info.st_size, synset, info.st_mtime_ns))
        else:
            problems.append((shown, "not a regular file (a pipe, socket or device)"))


def _scan(root: str, flag: str) -> tuple[list[Item], list[str], list[tuple[str, str]]]:
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
            items.append(Item(entry.name, entry.path, None, info.st_size, None, info.st_mtime_ns))
    return items, sorted(classes), problems


def _read_labels_file(path: str) -> list[list[str]]:
    with open(_existing(path, "--validation_labels"), encoding="utf-8") as f:
        return [line.split() for line in f if line.strip()]


def _label_flat_validation(items: list[Item], labels_path: str | None, root: str) -> list[Item]:
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
class Plan:
    """What a run will write, decided before anything is written."""

    synsets: list[str]
    names: list[str]
    shards: dict[str, list[list[Item]]]  # split -> items of each shard
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


def make_plan(
    train_dir, validation_dir, validation_labels, class_names, train_shards, validation_shards, shuffle_seed
) -> Plan:
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
    return Plan(
        synsets, _read_class_names(class_names, synsets), shards, skipped, listing.hexdigest(), inputs
    )
