"""Every command README.md, BUILD.md and docs/ (guides and design records) show is run by some
test as a fresh process.

Tests that call a command's function in-process share the test process's imports, which once
hid an `alexnet_tf.export` that could not load a `.keras` file for any user. The first test
reads the documentation and fails when a documented `python -m alexnet_tf.X` or
`python tools/X.py` has no test that starts it as its own process; the others run the
commands that had none.
"""

import glob
import json
import os
import re

from conftest import REPO, run_command
import keras
import numpy as np
import pytest

DOCS = [
    "README.md",
    "BUILD.md",
    *sorted(glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True)),
]


def documented_commands():
    """{"alexnet_tf.X" or "tools/X.py"} named after `python` or `python3` in the docs."""
    commands = set()
    for path in DOCS:
        with open(os.path.join(REPO, path), encoding="utf-8") as f:
            text = f.read()
        commands.update(re.findall(r"python3? -m (alexnet_tf\.[a-z_]+)", text))
        commands.update(re.findall(r"python3? (tools/[a-z_]+\.py)", text))
    return commands


def test_every_documented_command_is_started_as_a_fresh_process_by_a_test():
    sources = ""
    for path in glob.glob(os.path.join(REPO, "tests", "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8") as f:
            sources += f.read()
    commands = documented_commands()
    assert {"alexnet_tf.train", "alexnet_tf.export", "alexnet_tf.convert"} <= commands
    missing = []
    for command in sorted(commands):
        if command.startswith("alexnet_tf."):
            started = re.search(r'"-m",\s*"' + re.escape(command) + '"', sources)
        else:
            name = os.path.basename(command)
            started = re.search(r'"tools",\s*"' + re.escape(name) + '"|"' + re.escape(command) + '"', sources)
        if not started:
            missing.append(command)
    assert not missing, f"documented commands no test starts as a process: {missing}"


@pytest.mark.slow
def test_export_command_writes_an_onnx_file_from_a_keras_file(tmp_path):
    """`python -m alexnet_tf.export --checkpoint=model.keras --export_dir=... --format=onnx`."""
    pytest.importorskip("tf2onnx")
    from alexnet_tf import GroupedConv2D, LocalResponseNormalization
    from alexnet_tf.serving import onnx_export

    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.Conv2D(8, 11, strides=4, activation="relu")(inputs)
    x = LocalResponseNormalization()(x)
    x = GroupedConv2D(16, 5, groups=2, padding="same", activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x)))
    model.save(tmp_path / "model.keras")
    result = run_command(
        [
            "-m",
            "alexnet_tf.export",
            f"--checkpoint={tmp_path / 'model.keras'}",
            f"--export_dir={tmp_path / 'models' / 'alexnet.onnx'}",
            "--format=onnx",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    path = str(tmp_path / "models" / "alexnet.onnx")
    assert result.stdout.strip().splitlines()[-1] == path
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 256, 256, 3)).astype(np.float32)
    expected = onnx_export.onnx_function(model)(pixels)[onnx_export.OUTPUT_NAME].numpy()
    np.testing.assert_allclose(onnx_export.onnxruntime_probabilities(path, pixels), expected, atol=1e-5)


@pytest.mark.slow
def test_grouped_conv_benchmark_tool_times_every_candidate():
    result = run_command(
        [
            "tools/benchmark_grouped_conv.py",
            "--batch_size=2",
            "--steps=1",
            "--repeats=1",
            "--dtype=float32",
            "--json",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    text = json.dumps(report)
    for candidate in ("split", "native", "keras"):
        assert candidate in text


@pytest.mark.slow
def test_onednn_ab_tool_runs_both_kernel_families():
    result = run_command(
        ["tools/onednn_ab.py", "--variant=one_weird_trick", "--rounds=1", "--batch_size=1", "--steps=1"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    row = [line for line in result.stdout.splitlines() if line.startswith("| one_weird_trick")]
    off, on = (float(v) for v in row[0].split("|")[2:4])
    assert off > 0 and on > 0


@pytest.mark.slow
def test_compare_pytorch_tool_runs_where_pytorch_is_installed():
    pytest.importorskip(
        "torch", reason="PyTorch is for comparison benchmarks only: pip install torch==2.13.0"
    )
    result = run_command(
        [
            "tools/compare_pytorch.py",
            "--batch_size=2",
            "--steps=1",
            "--repeats=1",
            "--precision=float32",
            "--json",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch" in result.stdout.lower()


@pytest.mark.slow
def test_serving_peak_rss_tool_refuses_the_bomb(tmp_path):
    result = run_command(["tools/serving_peak_rss.py", str(tmp_path), "--smoke"], env={"PYTHONPATH": REPO})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and "(1, 7)" in lines[0]
    assert "refused: " in lines[1] and "20000x20000" in lines[1]
