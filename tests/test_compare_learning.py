"""tools/make_photo_dataset.py and tools/compare_learning.py, run as fresh processes the way users do."""

import importlib.util
import json
import os
import statistics

import numpy as np
from PIL import Image
import pytest

pytestmark = pytest.mark.slow

TINY = ["--epochs=2", "--batch_size=2", "--seeds=0,1"]
TOOL = "tools/compare_learning.py"


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    """Two classes of coloured JPEGs, 4 train and 2 validation each, in the converter's layout."""
    root = tmp_path_factory.mktemp("tiny_images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("validation", 2)):
        for name, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for n in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 20, (72, 96, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{n}.jpg", quality=90)
    return root


def check_report(result, output_dir, frameworks):
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(output_dir, "compare_learning.json")) as f:
        report = json.load(f)
    assert list(report["runs"]) == frameworks
    table = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0].isdigit():
            table[int(cells[0])] = cells[1:]
    assert sorted(table) == [1, 2], result.stdout
    for column, framework in enumerate(frameworks):
        runs = report["runs"][framework]
        assert sorted(runs) == ["0", "1"]
        for run in runs.values():
            assert len(run["top1"]) == 2
            assert all(0.0 <= v <= 1.0 for v in run["top1"])
        for epoch in (1, 2):
            values = [run["top1"][epoch - 1] for run in runs.values()]
            mean, std = statistics.fmean(values), statistics.stdev(values)
            assert table[epoch][column] == f"{100 * mean:.1f} ± {100 * std:.1f}"
            assert report["summary"][framework]["mean"][epoch - 1] == pytest.approx(mean)
        final = [run["top1"][-1] for run in runs.values()]
        expected = f"{100 * statistics.fmean(final):.1f} ± {100 * statistics.stdev(final):.1f}%"
        assert f"final {framework}: {expected} validation top-1 at epoch 2 over seeds 0,1" in result.stdout
    assert report["settings"]["epochs"] == 2 and report["settings"]["seeds"] == [0, 1]
    assert report["machine"]["cpus"] >= 1
    with Image.open(os.path.join(output_dir, "compare_learning.png")) as png:
        assert png.format == "PNG" and png.size == (960, 600)
    return report


def test_compare_learning_tensorflow(run, tiny_images, tmp_path):
    out = tmp_path / "out"
    small = "--extra_train_flags=--image_size=96"  # one_weird_trick takes 96-px crops: faster
    result = run(
        [TOOL, f"--images={tiny_images}", f"--output_dir={out}", "--frameworks=tensorflow", small] + TINY
    )
    report = check_report(result, out, ["tensorflow"])
    for seed in ("0", "1"):  # the curve read from the event files ends at the run's own result
        with open(out / "tf" / f"seed{seed}" / "results.json") as f:
            final = json.load(f)["validation"]["top1"]
        assert report["runs"]["tensorflow"][seed]["top1"][-1] == pytest.approx(final, abs=1e-6)
    command = report["runs"]["tensorflow"]["0"]["command"]
    # 0.01 at batch 32 is 0.000625 at batch 2, which the trainer takes as 0.04 at batch 128.
    assert "--learning_rate=0.04" in command and "--lr_schedule=cosine" in command
    assert "--recipe=torchvision" in command and "--seed=0" in command
    assert (out / "tfrecords" / "manifest.json").is_file()
    assert "[tensorflow seed 1]" in result.stderr


def test_compare_learning_pytorch(run, tiny_images, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "out"
    result = run([TOOL, f"--images={tiny_images}", f"--output_dir={out}", "--frameworks=pytorch"] + TINY)
    report = check_report(result, out, ["pytorch"])
    assert report["settings"]["learning_rate"] == pytest.approx(0.01 * 2 / 32)
    assert "torch" in report["versions"]
    assert "[pytorch seed 1] epoch 2/2" in result.stderr
    assert not (out / "tfrecords").exists()


def test_compare_learning_needs_train_and_validation_folders(run, tmp_path):
    (tmp_path / "images" / "train" / "a").mkdir(parents=True)
    result = run([TOOL, f"--images={tmp_path / 'images'}", f"--output_dir={tmp_path / 'o'}"])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "images" / "validation") in lines[0], result.stderr


def test_compare_learning_paper_recipe_is_tensorflow_only(run, tiny_images, tmp_path):
    result = run([TOOL, f"--images={tiny_images}", f"--output_dir={tmp_path / 'o'}", "--recipe=paper"])
    assert result.returncode == 2
    assert "--frameworks=tensorflow" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_make_photo_dataset_writes_a_class_per_folder_set(run, tmp_path):
    for module, package in (("skimage", "scikit-image"), ("sklearn", "scikit-learn")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{package} is not installed (pip install {package}): the photographs ship inside it")
    args = ["tools/make_photo_dataset.py", "--classes=3", "--train_per_class=3", "--validation_per_class=2"]
    first = run([*args, f"--output_dir={tmp_path / 'a'}"])
    assert first.returncode == 0, first.stderr[-2000:]
    classes = sorted(os.listdir(tmp_path / "a" / "train"))
    assert classes == sorted(os.listdir(tmp_path / "a" / "validation")) == ["astronaut", "china", "flower"]
    for name in classes:
        assert f"{name}: 3 train crops" in first.stdout
        assert sorted(os.listdir(tmp_path / "a" / "validation" / name)) == [f"{name}_0.jpg", f"{name}_1.jpg"]
        with Image.open(tmp_path / "a" / "train" / name / f"{name}_2.jpg") as image:
            assert image.format == "JPEG" and image.size == (256, 256) and image.mode == "RGB"
    second = run([*args, f"--output_dir={tmp_path / 'b'}"])  # the same seed writes the same bytes
    assert second.returncode == 0
    path = os.path.join("train", "china", "china_1.jpg")
    assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes()
    again = run([*args, f"--output_dir={tmp_path / 'a'}"])  # not into a folder that holds files
    assert again.returncode == 2 and "not empty" in again.stderr


def test_compare_learning_refuses_tfrecords_converted_from_another_tree(run, tiny_images, tmp_path):
    out = tmp_path / "out"
    converted = run(
        [
            "-m",
            "alexnet_tf.convert",
            f"--train_dir={tiny_images / 'train'}",
            f"--validation_dir={tiny_images / 'validation'}",
            f"--output_dir={out / 'tfrecords'}",
        ]
    )
    assert converted.returncode == 0, converted.stderr[-2000:]
    other = tmp_path / "other"
    for split in ("train", "validation"):
        for name in ("aa", "bb"):
            (other / split / name).mkdir(parents=True)
            Image.new("RGB", (64, 64), (10, 200, 10)).save(other / split / name / "x.jpg")
    result = run([TOOL, f"--images={other}", f"--output_dir={out}", "--frameworks=tensorflow"] + TINY)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "holds a different dataset" in last and str(out / "tfrecords") in last
    assert not (out / "tf").exists()  # nothing trained
