"""Tests of alexnet_tf/data/demo.py: deterministic rendering, the real converter, the cache."""

import json
import os
import subprocess
import sys

from conftest import REPO
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.data import convert, demo

SMALL = dict(num_classes=10, train_per_class=4, validation_per_class=2)


def tree_bytes(root):
    contents = {}
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                contents[os.path.relpath(os.path.join(folder, name), root)] = f.read()
    return contents


def shard_sha256s(manifest):
    return {s["file"]: s["sha256"] for split in manifest["splits"].values() for s in split["shards"]}


def test_render_is_a_function_of_the_seed(tmp_path):
    first = demo.render_demo_tree(
        str(tmp_path / "a"), seed=3, num_classes=3, train_per_class=2, validation_per_class=2
    )
    demo.render_demo_tree(
        str(tmp_path / "b"), seed=3, num_classes=3, train_per_class=2, validation_per_class=2
    )
    demo.render_demo_tree(
        str(tmp_path / "c"), seed=4, num_classes=3, train_per_class=2, validation_per_class=2
    )
    a, b, c = (tree_bytes(tmp_path / name) for name in "abc")
    assert a == b and a != c
    assert sorted(os.listdir(first.train_dir)) == ["n00000000", "n00000001", "n00000002"]
    assert len(os.listdir(first.validation_dir)) == 6
    with open(first.class_names, encoding="utf-8") as f:
        assert f.readline() == "n00000000 circle\n"


def test_images_vary_in_size_and_classes_differ():
    images = [
        demo.render_image(c, np.random.default_rng([0, c, n]))
        for c in range(len(demo.CLASS_NAMES))
        for n in range(3)
    ]
    assert len({image.shape for image in images}) > 10
    assert all(96 <= min(i.shape[:2]) and max(i.shape[:2]) <= 160 and i.shape[2] == 3 for i in images)
    assert all(i.std() > 10 for i in images)  # a visible shape or texture, not a flat colour


def test_build_is_deterministic_and_reused_from_the_cache(tmp_path):
    output_dir = demo.build_demo_dataset(str(tmp_path / "one"), seed=0, **SMALL)
    manifest = convert.load_manifest(output_dir)
    assert manifest["complete"] and manifest["num_classes"] == 10
    assert [c["name"] for c in manifest["classes"]] == list(demo.CLASS_NAMES)
    assert manifest["splits"]["train"]["num_examples"] == 40
    assert manifest["splits"]["validation"]["num_examples"] == 20
    assert set(manifest["splits"]["validation"]["per_class"].values()) == {2}
    assert not manifest["skipped"] and not manifest["repaired"]
    assert convert.verify(output_dir, num_workers=1, progress=False) == []

    stamp = os.stat(os.path.join(output_dir, "manifest.json")).st_mtime_ns
    assert demo.build_demo_dataset(str(tmp_path / "one"), seed=0, **SMALL) == output_dir
    assert os.stat(os.path.join(output_dir, "manifest.json")).st_mtime_ns == stamp

    again = convert.load_manifest(demo.build_demo_dataset(str(tmp_path / "two"), seed=0, **SMALL))
    other = convert.load_manifest(demo.build_demo_dataset(str(tmp_path / "two"), seed=1, **SMALL))
    assert shard_sha256s(again) == shard_sha256s(manifest)
    assert shard_sha256s(other) != shard_sha256s(manifest)


def test_interrupted_build_finishes_on_the_next_call(tmp_path):
    output_dir = demo.build_demo_dataset(str(tmp_path), seed=0, **SMALL)
    manifest = convert.load_manifest(output_dir)
    os.remove(os.path.join(output_dir, manifest["splits"]["train"]["shards"][0]["file"]))
    manifest["complete"] = False
    with open(os.path.join(output_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    assert demo.build_demo_dataset(str(tmp_path), seed=0, **SMALL) == output_dir
    assert convert.verify(output_dir, num_workers=1, progress=False) == []


@pytest.mark.slow
def test_default_demo_dataset_via_the_tool(tmp_path):
    """The trainer's --demo data: 10 classes x (100 train + 20 validation), 256-px short side."""
    result = subprocess.run(
        [sys.executable, os.path.join("tools", "make_demo_dataset.py"), f"--output_dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    output_dir = result.stdout.strip().splitlines()[-1]
    manifest = convert.load_manifest(output_dir)
    assert manifest["splits"]["train"]["num_examples"] == 1000
    assert set(manifest["splits"]["train"]["per_class"].values()) == {100}
    assert manifest["splits"]["validation"]["num_examples"] == 200
    shard = os.path.join(output_dir, manifest["splits"]["train"]["shards"][0]["file"])
    record = next(iter(tf.data.TFRecordDataset(shard)))
    feature = tf.train.Example.FromString(record.numpy()).features.feature
    image = tf.io.decode_jpeg(feature["image/encoded"].bytes_list.value[0])
    assert min(image.shape[:2]) == 256 and image.shape[2] == 3
