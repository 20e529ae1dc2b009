"""Tests of alexnet_tf.predict: top-5 of image files from an export, bad files reported by name."""

import json
import os
import shutil
import subprocess
import sys

from conftest import REPO
import pytest
from tiny_dataset import write_jpeg
from tiny_models import LABELS, small_classifier

from alexnet_tf import predict
from alexnet_tf.serving.saved_model import export_saved_model, resolve_saved_model


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("predict_export"))
    export_saved_model(small_classifier(), base, labels=LABELS, warmup=False)
    return base


@pytest.fixture()
def files(tmp_path):
    good = [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    write_jpeg(good[0], 240, 320, seed=1)
    write_jpeg(good[1], 300, 200, seed=2)
    (tmp_path / "notes.jpg").write_bytes(b"plain text, not an image")
    return good, str(tmp_path / "notes.jpg"), str(tmp_path / "missing.jpg")


def test_mix_of_good_and_bad_files(saved_model, files, capsys):
    (a, b), text, missing = files
    failures = predict.run(saved_model, [a, text, missing, b], as_json=True)
    out, err = capsys.readouterr()
    assert failures == 2
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in results] == [a, b]
    for result in results:
        scores = [p["score"] for p in result["predictions"]]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True)
        assert all(p["label"] == LABELS[p["class"]] for p in result["predictions"])
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"alexnet_tf.predict: {text}: image_bytes[0] is not a JPEG, PNG, GIF or BMP")
    assert lines[1].startswith(f"alexnet_tf.predict: {missing}: ") and "No such file" in lines[1]


def test_text_output_and_base_dir_resolution(saved_model, files, capsys):
    (a, _), _, _ = files
    assert resolve_saved_model(saved_model) == os.path.join(saved_model, "1")
    assert predict.run(os.path.join(saved_model, "1"), [a]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == a and len(lines) == 6
    score, label = lines[1].split(None, 1)
    assert 0.0 <= float(score) <= 1.0 and label.startswith("label ")


@pytest.mark.slow
def test_command_line_exit_status(saved_model, files):
    (a, b), text, _ = files
    result = subprocess.run(
        [sys.executable, "-m", "alexnet_tf.predict", f"--saved_model={saved_model}", a, text, b],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 1
    assert result.stdout.count("label ") == 10
    errors = [line for line in result.stderr.splitlines() if line.startswith("alexnet_tf.predict:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"alexnet_tf.predict: {text}: image_bytes[0] is not a JPEG"
    )


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "alexnet_tf.predict", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.slow
def test_pixel_signature_gets_decoded_files(saved_model, files, capsys):
    """--signature=predict_images decodes each file and sends its pixels (a TypeError before)."""
    (a, b), text, _ = files
    assert predict.run(saved_model, [a, b], as_json=True) == 0
    expected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    result = run_cli(f"--saved_model={saved_model}", "--signature=predict_images", "--json", a, text, b)
    assert result.returncode == 1, result.stderr[-2000:]
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in got] == [a, b]
    for g, e in zip(got, expected):  # float pixels vs bytes: the same classes, scores within 1e-3
        assert [p["class"] for p in g["predictions"]][:1] == [p["class"] for p in e["predictions"]][:1]
        assert abs(g["predictions"][0]["score"] - e["predictions"][0]["score"]) < 1e-3
    errors = [line for line in result.stderr.splitlines() if line.startswith("alexnet_tf.predict:")]
    assert (
        len(errors) == 1
        and errors[0].startswith(f"alexnet_tf.predict: {text}: ")
        and "Traceback" not in result.stderr
    )


@pytest.mark.slow
def test_model_errors_end_with_one_line_naming_the_input(saved_model, files, tmp_path):
    (a, _), _, _ = files
    broken = str(tmp_path / "broken")
    shutil.copytree(os.path.join(saved_model, "1"), broken)
    with open(os.path.join(broken, "variables", "variables.index"), "r+b") as f:
        f.truncate(40)  # a damaged copy: TensorFlow fails to read its variables
    for args, message in (
        (["--saved_model=" + broken], "cannot load the SavedModel: "),
        (["--saved_model=" + saved_model, "--signature=nope"], "no signature 'nope'"),
    ):
        result = run_cli(*args, a)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = [line for line in result.stderr.splitlines() if line.startswith("alexnet_tf.predict:")]
        assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-2000:]
        assert lines[0].startswith("alexnet_tf.predict: error: " + message), lines[0]
        assert f"({args[0].split('=', 1)[1]}): " in lines[0]
