"""The GPU-node benchmark on the CPU: `alexnet_tf.benchmark.keras_backend` through tools/gpu_benchmark.sh
on Keras' JAX backend without TensorFlow, its flags, peak table and optimizer, and the bundle builder's plan.

The end-to-end test runs the shell script as a GPU node would, with a bundle folder holding only
this package (Keras and JAX come from this environment), tiny settings and JAX_PLATFORMS=cpu:
about 30 CPU seconds, most of it drawing the initial weights and compiling the step.
"""

import json
import math
import os
import re
import subprocess
import sys
import types

from conftest import REPO, run_command
import keras
import numpy as np
import pytest

from alexnet_tf.benchmark import keras_backend
from alexnet_tf.costs import layer_table, training_flops
from alexnet_tf.model import build_alexnet

SCRIPT = os.path.join(REPO, "tools", "gpu_benchmark.sh")
TINY = (
    "--variant=one_weird_trick --precision=mixed_bfloat16 --image_size=63 --batch_size=4 --steps=1 "
    "--warmup_steps=0"
)


@pytest.mark.slow
def test_gpu_benchmark_script_trains_on_jax_without_importing_tensorflow(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    os.symlink(os.path.join(REPO, "alexnet_tf"), bundle / "alexnet_tf")
    out = tmp_path / "figures.json"
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "PYTHONPATH")}
    env.update(PYTHON=sys.executable, JAX_PLATFORMS="cpu", GPU_BENCHMARK_ARGS=TINY)
    # --repeats after OUT.json: flags there are passed on after GPU_BENCHMARK_ARGS.
    result = subprocess.run(
        ["bash", SCRIPT, str(bundle), str(out), "--repeats=2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "== device" in result.stdout and "CpuDevice" in result.stdout
    assert "| one_weird_trick | mixed_bfloat16 | 4 |" in result.stdout  # the markdown table
    assert "row 1/1" in result.stderr  # progress
    report = json.loads(out.read_text())
    env = report["environment"]
    # Checked by the benchmark's process after everything it did.
    assert env["tensorflow_imported"] is False
    assert env["backend"] == "jax" and env["platform"] == "cpu" and env["jax"][0].isdigit()
    assert env["keras"] == keras.__version__ and env["device"]
    assert report["complete"] is True
    settings = report["settings"]
    assert settings["train_step"] == "jit" and settings["repeats"] == 2 and settings["batch_sizes"] == [4]
    assert settings["weight_decay"] == 5e-4 and settings["momentum"] == 0.9
    (row,) = report["results"]
    assert (row["variant"], row["precision"], row["batch_size"]) == ("one_weird_trick", "mixed_bfloat16", 4)
    rates = row["rounds_images_per_sec"]
    assert len(rates) == 2 and all(math.isfinite(r) and r > 0 for r in rates)
    assert row["images_per_sec_min"] <= row["images_per_sec"] <= row["images_per_sec_max"]
    # The package's own FLOP count of this model, and TFLOP/s = images/s x FLOPs per image.
    model = build_alexnet(variant="one_weird_trick", input_shape=(63, 63, 3), kernel_initializer="zeros")
    assert row["training_flops_per_image"] == training_flops(layer_table(model))
    assert row["tflops"] == pytest.approx(row["images_per_sec"] * row["training_flops_per_image"] / 1e12)
    assert row["peak_tflops"] == {} and row["peak_fraction"] == {}  # no datasheet peak for a CPU
    assert row["compile_seconds"] > 0 and row["final_loss_finite"]


def test_gpu_benchmark_script_rejects_a_folder_without_the_package(tmp_path):
    result = subprocess.run(
        ["bash", SCRIPT, str(tmp_path), str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"BUNDLE_DIR={tmp_path} holds no alexnet_tf package" in result.stderr


def _flags(**overrides):
    values = dict(
        variant=["paper", "one_weird_trick"],
        precision=["mixed_bfloat16", "float32"],
        batch_size=["128"],
        image_size=224,
        warmup_steps=5,
        steps=30,
        repeats=3,
        train_step="auto",
        json=None,
    )
    values.update(overrides)
    return types.SimpleNamespace(**values)


def test_flags_take_lists_and_repeats_and_name_the_bad_value():
    config = keras_backend.config_from_flags(
        _flags(variant=["one_weird_trick,paper", "paper"], batch_size=["128,256", "1024"]), "jax"
    )
    assert config.variants == ("one_weird_trick", "paper")
    assert config.batch_sizes == (128, 256, 1024) and config.train_step == "jit"
    assert keras_backend.config_from_flags(_flags(), "tensorflow").train_step == "train_on_batch"
    for overrides, backend, message in (
        ({"variant": ["alexnet"]}, "jax", "--variant=alexnet is not one of"),
        ({"precision": ["mixed_float16"]}, "jax", "--precision=mixed_float16 is not one of"),
        ({"batch_size": ["128,0"]}, "jax", "--batch_size=0 is not a positive integer"),
        ({"batch_size": ["128,,256"]}, "jax", "--batch_size=128,,256 has an empty item"),
        ({"steps": 0}, "jax", "--steps=0 must be >= 1"),
        ({"image_size": 127}, "jax", "--image_size=127 is below the 224 that --variant=paper needs"),
        ({"train_step": "jit"}, "torch", "--train_step=jit needs KERAS_BACKEND=jax"),
    ):
        with pytest.raises(keras_backend.ConfigError, match=message):
            keras_backend.config_from_flags(_flags(**overrides), backend)


def test_peaks_are_known_for_datasheet_gpus_only():
    h100 = keras_backend.peak_tflops("NVIDIA H100 80GB HBM3", "gpu")
    assert h100["bfloat16"] == 989.5 and h100["fp32"] == 67.0
    assert keras_backend.peak_tflops("NVIDIA H200", "gpu") == h100
    assert keras_backend.peak_tflops("NVIDIA H100 PCIe", "gpu")["bfloat16"] == 756.5
    assert keras_backend.peak_tflops("NVIDIA A100-SXM4-80GB", "gpu")["fp32"] == 19.5
    assert keras_backend.peak_tflops("NVIDIA H100 NVL", "gpu") is None
    assert keras_backend.peak_tflops("NVIDIA GeForce RTX 4090", "gpu") is None
    assert keras_backend.peak_tflops("AMD EPYC", "cpu") is None
    # bfloat16 rows against the bf16 peak; float32 rows against fp32 and the TF32 XLA may use.
    peaks, shares = keras_backend.peak_shares("mixed_bfloat16", 98.95, h100)
    assert peaks == {"bfloat16": 989.5} and shares == {"bfloat16": pytest.approx(0.1)}
    peaks, shares = keras_backend.peak_shares("float32", 49.45, h100)
    assert peaks == {"fp32": 67.0, "tf32": 494.5} and shares["tf32"] == pytest.approx(0.1)


def test_paper_sgd_decays_kernels_inside_the_momentum_update():
    """v <- 0.9 v - lr (g + wd w); w <- w + v on kernels; biases without the decay."""
    kernel = keras.Variable(np.full((2, 3), 2.0, np.float32), name="kernel")
    bias = keras.Variable(np.full((3,), 2.0, np.float32), name="bias")
    optimizer = keras_backend.PaperSGD(0.5, learning_rate=0.1, momentum=0.9)
    grads = [np.ones((2, 3), np.float32), np.ones((3,), np.float32)]
    expected = {}
    for name, w, decay in (("kernel", 2.0, 0.5), ("bias", 2.0, 0.0)):
        v = 0.0
        for _ in range(2):
            v = 0.9 * v - 0.1 * (1.0 + decay * w)
            w = w + v
        expected[name] = w
    for _ in range(2):
        optimizer.apply(grads, [kernel, bias])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel), expected["kernel"], rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bias), expected["bias"], rtol=1e-6)


def test_bundle_builder_plans_keras_and_what_jax_lacks(tmp_path):
    result = run_command(["tools/build_backend_bundle.py", f"--output={tmp_path / 'bundle'}", "--dry_run"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "bundle").exists()  # a dry run downloads and writes nothing
    packages_line, command_line = result.stdout.splitlines()[:2]
    assert packages_line.startswith("packages for CPython 3.12 on manylinux_2_27_x86_64: ")
    pins = packages_line.split(": ", 1)[1].split()
    assert f"keras=={keras.__version__}" in pins  # the Keras this project is tested with
    names = {re.split("[=<>]", pin)[0] for pin in pins}
    assert {"absl-py", "rich", "namex", "optree", "packaging", "h5py"} <= names
    # The node's JAX install has these, in the builds it was made for.
    assert not names & {"numpy", "ml-dtypes", "jax", "jaxlib", "tensorflow"}
    for option in ("--target", "--no-deps", "--only-binary=:all:", "--python-version 3.12"):
        assert option in command_line, option


def test_bundle_builder_refuses_a_folder_with_files(tmp_path):
    (tmp_path / "something").write_text("x")
    result = run_command(["tools/build_backend_bundle.py", f"--output={tmp_path}", "--dry_run"])
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"build_backend_bundle: error: --output={tmp_path} exists and is not an empty folder"
    )
