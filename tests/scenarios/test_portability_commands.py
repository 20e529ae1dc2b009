"""The commands on a model the trainer's command line trained, with oneDNN's kernels on or off.

The second half of tests/scenarios/test_portability.py (its docstring says why both kernel families
must pass): the README's test command runs both files a second time with
`TF_ENABLE_ONEDNN_OPTS=0` (`-m portability`); the commands run as fresh processes that inherit
the setting. One module fixture trains and exports the model every test here uses.
"""

import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap

from conftest import run_command
import numpy as np
import pytest
from tiny_dataset import write_jpeg, write_tiny_dataset

pytestmark = pytest.mark.portability


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The paper variant trained and exported by the trainer's command line (3 steps of 2, float32)."""
    data_dir = write_tiny_dataset(
        tmp_path_factory.mktemp("data"), train_records=12, validation_records=4, num_classes=3
    )
    model_dir = str(tmp_path_factory.mktemp("run") / "model")
    result = run_command(
        [
            "-m",
            "alexnet_tf.train",
            f"--data_dir={data_dir}",
            f"--model_dir={model_dir}",
            "--variant=paper",
            "--batch_size=2",
            "--train_steps=3",
            "--precision=float32",
            "--seed=0",
        ]
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return data_dir, model_dir, os.path.join(model_dir, "export", "1")


def test_train_command_trains_exports_and_evaluates(trained):
    _, model_dir, saved_model = trained
    assert os.path.isfile(os.path.join(saved_model, "saved_model.pb"))
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    assert (results["global_step"], results["precision"]) == (3, "float32")
    assert results["validation"]["count"] == 4 and 0.0 <= results["validation"]["top1"] <= 1.0
    assert results["export_path"] == saved_model


SERVE_SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np, tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port
    loaded = tf.saved_model.load(sys.argv[1])
    image = tf.io.read_file(sys.argv[2])
    out = loaded.signatures["serving_default"](image_bytes=tf.stack([image, image]))
    ten = loaded.signatures["serving_ten_crop"](image_bytes=tf.stack([image]))
    print(json.dumps({"onednn": bool(_pywrap_util_port.IsMklEnabled()),
                      "probabilities": out["probabilities"].numpy().tolist(),
                      "ten_crop": ten["probabilities"].numpy().tolist()}))
""")


def serve(saved_model, jpeg, onednn):
    result = run_command(["-c", SERVE_SCRIPT, saved_model, str(jpeg)], env={"TF_ENABLE_ONEDNN_OPTS": onednn})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_an_export_serves_in_fresh_processes_with_onednn_on_and_off(trained, tmp_path):
    _, _, saved_model = trained
    jpeg = tmp_path / "photo.jpg"
    write_jpeg(jpeg, 240, 320)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two fresh processes at once
        on, off = pool.map(lambda onednn: serve(saved_model, jpeg, onednn), ("1", "0"))
    assert (on["onednn"], off["onednn"]) == (True, False)
    for out in (on, off):
        assert np.allclose(np.sum(out["probabilities"], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(on["probabilities"], off["probabilities"], atol=1e-5)
    np.testing.assert_allclose(on["ten_crop"], off["ten_crop"], atol=1e-5)


def test_saved_model_cli_runs_the_export(trained, tmp_path):
    _, _, saved_model = trained
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    np.save(tmp_path / "bytes.npy", np.array([write_jpeg(tmp_path / "a.jpg", 120, 90)]))
    result = subprocess.run(
        [
            cli,
            "run",
            "--dir",
            saved_model,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"image_bytes={tmp_path / 'bytes.npy'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "probabilities" in result.stdout and "top_k_labels" in result.stdout


def test_evaluate_command_on_the_export_and_the_checkpoint(trained):
    data_dir, model_dir, saved_model = trained
    sources = (f"--saved_model={saved_model}", f"--checkpoint={model_dir}")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two fresh processes at once
        results = pool.map(
            lambda source: run_command(
                ["-m", "alexnet_tf.evaluate", f"--data_dir={data_dir}", source, "--batch_size=2"]
            ),
            sources,
        )
    for source, result in zip(sources, results):
        assert result.returncode == 0, (source, result.stderr[-3000:])
        assert "top-1" in result.stdout or "top_1" in result.stdout, result.stdout


def test_predict_command_on_the_export(trained, tmp_path):
    _, _, saved_model = trained
    write_jpeg(tmp_path / "cat.jpg", 200, 300)
    result = run_command(
        ["-m", "alexnet_tf.predict", f"--saved_model={saved_model}", str(tmp_path / "cat.jpg")]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cat.jpg" in result.stdout and "class" in result.stdout, result.stdout


def test_export_command_from_a_keras_file_in_a_fresh_process(trained, tmp_path):
    """`import alexnet_tf` (which `python -m alexnet_tf.export` does) must register the layers.

    The .keras file is written here, in this process (it inherits the same oneDNN setting); the
    command that loads it is the fresh process."""
    from alexnet_tf.weights.checkpointing import load_model

    _, model_dir, _ = trained
    keras_file = tmp_path / "model.keras"
    model, _ = load_model(model_dir)
    model.save(keras_file)
    del model
    result = run_command(
        [
            "-m",
            "alexnet_tf.export",
            f"--checkpoint={keras_file}",
            f"--export_dir={tmp_path / 'models' / 'alexnet'}",
            "--version=7",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.isfile(tmp_path / "models" / "alexnet" / "7" / "saved_model.pb")
