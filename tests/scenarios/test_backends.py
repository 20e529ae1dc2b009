"""The model on every Keras 3 backend: TensorFlow, JAX and PyTorch give the same logits.

Keras fixes its backend when it is imported, so each backend runs tests/backend_worker.py in
its own process, all of them at once (they meet through files: see the worker's docstring).
JAX and PyTorch run with TensorFlow hidden, as on a machine without it, so anything the
model API does with TensorFlow fails them. The TensorFlow worker writes the reference
weights (NumPy's random numbers in `.keras` files) and inputs; every worker computes the
logits of every variant, trains it one step with `fit`, saves and reloads it, and loads the
other backends' files. Each other backend also loads a training checkpoint with
`AlexNet(weights=...)` (TensorFlow installed, which reads it) and must get TensorFlow's logits.
JAX is in the test extra; PyTorch is not (install the local torch==2.13.0 wheel to run its
half), and its tests skip where it is absent.
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
CHECKPOINT_SIZE, CHECKPOINT_CLASSES = 95, 3  # one_weird_trick's smallest input: the cheapest AlexNet


def installed(backend):
    return importlib.util.find_spec(backend) is not None


def docs_example():
    """The bash block of docs/model-api.md's "Other Keras backends" section."""
    with open(os.path.join(REPO, "docs", "model-api.md"), encoding="utf-8") as f:
        section = f.read().split("## Other Keras backends", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    return block.strip()


@pytest.fixture(scope="module")
def docs_example_run(tmp_path_factory):
    """Starts docs/model-api.md's example, as written, in a fresh folder; yields (process, log path, folder).

    It only starts it: `results` asks for it too, so that the example runs beside the
    workers (the machine's cores are shared better than one after the other).
    """
    if not installed("jax"):
        yield None
        return
    example = docs_example()
    assert example.startswith("KERAS_BACKEND=jax python -c")
    cwd = tmp_path_factory.mktemp("docs_example")
    # `python` is this interpreter, as in the activated virtual environment the docs assume.
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


def run_workers(workdir, arguments):
    """Runs tests/backend_worker.py WORKDIR under each backend of `arguments` ({backend: its
    further arguments}), each in a fresh process whose KERAS_BACKEND names it, all at once; fails
    with the end of the log of any that failed."""
    processes = {}
    for backend, args in arguments.items():
        log = open(os.path.join(workdir, f"{backend}.log"), "w", encoding="utf-8")  # noqa: SIM115
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPO)
        processes[backend] = (
            subprocess.Popen(
                [sys.executable, WORKER, workdir, *args], env=env, stdout=log, stderr=subprocess.STDOUT
            ),
            log,
        )
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


@pytest.fixture(scope="module")
def results(tmp_path_factory, docs_example_run):
    """Runs the workers of TensorFlow and of every installed other backend at once.

    Returns {backend: (report dict, arrays dict)} for the backends that ran.
    """
    workdir = str(tmp_path_factory.mktemp("backends"))
    backends = ["tensorflow", *(b for b in OTHER_BACKENDS if installed(b))]
    run_workers(
        workdir,
        {
            backend: [
                "--peers=" + ",".join(b for b in backends if b != backend),
                "--write_reference" if backend == "tensorflow" else "--without_tensorflow",
            ]
            for backend in backends
        },
    )
    out = {}
    for backend in backends:
        with open(os.path.join(workdir, f"{backend}.json"), encoding="utf-8") as f:
            report = json.load(f)
        with np.load(os.path.join(workdir, f"{backend}.npz")) as arrays:
            out[backend] = report, dict(arrays)
    return out


