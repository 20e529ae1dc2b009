"""The convert() run: settings, manifest.json and labels.txt, resuming with the shards kept.

manifest.json is rewritten atomically as each shard completes, so that a killed run resumes where
it stopped; a folder holding another conversion is refused unless overwrite is asked for.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os

from absl import logging
import tensorflow as tf

# The on-disk contract (Example keys, labels.txt, manifest.json, label offset) is
# alexnet_tf.data.schema's: every reader of what this package writes reads it through that module.
from alexnet_tf.data import schema
from alexnet_tf.data.convert.images import DEFAULT_QUALITY, DEFAULT_RESIZE_SHORTER
from alexnet_tf.data.convert.scan import ConversionError, Plan, make_plan
from alexnet_tf.data.convert.shards import (
    SHARD_RE,
    TMP_PREFIX,
    Progress,
    ShardTask,
    atomic_write,
    convert_shard,
    pool_convert_shard,
    run_pool,
    shard_name,
)
from alexnet_tf.data.schema import LABEL_OFFSET
from alexnet_tf.data.schema import (
    LABELS_FILENAME as LABELS_NAME,
)
from alexnet_tf.data.schema import (
    MANIFEST_FILENAME as MANIFEST_NAME,
)

SPLITS = ("train", "validation")
FORMAT_VERSION = 1
DEFAULT_TRAIN_SHARDS = 1024
DEFAULT_VALIDATION_SHARDS = 128


def output_files(output_dir: str) -> list[str]:
    """Names in output_dir that a conversion writes: shards, labels.txt, manifest.json, temporaries."""
    return sorted(
        n
        for n in os.listdir(output_dir)
        if n in (MANIFEST_NAME, LABELS_NAME) or SHARD_RE.match(n) or n.startswith(TMP_PREFIX)
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
    ours = output_files(output_dir)
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
    plan: Plan, old: dict | None, kept: dict, output_dir: str, resize_shorter: int, quality: int
) -> tuple[list[dict], list[ShardTask]]:
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
                    ShardTask(
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
    bad = [
        f"--{name} must be {rule} (got {value})"
        for name, value, rule, ok in (
            ("resize_shorter", resize_shorter, ">= 0", resize_shorter >= 0),
            ("quality", quality, "in 1..100", 1 <= quality <= 100),
            ("train_shards", train_shards, ">= 1", train_shards >= 1),
            ("validation_shards", validation_shards, ">= 1", validation_shards >= 1),
        )
        if not ok
    ]
    if bad:
        raise ConversionError("; ".join(bad))
    plan = make_plan(
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
        if name.startswith(TMP_PREFIX):  # partial shards of a killed run
            os.remove(os.path.join(output_dir, name))
    atomic_write(os.path.join(output_dir, LABELS_NAME), labels_text(plan.synsets, plan.names))

    results, tasks = _split_work(plan, old, kept, output_dir, resize_shorter, quality)
    if kept:
        logging.info("resuming in %s: %d shards kept, %d to write", output_dir, len(kept), len(tasks))

    def write_manifest(complete: bool) -> dict:
        manifest = _manifest(plan, settings, results, complete)
        atomic_write(os.path.join(output_dir, MANIFEST_NAME), json.dumps(manifest, indent=1))
        return manifest

    write_manifest(complete=not tasks)
    bar = Progress(sum(len(t.items) for t in tasks), "converting", progress)

    def on_result(result: dict) -> None:
        results.append(result)
        write_manifest(complete=False)

    run_pool(tasks, convert_shard, pool_convert_shard, num_workers or os.cpu_count() or 1, bar, on_result)
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


def labels_text(synsets: list[str], names: list[str]) -> str:
    """The labels.txt contents for these classes, in label order."""
    entries = [schema.LabelEntry(k + LABEL_OFFSET, s, n) for k, (s, n) in enumerate(zip(synsets, names))]
    return schema.format_labels(entries)


def _manifest(plan: Plan, settings: dict, results: list[dict], complete: bool) -> dict:
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
