"""Tests of alexnet_tf.costs (the layer table, training FLOPs) and of `python -m alexnet_tf.info`."""

import json
import subprocess
import sys

from conftest import REPO
import pytest

from alexnet_tf.costs import layer_table, training_flops
from alexnet_tf.model import build_alexnet


def test_layer_table_paper_totals():
    rows = layer_table(build_alexnet())
    by_name = {r.name: r for r in rows}
    assert sum(r.params for r in rows) == 60_965_224
    # conv2: 27*27 outputs x 256 filters x (5*5*48) weights each.
    assert by_name["conv2"].macs == 27 * 27 * 256 * 5 * 5 * 48
    assert by_name["fc6"].macs == 9216 * 4096
    assert by_name["lrn1"].macs == 0 and by_name["pool5"].output_shape == (6, 6, 256)
    total = sum(r.macs for r in rows)
    assert 0.70e9 < total < 0.75e9  # docs/paper.md: about 0.72 G multiply-adds
    assert 4.0e9 < training_flops(rows) < 4.2e9  # docs/paper.md: about 4.1 GFLOP per training image


def _run_info(*args):
    return subprocess.run(
        [sys.executable, "-m", "alexnet_tf.info", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_info_command_prints_table_and_totals():
    result = _run_info()
    assert result.returncode == 0, result.stderr[-2000:]
    assert "60,965,224" in result.stdout and "724,406,816" in result.stdout
    assert "conv2" in result.stdout and "27x27x256" in result.stdout
    result = _run_info("--variant=one_weird_trick", "--num_classes=10", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    table = json.loads(result.stdout)
    assert table["total_params"] == 61_100_840 - 4_097_000 + 4096 * 10 + 10
    assert [layer["name"] for layer in table["layers"]][-2:] == ["fc8", "logits"]


@pytest.mark.slow
def test_info_command_rejects_bad_flag_values():
    result = _run_info("--num_classes=0")
    assert result.returncode == 2
    assert "alexnet_tf.info: error: build_alexnet: num_classes must be a positive integer, got 0." in (
        result.stderr.splitlines()
    )
    assert "Traceback" not in result.stderr
    result = _run_info("--variant=vgg")  # a flag absl refuses: the same one line and status
    assert result.returncode == 2 and "Traceback" not in result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("alexnet_tf.info:")]
    assert ours == [
        "alexnet_tf.info: error: flag --variant=vgg: value should be one of <paper|one_weird_trick|caffe> "
        "(--helpshort lists the flags)"
    ]
