"""The commands that read a LiteRT file, run as users run them: evaluate --tflite, predict --tflite and
benchmark --mode=tflite, each against the SavedModel of the same model."""

import io
import json
import re

from conftest import run_command
import numpy as np
import pytest
from tiny_dataset import write_jpeg, write_tiny_dataset
from tiny_models import LABELS, small_classifier

from alexnet_tf import evaluate, predict
from alexnet_tf.config import ConfigError
from alexnet_tf.serving.saved_model import export_saved_model
from alexnet_tf.serving.tflite_export import export_tflite

pytestmark = pytest.mark.slow
CLASSES = len(LABELS)
EVAL_LINE = re.compile(
    r"^(centre crop|ten crop)\s+top-1\s+([\d.]+)%\s+top-5\s+([\d.]+)%\s+loss ([\d.]+)\s+\((\d+) images\)"
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One small classifier as a SavedModel and as a float32 LiteRT file, with validation data."""
    root = tmp_path_factory.mktemp("tflite_commands")
    model = small_classifier(num_classes=CLASSES)
    saved_model = export_saved_model(model, str(root / "export"), labels=LABELS, warmup=False)
    tflite = export_tflite(model, str(root / "lite" / "model.tflite"), labels=LABELS)
    data_dir = write_tiny_dataset(
        root / "data", train_records=2, validation_records=12, num_classes=CLASSES, seed=5
    )
    images = [str(root / f"photo{i}.jpg") for i in range(3)]
    for i, path in enumerate(images):
        write_jpeg(path, 240 + 40 * i, 320 - 30 * i, seed=10 + i)
    return saved_model, tflite, data_dir, images


def _evaluate_command(data_dir, *model_flags):
    result = run_command(
        ["-m", "alexnet_tf.evaluate", f"--data_dir={data_dir}", "--batch_size=5", *model_flags]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {}
    for line in result.stdout.splitlines():
        match = EVAL_LINE.match(line)
        if match:
            rows[match[1]] = tuple(float(v) for v in match.groups()[1:])
    assert set(rows) == {"centre crop", "ten crop"}, result.stdout
    return rows


def test_evaluate_tflite_gives_the_saved_models_figures(exported):
    saved_model, tflite, data_dir, _ = exported
    from_tflite = _evaluate_command(data_dir, f"--tflite={tflite}", "--tflite_threads=1")
    # The SavedModel's figures in this process: the command's path is tests/test_evaluate.py's.
    from_saved_model = evaluate.run(
        evaluate.EvalConfig(data_dir=data_dir, saved_model=saved_model, batch_size=5)
    )
    for crop, name in (("centre crop", "centre_crop"), ("ten crop", "ten_crop")):
        top1, top5, loss, count = from_tflite[crop]
        reference = from_saved_model[name]
        assert count == reference["count"] == 12
        # The same crops and tie rule: float32 logits within 1e-4 cannot move a top-k over 12 images
        # unless two classes tie to 1e-4; the loss differs only by the arithmetic.
        assert (top1, top5) == (round(100 * reference["top1"], 2), round(100 * reference["top5"], 2))
        assert loss == pytest.approx(reference["loss"], abs=2e-4)


def test_evaluate_refuses_a_file_that_is_not_a_litert_model(exported, tmp_path):
    _, _, data_dir, images = exported
    result = run_command(["-m", "alexnet_tf.evaluate", f"--data_dir={data_dir}", f"--tflite={images[0]}"])
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = [line for line in result.stderr.splitlines() if "alexnet_tf.evaluate: error" in line]
    assert f"--tflite={images[0]}" in line and "not a TFLite model" in line
    truncated = tmp_path / "cut.tflite"
    whole = open(exported[1], "rb").read()
    for cut in (2000, len(whole) // 2):  # LiteRT's own check, then ours of the metadata
        truncated.write_bytes(whole[:cut])
        with pytest.raises(ConfigError, match="damaged TFLite file|not a valid Flatbuffer") as raised:
            evaluate.run(evaluate.EvalConfig(data_dir=data_dir, tflite=str(truncated)))
        assert str(truncated) in str(raised.value)
    missing = str(tmp_path / "missing.tflite")
    with pytest.raises(ConfigError, match=f"not a TFLite model .* \\(--tflite={re.escape(missing)}\\)"):
        evaluate.run(evaluate.EvalConfig(data_dir=data_dir, tflite=missing))


def test_predict_tflite_gives_the_saved_models_top5(exported, tmp_path):
    saved_model, tflite, _, images = exported
    text = tmp_path / "notes.jpg"
    text.write_bytes(b"not an image")

    def predictions(*flags):
        result = run_command(
            ["-m", "alexnet_tf.predict", "--json", *flags, images[0], str(text), *images[1:]]
        )
        assert result.returncode == 1, result.stderr[-2000:]  # the text file failed, the others went on
        errors = [line for line in result.stderr.splitlines() if line.startswith("alexnet_tf.predict: ")]
        assert len(errors) == 1 and str(text) in errors[0], result.stderr[-2000:]
        return [json.loads(line) for line in result.stdout.splitlines()]

    out, err = io.StringIO(), io.StringIO()  # the SavedModel's in this process (tests/test_predict.py)
    assert predict.run(saved_model, [images[0], str(text), *images[1:]], as_json=True, out=out, err=err) == 1
    from_saved_model = [json.loads(line) for line in out.getvalue().splitlines()]
    from_tflite = predictions(f"--tflite={tflite}")
    assert [r["file"] for r in from_tflite] == images
    for lite, reference in zip(from_tflite, from_saved_model):
        assert [p["class"] for p in lite["predictions"]] == [p["class"] for p in reference["predictions"]]
        assert [p["label"] for p in lite["predictions"]] == [LABELS[p["class"]] for p in lite["predictions"]]
        np.testing.assert_allclose(
            [p["score"] for p in lite["predictions"]],
            [p["score"] for p in reference["predictions"]],
            atol=1e-4,
        )


def test_predict_refuses_a_file_that_is_not_a_litert_model(exported):
    _, _, _, images = exported
    result = run_command(["-m", "alexnet_tf.predict", f"--tflite={images[0]}", images[1]])
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("alexnet_tf.predict: error")]
    assert f"--tflite={images[0]}" in line and "not a TFLite model" in line


def test_benchmark_tflite_mode_times_each_quantisation_against_the_saved_model():
    result = run_command(
        [
            "-m",
            "alexnet_tf.benchmark",
            "--mode=tflite",
            "--variants=one_weird_trick",
            "--quantize=dynamic_range",
            "--num_classes=10",
            "--requests=3",
            "--warmup_steps=1",
            "--tflite_threads=2",
            "--json",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    rows = {(r["runtime"], r["quantize"]): r for r in report["rows"]}
    assert list(rows) == [("saved_model", "none"), ("litert", "dynamic_range")]
    assert report["num_threads"] == 2 and report["settings"]["tflite_threads"] == 2
    for row in rows.values():
        assert row["requests"] == 3 and 0 < row["median_ms"] <= row["p99_ms"]
    # The SavedModel's float32 weights are ~4 bytes a parameter, dynamic range's 1: about 4x smaller.
    ratio = rows["saved_model", "none"]["file_mib"] / rows["litert", "dynamic_range"]["file_mib"]
    assert 3.5 < ratio < 4.3, ratio
    assert rows["saved_model", "none"]["max_logit_difference"] == 0
    assert 0 < rows["litert", "dynamic_range"]["max_logit_difference"] < 0.1