@pytest.fixture(scope="module")
def checkpoint_logits(tmp_path_factory):
    """`AlexNet(weights=<model dir>)` of a training checkpoint under every backend.

    The checkpoint is the trainer's (its state and model spec, built as `alexnet_tf.train`
    builds them) with random weights; TensorFlow loads it here, each other installed backend
    in a fresh process, as a user runs it. Returns {backend: {"logits", "weight_max_abs"}},
    TensorFlow's with "direct", the saved model's own logits.
    """
    import tensorflow as tf

    import alexnet_tf
    from alexnet_tf.config import TrainConfig
    from alexnet_tf.training import init_from, step
    from alexnet_tf.weights.checkpointing import (
        CHECKPOINT_SUBDIR,
        Checkpointer,
        check_model_spec,
    )

    workdir = tmp_path_factory.mktemp("checkpoint")
    model_dir = str(workdir / "run")
    config = TrainConfig(variant="one_weird_trick", image_size=CHECKPOINT_SIZE)
    state = step.build_state(config, tf.distribute.get_strategy(), CHECKPOINT_CLASSES, 1, 1, False)
    rng = np.random.default_rng(4)
    # He-scaled kernels and nonzero biases, as the reference files: every weight moves the logits.
    state.model.set_weights(
        [
            rng.standard_normal(w.shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / np.prod(w.shape[:-1])))
            if w.ndim > 1
            else rng.uniform(-0.1, 0.1, w.shape).astype(np.float32)
            for w in state.model.get_weights()
        ]
    )
    checkpoint_dir = os.path.join(model_dir, CHECKPOINT_SUBDIR)
    spec = init_from.model_spec(config, CHECKPOINT_CLASSES, init_from.Start(None, None))
    check_model_spec(checkpoint_dir, spec, write=True)
    Checkpointer(state.checkpoint, checkpoint_dir, True, 1).save(1)
    images = rng.uniform(-125.0, 130.0, (2, CHECKPOINT_SIZE, CHECKPOINT_SIZE, 3)).astype(np.float32)
    np.save(workdir / "checkpoint_images.npy", images)

    others = [b for b in OTHER_BACKENDS if installed(b)]
    run_workers(str(workdir), {backend: [f"--checkpoint={model_dir}"] for backend in others})
    loaded = alexnet_tf.AlexNet(weights=model_dir)
    out = {
        "tensorflow": {
            "logits": loaded(images, training=False).numpy(),
            "direct": state.model(images, training=False).numpy(),
            "weight_max_abs": np.array([np.abs(w).max() for w in loaded.get_weights()]),
        }
    }
    for backend in others:
        with np.load(workdir / f"{backend}_checkpoint.npz") as arrays:
            out[backend] = dict(arrays)
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
def test_model_api_example_trains_on_jax_and_its_file_loads_under_tensorflow(docs_example_run):
    import keras

    import alexnet_tf  # noqa: F401  imported for its side effect: the registered layers

    process, log, cwd = docs_example_run
    returncode = process.wait(timeout=TIMEOUT)
    with open(log, encoding="utf-8") as f:
        assert returncode == 0, f.read()[-3000:]
    assert keras.backend.backend() == "tensorflow"
    model = keras.saving.load_model(cwd / "alexnet_jax.keras")
    assert model.name == "alexnet_one_weird_trick" and model.output_shape == (None, 10)
    images = np.random.default_rng(0).uniform(-128, 128, (4, 127, 127, 3)).astype("float32")
    assert np.isfinite(model.predict(images, verbose=0)).all()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_alexnet_reads_a_training_checkpoint_as_tensorflow_does(checkpoint_logits, backend):
    """JAX and PyTorch once got every weight 0 from a checkpoint (a tf.train.Checkpoint restore
    writes only into TensorFlow variables), with no error."""
    tensorflow = checkpoint_logits["tensorflow"]
    arrays = checkpoint_logits[backend]
    assert str(arrays["backend"]) == backend
    assert relative_difference(tensorflow["logits"], tensorflow["direct"]) <= 1e-6
    assert (tensorflow["weight_max_abs"] > 0).all()
    assert arrays["weight_max_abs"].shape == tensorflow["weight_max_abs"].shape
    assert (arrays["weight_max_abs"] > 0).all(), "weights left at zero"
    np.testing.assert_array_equal(arrays["weight_max_abs"], tensorflow["weight_max_abs"])
    assert relative_difference(arrays["logits"], tensorflow["logits"]) <= RTOL
