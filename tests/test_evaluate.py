"""Tests of alexnet_tf.evaluate: checkpoint vs SavedModel vs a direct computation."""

import json
import os
import subprocess
import sys

from conftest import REPO
import numpy as np
import pytest
import tensorflow as tf
from tfrecord_fixtures import write_fake_tfrecords

from alexnet_tf import evaluate
from alexnet_tf.config import ConfigError
from alexnet_tf.data import preprocessing
from alexnet_tf.model import build_alexnet
from alexnet_tf.serving.saved_model import export_saved_model
from alexnet_tf.weights.checkpointing import CHECKPOINT_SUBDIR, check_model_spec, model_weights

CLASSES = 5


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An (untrained) paper AlexNet saved as a training checkpoint and exported, plus data."""
    root = tmp_path_factory.mktemp("evaluate")
    data_dir = str(root / "data")
    records = write_fake_tfrecords(
        data_dir, num_records=6, num_shards=1, split="validation", num_classes=CLASSES, seed=3
    )
    tf.keras.utils.set_random_seed(0)
    # hidden_bias 0.1 keeps the untrained logits spread out, so that top-1 is not a tie.
    model = build_alexnet(num_classes=CLASSES, hidden_bias=0.1, weight_init_stddev=0.02)
    model_dir = str(root / "model")
    checkpoint_dir = os.path.join(model_dir, CHECKPOINT_SUBDIR)
    check_model_spec(
        checkpoint_dir, {"variant": "paper", "num_classes": CLASSES, "image_size": 224}, write=True
    )
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model_weights(model)), checkpoint_dir, 1).save()
    export_path = export_saved_model(model, os.path.join(model_dir, "export"))
    images = tf.stack(
        [preprocessing.preprocess_for_eval(preprocessing.decode_image(r.jpeg)) for r in records]
    )
    probabilities = tf.nn.softmax(model(images)).numpy()
    labels = np.array([r.label for r in records])
    direct = {
        "top1": float(np.mean(probabilities.argmax(1) == labels)),
        "loss": float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels]))),
    }
    return data_dir, model_dir, export_path, direct


def test_checkpoint_and_saved_model_give_the_same_numbers_as_a_direct_computation(saved):
    data_dir, model_dir, export_path, direct = saved
    from_checkpoint = evaluate.run(evaluate.EvalConfig(data_dir=data_dir, checkpoint=model_dir, batch_size=4))
    from_export = evaluate.run(
        evaluate.EvalConfig(data_dir=data_dir, saved_model=os.path.dirname(export_path), batch_size=4)
    )
    for results in (from_checkpoint, from_export):
        assert results["centre_crop"]["count"] == results["ten_crop"]["count"] == 6
        assert results["centre_crop"]["top1"] == pytest.approx(direct["top1"])
        assert results["centre_crop"]["loss"] == pytest.approx(direct["loss"], rel=1e-4)
    for crop in ("centre_crop", "ten_crop"):
        assert from_checkpoint[crop]["top1"] == from_export[crop]["top1"]
        assert from_checkpoint[crop]["loss"] == pytest.approx(from_export[crop]["loss"], rel=1e-5)
    assert from_checkpoint["ten_crop"]["loss"] != pytest.approx(
        from_checkpoint["centre_crop"]["loss"], rel=1e-6
    )


def test_bad_arguments_raise_config_errors(saved, tmp_path):
    data_dir, model_dir, _, _ = saved
    with pytest.raises(ConfigError, match="exactly one of"):
        evaluate.run(evaluate.EvalConfig(data_dir=data_dir))
    with pytest.raises(ConfigError, match="no checkpoint in"):
        evaluate.run(evaluate.EvalConfig(data_dir=data_dir, checkpoint=str(tmp_path)))
    with pytest.raises(ConfigError, match="no SavedModel in"):
        evaluate.run(evaluate.EvalConfig(data_dir=data_dir, saved_model=str(tmp_path)))
    with pytest.raises(ConfigError, match="does not exist"):
        evaluate.run(evaluate.EvalConfig(data_dir=str(tmp_path / "nope"), checkpoint=model_dir))


@pytest.mark.slow
def test_command_prints_centre_and_ten_crop_top1_top5(saved):
    data_dir, _, export_path, direct = saved
    command = [sys.executable, "-m", "alexnet_tf.evaluate", f"--data_dir={data_dir}"]
    good, bad = (
        subprocess.Popen(command + extra, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for extra in ([f"--saved_model={export_path}", "--batch_size=3"], [])
    )
    stdout, stderr = good.communicate(timeout=180)
    assert good.returncode == 0, stderr[-3000:]
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("centre crop") and lines[1].startswith("ten crop")
    assert (
        f"top-1 {100 * direct['top1']:6.2f}%" in lines[0] and "top-5" in lines[0] and "(6 images)" in lines[0]
    )
    _, stderr = bad.communicate(timeout=180)
    assert bad.returncode == 2
    expected = "alexnet_tf.evaluate: error: pass exactly one of --checkpoint, --saved_model and --tflite"
    assert expected in stderr


@pytest.mark.slow
def test_tensorflow_errors_end_with_one_line_naming_the_input(tmp_path):
    """A shard that is no TFRecord fails inside TensorFlow: one line and status 2, no traceback."""
    from tiny_models import small_classifier

    export_path = export_saved_model(small_classifier(), str(tmp_path / "model"), warmup=False)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "validation-00000-of-00001").write_bytes(np.random.default_rng(0).bytes(5000))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "alexnet_tf.evaluate",
            f"--data_dir={data_dir}",
            f"--saved_model={export_path}",
            "--label_offset=0",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("alexnet_tf.evaluate:")]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-3000:]
    # One remedy, the reader's: evaluate has no --skip_corrupt, and the line names the shard.
    assert lines[0].startswith("alexnet_tf.evaluate: error: corrupt or truncated TFRecord shard")
    assert "convert it again" in lines[0] and lines[0].endswith(f"--data_dir={data_dir})")
    assert "--verify" not in lines[0]


def test_corruptions_of_a_model_dir_land_in_its_model_card(saved):
    data_dir, model_dir, _, _ = saved
    report = evaluate.run_corruptions(
        evaluate.EvalConfig(
            data_dir=data_dir,
            checkpoint=model_dir,
            corruptions="contrast,pixelate",
            severities="1,5",
            batch_size=4,
        )
    )
    assert report == json.loads(open(os.path.join(model_dir, "corruptions.json")).read())
    card = open(os.path.join(model_dir, "MODEL_CARD.md"), encoding="utf-8").read()
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in card.splitlines()
        if line.startswith("| contrast") or line.startswith("| pixelate")
    }
    for entry in report["results"]:
        column = report["severities"].index(entry["severity"])
        assert rows[entry["corruption"]][column] == f"{100 * entry['top1_error']:.2f}"
    clean = report["clean"]
    assert f"- clean top-1 error: {100 * clean['top1_error']:.2f}% ({clean['count']} images)" in card
