"""verify(): every record of a converted folder re-read, decoded and checked against manifest.json."""

from __future__ import annotations

import collections
from collections.abc import Callable
import os
from typing import NamedTuple

import tensorflow as tf

from alexnet_tf import cli
from alexnet_tf.data.convert.build import labels_text, load_manifest, output_files
from alexnet_tf.data.convert.images import sniff_format
from alexnet_tf.data.convert.shards import Progress, bump_counter, run_pool, sha256_file
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
        problems.append(f"{name}: unreadable after {count} records ({cli.error_message(e)})")
    if count != task.entry["num_records"]:
        problems.append(f"{name}: {count} records, manifest says {task.entry['num_records']}")
    return {"split": task.split, "problems": problems, "per_class": per_class}


def _pool_verify_shard(task: _VerifyTask) -> dict:
    return _verify_shard(task, bump_counter)


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
    labels = labels_text(synsets, names)
    try:
        with open(os.path.join(output_dir, LABELS_NAME), encoding="utf-8") as f:
            if f.read() != labels:
                problems.append(f"{LABELS_NAME} differs from the manifest's classes")
    except OSError:
        problems.append(f"{LABELS_NAME} is missing")
    listed = {e["file"] for info in manifest["splits"].values() for e in info["shards"]}
    problems += [
        f"{n}: not listed in the manifest"
        for n in output_files(output_dir)
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
    run_pool(tasks, _verify_shard, _pool_verify_shard, num_workers or os.cpu_count() or 1, bar, on_result)
    bar.close()
    for split, info in manifest["splits"].items():
        if dict(per_class[split]) != info["per_class"]:
            problems.append(f"{split}: per-class totals differ from the manifest")
        if sum(per_class[split].values()) != info["num_examples"]:
            problems.append(
                f"{split}: {sum(per_class[split].values())} records, manifest says {info['num_examples']}"
            )
    return problems
