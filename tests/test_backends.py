"""The model on every Keras 3 backend: TensorFlow, JAX and PyTorch give the same logits.

Keras fixes its backend when it is imported, so each backend runs tests/backend_worker.py in
its own process, all of them at once (they meet through files: see the worker's docstring).
JAX and PyTorch run with TensorFlow hidden, as on a machine without it, so anything the
model API does with TensorFlow fails them. The TensorFlow worker writes the reference
weights (NumPy's random numbers in `.keras` files) and inputs; every worker computes the
logits of every variant, trains it one step with `fit`, saves and reloads it, and loads the
other backends' files. JAX is in the test extra; PyTorch is not (install the local
torch==2.13.0 wheel to run its half), and its tests skip where it is absent.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
import time

from conftest import REPO
import numpy as np
import pytest

WORKER = os.path.join(REPO, "tests", "backend_worker.py")
VARIANTS = ("paper", "caffe", "one_weird_trick")
OTHER_BACKENDS = ("jax", "torch")
MISSING_REASON = {
    "jax": "JAX is not installed (pip install '.[test]' installs it)",
    "torch": "PyTorch is not installed (pip install torch==2.13.0) to check the torch backend",
}
RTOL = 1e-4  # float32; differences are scaled by the reference's largest magnitude
TIMEOUT = 900


def installed(backend):
    return importlib.util.find_spec(backend) is not None


def readme_example():
    """The bash block of README.md's "Other Keras backends" section."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        section = f.read().split("## Other Keras backends", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    return block.strip()


@pytest.fixture(scope="module")
def readme_example_run(tmp_path_factory):
    """Starts README's example, as written, in a fresh folder; yields (process, log path, folder).

    It only starts it: `results` asks for it too, so that the example runs beside the
    workers (the machine's cores are shared better than one after the other).
    """
    if not installed("jax"):
        yield None
        return
    example = readme_example()
    assert example.startswith("KERAS_BACKEND=jax python -c")
    cwd = tmp_path_factory.mktemp("readme_example")
    # `python` is this interpreter, as in the activated virtual environment the README assumes.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(PYTHONPATH=REPO, PATH=path)
    log = cwd / "output.log"
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(
            ["bash", "-c", example], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    yield process, log, cwd
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def results(tmp_path_factory, readme_example_run):
    """Runs the workers of TensorFlow and of every installed other backend at once.

    Returns {backend: (report dict, arrays dict)} for the backends that ran.
    """
    workdir = str(tmp_path_factory.mktemp("backends"))
    backends = ["tensorflow", *(b for b in OTHER_BACKENDS if installed(b))]
    processes = {}
    for backend in backends:
        args = [sys.executable, WORKER, workdir, "--peers=" + ",".join(b for b in backends if b != backend)]
        args.append("--write_reference" if backend == "tensorflow" else "--without_tensorflow")
        log = open(os.path.join(workdir, f"{backend}.log"), "w", encoding="utf-8")  # noqa: SIM115
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPO)
        processes[backend] = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT), log
    deadline = time.monotonic() + TIMEOUT
    failed = []
    try:
        for backend, (process, log) in processes.items():
            try:
                returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                returncode = "timeout"
            log.close()
            if returncode != 0:
                with open(log.name, encoding="utf-8") as f:
                    failed.append(f"{backend} worker ({returncode}):\n{f.read()[-3000:]}")
    finally:
        for process, _ in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    assert not failed, "\n".join(failed)
    out = {}
    for backend in backends:
        with open(os.path.join(workdir, f"{backend}.json"), encoding="utf-8") as f:
            report = json.load(f)
        with np.load(os.path.join(workdir, f"{backend}.npz")) as arrays:
            out[backend] = report, dict(arrays)
    return out


def other_backend(backend):
    return pytest.param(
        backend, marks=pytest.mark.skipif(not installed(backend), reason=MISSING_REASON[backend])
    )


BACKENDS = [other_backend(b) for b in OTHER_BACKENDS]


def relative_difference(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_variant_builds_runs_trains_saves_and_loads(results, backend):
    report, _ = results[backend]
    reference = results["tensorflow"][0]["variants"]
    assert report["backend"] == backend
    # Everything it did, it did without TensorFlow.
    assert report["tensorflow_importable"] is False
    for variant in VARIANTS:
        entry = report["variants"][variant]
        assert entry["reference_digest"] == reference[variant]["reference_digest"], variant
        assert entry["training_logits_finite"] and entry["training_logits_moved"], variant
        assert np.isfinite(entry["fit_loss"]), variant
        assert entry["saved_digest"] != entry["reference_digest"], f"{variant}: fit changed no weight"
        if variant != "paper":  # the other backends load the paper variant's file
            assert entry["reloaded_digest"] == entry["saved_digest"], variant
            assert entry["reloaded_logits_max_abs_diff"] == 0.0, variant


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_logits_agree_with_tensorflow(results, backend):
    _, arrays = results[backend]
    _, reference = results["tensorflow"]
    for variant in VARIANTS:
        key = f"logits_{variant}"
        assert reference[key].shape == arrays[key].shape == (2, 5)
        assert relative_difference(arrays[key], reference[key]) <= RTOL, variant


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_lrn_and_its_gradient_agree_with_tensorflow(results, backend):
    """TensorFlow's LRN op, its XLA kernel and hand-written gradient against `keras.ops` and autodiff."""
    _, arrays = results[backend]
    _, reference = results["tensorflow"]
    keys = [k for k in reference if k.startswith("lrn_")]
    assert len(keys) == 6
    for key in keys:
        assert relative_difference(arrays[key], reference[key]) <= RTOL, key


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_grouped_conv_agrees_with_tensorflow(results, backend):
    _, arrays = results[backend]
    _, reference = results["tensorflow"]
    keys = [k for k in reference if k.startswith("grouped_conv_")]
    assert len(keys) == 2
    for key in keys:
        assert relative_difference(arrays[key], reference[key]) <= RTOL, key


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_files_load_across_backends_with_identical_weights(results, backend):
    """The file `backend` wrote loads under TensorFlow (and the other way round), weights bit for bit."""
    report, _ = results[backend]
    tf_report, _ = results["tensorflow"]
    assert tf_report["loaded_from_peers"][backend] == report["variants"]["paper"]["saved_digest"]
    for peer, (peer_report, _) in results.items():
        if peer != backend:
            assert report["loaded_from_peers"][peer] == peer_report["variants"]["paper"]["saved_digest"]


@pytest.mark.slow
@pytest.mark.skipif(not installed("jax"), reason=MISSING_REASON["jax"])
def test_readme_example_trains_on_jax_and_its_file_loads_under_tensorflow(readme_example_run):
    import keras  # pylint: disable=g-import-not-at-top

    import alexnet_tf  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import

    process, log, cwd = readme_example_run
    returncode = process.wait(timeout=TIMEOUT)
    with open(log, encoding="utf-8") as f:
        assert returncode == 0, f.read()[-3000:]
    assert keras.backend.backend() == "tensorflow"
    model = keras.saving.load_model(cwd / "alexnet_jax.keras")
    assert model.name == "alexnet_one_weird_trick" and model.output_shape == (None, 10)
    images = np.random.default_rng(0).uniform(-128, 128, (4, 127, 127, 3)).astype("float32")
    assert np.isfinite(model.predict(images, verbose=0)).all()
