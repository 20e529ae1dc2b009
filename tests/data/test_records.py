"""Tests of alexnet_tf.data.records through the pipelines: damaged shards, skipped records, label checks."""

import os
import re

import pytest
import tensorflow as tf
from tfrecord_fixtures import make_example, write_fake_tfrecords

from alexnet_tf.cli import error_message
from alexnet_tf.data import pipelines
from alexnet_tf.data.records import END_OF_SHARD, read_shard, shard_record_counts


@pytest.mark.parametrize("how", ["manifest", "labels_file", "argument"])
def test_one_based_labels_come_out_zero_based(tmp_path, how):
    records = write_fake_tfrecords(
        tmp_path,
        num_records=6,
        num_shards=1,
        num_classes=3,
        label_offset=1,
        write_manifest=how == "manifest",
        write_labels_file=how == "labels_file",
    )
    pattern = str(tmp_path / "train-*")
    if how == "argument":
        with pytest.raises(ValueError, match="label_offset=1"):
            pipelines.evaluation_dataset(pattern, 6)
    offset = 1 if how == "argument" else None
    _, labels = next(iter(pipelines.evaluation_dataset(pattern, 6, label_offset=offset, num_classes=3)))
    assert labels.numpy().tolist() == [r.label for r in records]


def test_a_wrong_label_offset_fails_loudly(tmp_path):
    write_fake_tfrecords(tmp_path, num_records=12, num_shards=1, num_classes=3, label_offset=1)
    dataset = pipelines.evaluation_dataset(str(tmp_path / "train-*"), 12, label_offset=0, num_classes=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="label_offset"):
        next(iter(dataset))


def _damage(path, how):
    content = bytearray(open(path, "rb").read())
    if how == "truncated":
        content = content[:-100]  # cuts into the last record
    else:
        length = int.from_bytes(content[:8], "little")
        start = 12 + length + 4 + 12  # data of the second record
        content[start + 50] ^= 0xFF  # its CRC no longer matches: "corrupted record"
    open(path, "wb").write(bytes(content))


@pytest.mark.parametrize("how", ["truncated", "corrupted"])
@pytest.mark.parametrize("training", [False, True])
def test_a_damaged_shard_is_an_error_naming_the_file(tmp_path, how, training):
    write_fake_tfrecords(tmp_path, num_records=12, num_shards=3, num_classes=3)
    bad = str(tmp_path / "train-00001-of-00003")
    _damage(bad, how)
    # Training without the manifest's record counts finds the damage when it counts the shards.
    with pytest.raises(tf.errors.InvalidArgumentError, match="train-00001-of-00003") as caught:
        dataset = pipelines.training_dataset if training else pipelines.evaluation_dataset
        for _ in dataset(str(tmp_path / "train-*"), 4).take(12):
            pass
    # The one line every command prints of it reads as a sentence.
    line = error_message(caught.value)
    assert re.fullmatch(
        rf"corrupt or truncated TFRecord shard {re.escape(bad)} \(its records frame \d+ of its \d+ "
        r"bytes\): convert it again; training can skip such shards with --skip_corrupt",
        line,
    ), line


@pytest.mark.parametrize("how,kept_from_bad_shard", [("truncated", 3), ("corrupted", 1)])
def test_skip_corrupt_skips_counts_and_logs(tmp_path, capfd, how, kept_from_bad_shard):
    write_fake_tfrecords(tmp_path, num_records=12, num_shards=3, num_classes=3)
    _damage(str(tmp_path / "train-00001-of-00003"), how)
    dataset = pipelines.evaluation_dataset(str(tmp_path / "train-*"), 1, skip_corrupt=True)
    assert sum(1 for _ in dataset) == 8 + kept_from_bad_shard
    log = capfd.readouterr().err
    assert "train-00001-of-00003" in log and "corrupt TFRecord shards skipped so far: 1" in log


def test_skip_corrupt_skips_undecodable_images(tmp_path):
    records = write_fake_tfrecords(tmp_path, num_records=4, num_shards=1, num_classes=3)
    with tf.io.TFRecordWriter(str(tmp_path / "train-00001-of-00001")) as writer:
        writer.write(make_example(b"\xff\xd8 not a jpeg", 0, 256, 256, "n0", "a", "bad").SerializeToString())
    pattern = str(tmp_path / "train-*")
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(pipelines.evaluation_dataset(pattern, 1))
    assert len(list(pipelines.evaluation_dataset(pattern, 1, skip_corrupt=True))) == len(records)


def test_shard_record_counts_count_whole_shards_and_name_a_damaged_one(tmp_path):
    write_fake_tfrecords(tmp_path, num_records=12, num_shards=3, num_classes=3)
    files = sorted(str(p) for p in tmp_path.glob("train-*"))
    assert shard_record_counts(files) == [4, 4, 4]
    _damage(files[1], "truncated")
    with pytest.raises(tf.errors.InvalidArgumentError, match="train-00001-of-00003"):
        shard_record_counts(files)
    assert shard_record_counts(files, skip_corrupt=True) == [4, 3, 4]  # what the pipeline reads


def test_read_shard_ends_a_damaged_shard_with_the_end_marker_when_skipping(tmp_path):
    write_fake_tfrecords(tmp_path, num_records=4, num_shards=1, num_classes=3)
    (path,) = [str(p) for p in tmp_path.glob("train-*")]
    _damage(path, "truncated")
    groups = [g.numpy().tolist() for g in read_shard(path, os.path.getsize(path), skip_corrupt=True)]
    assert groups[-1] == [END_OF_SHARD] and sum(len(g) for g in groups[:-1]) == 3
