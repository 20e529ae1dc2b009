"""Smoke tests of `python -m alexnet_tf.benchmark`: each mode runs a couple of steps and prints JSON.

Real subprocesses with tiny settings, as a user runs the command; no timing is asserted, only
that the report is well formed and every rate is a positive number.
"""

import json
import math
import os
import platform
import subprocess
import sys

from conftest import REPO
import keras
import pytest
from tfrecord_fixtures import write_fake_tfrecords

from alexnet_tf.benchmark import serve as bench_serve

TIMEOUT = 300
# The smallest settings: one timed step of a batch of 2 (2 replicas of 1 in the mirrored run).
TINY = ["--batch_size=2", "--steps=1", "--warmup_steps=1", "--repeats=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("shards"))
    write_fake_tfrecords(directory, num_records=16, num_shards=2, num_classes=10)
    return directory


def _benchmark(*args):
    return subprocess.run(
        [sys.executable, "-m", "alexnet_tf.benchmark", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def _rates(node):
    """Every images/sec figure in the report (medians, minima, maxima and per-round values)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.startswith("images_per_sec") or key == "rounds_images_per_sec":
                yield from value if isinstance(value, list) else [value]
            else:
                yield from _rates(value)
    elif isinstance(node, list):
        for value in node:
            yield from _rates(value)


def _report(mode, *args):
    result = _benchmark(f"--mode={mode}", "--json", *args)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)  # stdout holds the JSON object and nothing else
    assert report["mode"] == mode
    rates = list(_rates(report))
    assert rates and all(isinstance(r, float) and math.isfinite(r) and r > 0 for r in rates), rates
    assert report["peak_rss_gib"] > 0
    env = report["environment"]
    assert env["tensorflow"][0].isdigit() and env["keras"][0].isdigit() and env["python"][0].isdigit()
    assert env["cpus"] >= 1 and isinstance(env["cpu_flags"], list) and isinstance(env["gpus"], list)
    # The command runs oneDNN's kernels unless the environment turns them off (the portability pass).
    if platform.machine() in ("x86_64", "AMD64"):
        assert env["onednn"] == (os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0"), env
    assert "repeat 1/1" in result.stderr  # progress goes to stderr
    return report


@pytest.mark.slow
def test_train_mode_times_every_precision_with_the_matmul_ceiling():
    report = _report("train", *TINY, "--num_classes=10", "--matmul_size=256")
    assert [r["precision"] for r in report["results"]] == ["float32", "mixed_bfloat16"]
    # Each precision against the matmul in its own dtype, timed in every round next to training.
    assert set(report["matmul_tflops"]) == {"float32", "bfloat16"}
    assert all(rate > 0 for rate in report["matmul_tflops"].values())
    assert {d: len(r) for d, r in report["matmul_tflops_rounds"].items()} == {"float32": 1, "bfloat16": 1}
    assert 3.5 < report["training_gflop_per_image"] < 4.5  # the paper network's ~4.1
    for row, dtype in zip(report["results"], ("float32", "bfloat16")):
        assert row["matmul_dtype"] == dtype
        share = row["tflops"] / report["matmul_tflops"][dtype]
        assert row["share_of_matmul"] == pytest.approx(share, rel=1e-9), row  # one round: no median
        assert row["peak_fraction"] == {}  # a CPU: no datasheet peak
        assert row["images_per_sec_min"] <= row["images_per_sec"] <= row["images_per_sec_max"]
    assert report["settings"]["replicas"] == 1 and report["settings"]["steps"] == 1


@pytest.mark.slow
def test_train_mode_mirrors_over_two_logical_cpus_with_both_filter_gradients():
    report = _report(
        "train",
        *TINY,
        "--num_classes=10",
        "--nomatmul",
        "--replicas=2",
        "--precision=float32",
        "--variant=one_weird_trick",
        "--filter_gradient=native",
        "--filter_gradient=gemm",
    )
    assert report["settings"]["replicas"] == 2
    assert [(r["precision"], r["filter_gradient"]) for r in report["results"]] == [
        ("float32", "native"),
        ("float32", "gemm"),
    ]
    assert report["matmul_tflops"] is None
    assert all(r["share_of_matmul"] is None for r in report["results"])


@pytest.mark.slow
def test_end_to_end_mode_times_tfrecords_against_synthetic_data(data_dir):
    report = _report(
        "end_to_end", *TINY, f"--data_dir={data_dir}", "--precision=float32", "--variant=one_weird_trick"
    )
    assert [(r["precision"], r["data"]) for r in report["results"]] == [
        ("float32", "tfrecord"),
        ("float32", "synthetic"),
    ]
    assert report["ratios"]["float32 tfrecord/synthetic"] > 0
    assert report["data"] == {
        "data_dir": data_dir,
        "num_classes": 10,
        "label_offset": 0,
        "train_examples": 16,
        "demo": False,
    }


def test_input_mode_times_the_pipeline_against_its_bounds(data_dir):
    report = _report("input", *TINY, f"--data_dir={data_dir}", "--pil_processes=1")
    rows = [r["row"] for r in report["results"]] + [s["row"] for s in report["skipped"]]
    assert rows == ["decode", "pipeline", "pipeline+finish", "pil"]
    assert report["ratios"]["pipeline/decode"] > 0
    # The float32 batches cost the CPU more than the uint8 ones the trainer's step finishes.
    cpu_ms = {r["row"]: r["cpu_ms_per_image"] for r in report["results"]}
    assert cpu_ms["pipeline+finish"] > 0 and report["ratios"]["pipeline+finish/decode by CPU time"] > 0
    assert report["data"]["shards"] == 2 and report["data"]["demo"] is False


def test_serve_mode_reports_latency_and_throughput():
    report = _report(
        "serve", "--requests=3", "--serve_batch_size=2", "--steps=1", "--repeats=1", "--num_classes=10"
    )
    assert [(r["signature"], r["batch"]) for r in report["latency"]] == [
        ("serving_default", 1),
        ("predict_images", 1),
    ]
    for row in report["latency"]:
        assert 0 < row["median_ms"] <= row["p99_ms"] and row["requests"] == 3
    assert [(r["runtime"], r["batch"]) for r in report["throughput"]] == [("saved_model", 2)]
    assert report["skipped"] == [{"runtime": "onnxruntime", "reason": "skipped: no --onnx"}]


def test_serve_rows_include_onnxruntime_when_installed(monkeypatch):
    """In-process on a small stand-in model: converting the real one takes tf2onnx a minute."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")

    def small_alexnet(num_classes, variant, dropout_rate):
        del variant, dropout_rate
        inputs = keras.Input((224, 224, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 8, strides=8)(inputs))
        return keras.Model(inputs, keras.layers.Dense(num_classes)(x))

    monkeypatch.setattr("alexnet_tf.model.build_alexnet", small_alexnet)
    result = bench_serve.run(
        variant="paper", num_classes=10, requests=2, batch_size=2, warmup_steps=1, timed_steps=1, repeats=2
    )
    assert [r["runtime"] for r in result["latency"]] == ["saved_model", "saved_model", "onnxruntime"]
    assert [r["runtime"] for r in result["throughput"]] == ["saved_model", "onnxruntime"]
    assert all(len(r["rounds_images_per_sec"]) == 2 for r in result["throughput"])
    assert result["onnx_max_abs_probability_difference"] < 1e-4 and result["skipped"] == []
    assert "| onnxruntime | pixels |" in bench_serve.table(result)


@pytest.mark.parametrize(
    "contents, message", [([], "is empty"), (["notes.txt"], "no training files match 'train-*'")]
)
def test_data_dir_without_training_shards_exits_2_naming_the_flag(tmp_path, contents, message):
    for name in contents:
        (tmp_path / name).write_text("no shards here")
    result = _benchmark("--mode=end_to_end", f"--data_dir={tmp_path}", *TINY)
    assert result.returncode == 2, result.stderr[-4000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"alexnet_tf.benchmark: error: --data_dir={tmp_path}: ")
    assert message in errors[0]
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps=3", "--steps_per_execution=2"], "--steps=3 is not a multiple of --steps_per_execution=2"),
        (["--mode=serve", "--replicas=2"], "--replicas=2 applies to --mode=train and end_to_end only"),
        (["--mode=serve", "--filter_gradient=gemm"], "--filter_gradient=gemm applies to --mode=train only"),
        (["--batch_size=5", "--replicas=2"], "--batch_size=5 is not divisible by --replicas=2"),
    ],
)
def test_bad_flags_exit_2_with_one_line_naming_the_flag(args, message):
    result = _benchmark(*args)
    assert result.returncode == 2 and result.stdout == ""
    # `import alexnet_tf` imports TensorFlow (it registers the layers), whose C++ start-up lines
    # may come first whatever TF_CPP_MIN_LOG_LEVEL says; the command's own output is one line.
    ours = [
        line for line in result.stderr.strip().splitlines() if "alexnet_tf" in line or "Traceback" in line
    ]
    assert ours == [f"alexnet_tf.benchmark: error: {message}"]
    assert result.stderr.strip().splitlines()[-1] == ours[0]


def test_mixed_float16_with_grouped_convolutions_on_cpu_exits_2_as_the_trainer_refuses_it():
    result = _benchmark("--precision=mixed_float16", *TINY)
    assert result.returncode == 2
    assert "mixed_float16 needs a GPU for the paper variant" in result.stderr.splitlines()[-1]
