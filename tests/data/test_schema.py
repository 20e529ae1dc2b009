"""Tests of alexnet_tf.data.schema: labels.txt and the label offset of a data dir."""

import json

import pytest

from alexnet_tf.data import schema


def test_read_labels_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("0\tn01440764\ttench\n1\tn01443537\tgoldfish, Carassius auratus\n\n")
    entries = schema.read_labels_file(str(path))
    assert entries == [
        schema.LabelEntry(0, "n01440764", "tench"),
        schema.LabelEntry(1, "n01443537", "goldfish, Carassius auratus"),
    ]


@pytest.mark.parametrize("text", ["n01440764 tench\n", "0\tn0\ta\n2\tn2\tc\n", "x\tn0\ta\n"])
def test_read_labels_file_rejects_malformed_lines(tmp_path, text):
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match="labels.txt:"):
        schema.read_labels_file(str(path))


def test_detect_label_offset(tmp_path):
    assert schema.detect_label_offset(str(tmp_path)) is None
    (tmp_path / "labels.txt").write_text("1\tn0\ta\n2\tn1\tb\n")
    assert schema.detect_label_offset(str(tmp_path)) == 1
    (tmp_path / "manifest.json").write_text(json.dumps({"label_offset": 0, "num_classes": 2}))
    with pytest.raises(ValueError, match="label_offset=0"):
        schema.detect_label_offset(str(tmp_path))
    (tmp_path / "labels.txt").unlink()
    assert schema.detect_label_offset(str(tmp_path)) == 0
