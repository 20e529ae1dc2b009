"""The ImageNet-C corruptions against their published definitions, and evaluate --corruptions end to end.

SciPy (installed with jax, a test dependency; never a package dependency) is the independent
computation for the filters, zooms and interpolation the reference runs through SciPy and
scikit-image; Pillow for the pixelation and JPEG; TensorFlow's HSV for the brightness.
"""

import io
import json
import os
import subprocess
import sys

from conftest import REPO
import numpy as np
from PIL import Image
import pytest
from tfrecord_fixtures import natural_image, write_fake_tfrecords

from alexnet_tf import evaluate
from alexnet_tf.config import ConfigError
from alexnet_tf.data import corruptions as C

SIZE = 40


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(5)
    return [natural_image(rng, SIZE, SIZE) for _ in range(2)]


def corrupt(image, name, severity, index=0, seed=C.DEFAULT_SEED):
    return C.corrupt(image, name, severity, index, seed).numpy().astype(np.float64)


def test_the_fifteen_corruptions_have_five_published_severities():
    assert len(C.CORRUPTIONS) == 15 and set(C.PARAMETERS) == set(C.CORRUPTIONS) == set(C.ALEXNET_ERRORS)
    assert all(len(C.PARAMETERS[name]) == 5 for name in C.CORRUPTIONS)
    assert C.parameter("gaussian_noise", 5) == 0.38 and C.parameter("jpeg_compression", 1) == 25
    # The published mean of AlexNet's errors (unnormalised mCE) and its clean error.
    assert np.mean(list(C.ALEXNET_ERRORS.values())) == pytest.approx(0.789, abs=5e-4)
    assert C.ALEXNET_CLEAN_ERROR == pytest.approx(0.4348, abs=1e-4)


def test_noise_statistics():
    grey = np.full((64, 64, 3), 128, np.uint8)
    for severity in (1, 2):  # noise small enough that clipping at 0 and 255 hardly happens
        c = C.parameter("gaussian_noise", severity)
        residual = corrupt(grey, "gaussian_noise", severity) - 128
        # floor(255 * clip(x + n)) - 128: noise of std 255 c, shifted half a level down by the floor.
        assert residual.std() == pytest.approx(255 * c, rel=0.05)
        assert residual.mean() == pytest.approx(-0.5, abs=1.5)
    # Shot noise: Poisson(x c) / c; at c = 3 only the levels k/3 occur.
    shot = corrupt(grey, "shot_noise", 5)
    assert set(np.unique(shot)) <= {np.floor(255 * min(k / 3, 1)) for k in range(10)}
    assert shot.mean() == pytest.approx(128, rel=0.08)
    # Impulse noise: a fraction c of the values set to 0 or 255, half each.
    for severity in (1, 5):
        out = corrupt(grey, "impulse_noise", severity)
        flipped = out != 128
        assert flipped.mean() == pytest.approx(C.parameter("impulse_noise", severity), rel=0.15)
        assert set(np.unique(out[flipped])) == {0, 255}
        assert (out[flipped] == 255).mean() == pytest.approx(0.5, abs=0.1)


def test_brightness_adds_to_the_hsv_value(images):
    import tensorflow as tf

    for severity in (1, 4):
        x = images[0] / 255.0
        hsv = tf.image.rgb_to_hsv(x).numpy()
        hsv[..., 2] = np.clip(hsv[..., 2] + C.parameter("brightness", severity), 0, 1)
        expected = np.floor(np.clip(tf.image.hsv_to_rgb(hsv).numpy(), 0, 1) * 255 + 1e-4)
        out = C.corrupt_numpy(images[0], "brightness", severity, np.random.default_rng(0))
        assert np.abs(out - expected).max() <= 1


def test_contrast_scales_about_each_channels_mean(images):
    c = C.parameter("contrast", 2)
    out = C.corrupt_numpy(images[0], "contrast", 2, np.random.default_rng(0)).astype(np.float64)
    x = images[0].astype(np.float64)
    means = x.mean(axis=(0, 1))
    np.testing.assert_allclose(out.mean(axis=(0, 1)), means, atol=1)
    np.testing.assert_allclose(out, (x - means) * c + means, atol=1)


def test_pixelate_is_pillows_box_resize_down_and_up(images):
    for severity in (1, 5):
        c = C.parameter("pixelate", severity)
        small = Image.fromarray(images[0]).resize((int(SIZE * c),) * 2, Image.BOX)
        expected = np.asarray(small.resize((SIZE, SIZE), Image.BOX), np.float64)
        out = C.corrupt_numpy(images[0], "pixelate", severity, np.random.default_rng(0))
        assert np.abs(out - expected).max() <= 1


def test_jpeg_compression_is_the_published_quality(images):
    for severity in (1, 5):
        buffer = io.BytesIO()
        Image.fromarray(images[0]).save(buffer, "JPEG", quality=C.parameter("jpeg_compression", severity))
        expected = np.asarray(Image.open(buffer), np.float64)
        assert np.abs(corrupt(images[0], "jpeg_compression", severity) - expected).mean() < 1.0


def test_blur_kernels_sums_and_shapes():
    for radius, alias in C.PARAMETERS["defocus_blur"]:
        kernel = C.disk_kernel(radius, alias)
        assert kernel.shape == ((17, 17) if radius <= 8 else (2 * radius + 1,) * 2)
        # The Gaussian softening mirrors at the window's border (OpenCV's reflect-101), so a disk
        # that reaches the border (radius 8 and 10) gains a little weight there, as the reference's.
        assert kernel.sum() == pytest.approx(1, abs=1e-9 if radius < kernel.shape[0] // 2 else 0.02)
        assert np.allclose(kernel, kernel.T)
        assert np.allclose(kernel, kernel[::-1, ::-1])
        centre = kernel.shape[0] // 2
        if radius + 2 <= centre:  # nothing beyond the disk but the softening's tail
            assert kernel[centre, centre + radius + 2] < 1e-3 * kernel.max()
    for radius, sigma in C.PARAMETERS["motion_blur"]:
        shifts = C.motion_kernel_shifts(radius, sigma, 0.0)
        assert len(shifts) == 2 * radius + 1 and sum(w for w, _, _ in shifts) == pytest.approx(1)
        assert [(dy, dx) for _, dy, dx in shifts[:3]] == [(0, 0), (0, -1), (0, -2)]  # along the angle
    for sigma in (0.7, 1.5, 170.8):
        operator = C.gaussian_operator(30, sigma, 3.0, "symmetric")
        np.testing.assert_allclose(operator.sum(axis=1), 1)


def test_filters_zooms_and_sampling_match_scipy(images):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = images[0] / 255.0
    for sigma, mode, scipy_mode, truncate in (
        (1.5, "edge", "nearest", 4.0),
        (19.5, "symmetric", "reflect", 3.0),
    ):
        expected = ndimage.gaussian_filter(x, (sigma, sigma, 0), mode=scipy_mode, truncate=truncate)
        np.testing.assert_allclose(C.gaussian_blur(x, sigma, truncate, mode), expected, atol=1e-6)
    expected = ndimage.zoom(x[5:30, 5:30], (1.3, 1.3, 1), order=1)
    operator = C.linear_zoom_operator(25, 1.3)
    np.testing.assert_allclose(C.apply_separable(x[5:30, 5:30], operator, operator), expected, atol=1e-6)
    rng = np.random.default_rng(1)
    y, xs = rng.uniform(-3, SIZE + 2, (2, SIZE, SIZE))
    expected = np.stack(
        [ndimage.map_coordinates(x[..., k], [y, xs], order=1, mode="reflect") for k in range(3)], -1
    )
    np.testing.assert_allclose(C.bilinear_sample(x, y, xs, "symmetric"), expected, atol=1e-6)
    kernel = C.disk_kernel(3, 0.5)
    expected = np.stack(
        [ndimage.correlate(x[..., k], kernel, mode="mirror") for k in range(3)], -1
    )  # OpenCV's BORDER_REFLECT_101 is SciPy's "mirror"
    np.testing.assert_allclose(C.filter2d(x, kernel), expected, atol=1e-6)


def test_blurs_and_warps_keep_a_flat_image_flat():
    flat = np.full((SIZE, SIZE, 3), 100, np.uint8)
    for name in ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "elastic_transform", "pixelate"):
        out = C.corrupt_numpy(flat, name, 3, np.random.default_rng(0))
        assert set(np.unique(out)) <= {99, 100}, name  # 100/255 * 255 may truncate to 99


def test_draws_depend_on_the_seed_and_the_image_index_only(images):
    for name in ("gaussian_noise", "glass_blur", "snow", "frost", "fog", "elastic_transform"):
        first, again = corrupt(images[0], name, 3, index=4), corrupt(images[0], name, 3, index=4)
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first, corrupt(images[0], name, 3, index=5)), name
        assert not np.array_equal(first, corrupt(images[0], name, 3, index=4, seed=1)), name


# Elastic transform is left out: the published severities 1-2 are large warps, 3-5 small local ones.
MONOTONIC = [name for name in C.CORRUPTIONS if name != "elastic_transform"]


def test_distortion_grows_with_severity(images):
    for name in MONOTONIC:
        distortions = []
        for severity in C.SEVERITIES:
            outs = [corrupt(image, name, severity, index=i) for i, image in enumerate(images)]
            distortions.append(np.mean([np.abs(o - image).mean() for o, image in zip(outs, images)]))
        # Severity 5 distorts more than severity 1, and no step undoes much of what the ones before did.
        assert distortions[-1] > distortions[0], (name, distortions)
        assert all(b > 0.6 * a for a, b in zip(distortions, distortions[1:])), (name, distortions)


def test_frost_is_a_synthetic_layer_coloured_like_the_photographs():
    colours = {tuple(mean) for mean, _ in C._FROST_COLOURS}  # noqa: SLF001  the table it draws from
    for index in range(3):
        layer = C.synthetic_frost(48, 48, np.random.default_rng(index))
        assert layer.shape == (48, 48, 3) and 0 <= layer.min() and layer.max() <= 255
        assert min(np.abs(layer.mean(axis=(0, 1)) - np.array(c)).max() for c in colours) < 12


def test_scores_are_normalised_by_alexnet_on_imagenet_only():
    errors = {name: {s: C.ALEXNET_ERRORS[name] for s in C.SEVERITIES} for name in C.CORRUPTIONS}
    scores = C.corruption_scores(errors, C.ALEXNET_CLEAN_ERROR, normalise=True)
    assert scores["mce"] == pytest.approx(1) and scores["relative_mce"] == pytest.approx(1)
    plain = C.corruption_scores({"fog": {1: 0.2, 2: 0.4}}, 0.1, normalise=False)
    assert plain["ce"]["fog"] == pytest.approx(0.3) and plain["relative_mce"] == pytest.approx(0.2)


def test_bad_names_and_severities_are_refused():
    with pytest.raises(ValueError, match="unknown corruption fogg; choose from all, gaussian_noise"):
        C.check(["fogg"], [1])
    with pytest.raises(ValueError, match="severity 0, 6 is not one of 1, 2, 3, 4, 5"):
        C.check(["fog"], [0, 6])


# ----------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def benchmark_inputs(tmp_path_factory):
    """Two small validation images, and a tiny classifier exported with a 32-pixel input."""
    from tiny_models import small_classifier

    from alexnet_tf.serving.saved_model import export_saved_model

    root = tmp_path_factory.mktemp("corruptions")
    data_dir = str(root / "data")
    write_fake_tfrecords(
        data_dir, num_records=2, num_shards=1, split="validation", num_classes=7, image_shapes=[(40, 48)] * 2
    )
    export = export_saved_model(small_classifier(image_size=32), str(root / "model"), warmup=False)
    return root, data_dir, export


def _command(*flags):
    return [sys.executable, "-m", "alexnet_tf.evaluate", *flags]


@pytest.mark.slow
def test_command_writes_75_rows_whose_clean_error_is_plain_evaluate(benchmark_inputs):
    root, data_dir, export = benchmark_inputs
    report_dir = root / "report"
    base = [f"--data_dir={data_dir}", f"--saved_model={export}", "--batch_size=2"]
    bad = {
        "unknown corruption fogg; choose from all, gaussian_noise": ["--corruptions=fogg"],
        "--corruptions does not combine with --ten_crop": ["--corruptions=fog", "--ten_crop"],
    }
    failing = {
        message: subprocess.Popen(
            _command(*base, *extra), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for message, extra in bad.items()
    }
    result = subprocess.run(
        _command(*base, "--corruptions=all", f"--report_dir={report_dir}"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # A progress line per corruption, then the table.
    for name in C.CORRUPTIONS:
        assert any(line.startswith(name) and "images/s" in line for line in result.stdout.splitlines())
    assert "mCE" in result.stdout and "not normalised: the data is not ImageNet" in result.stdout
    report = json.loads((report_dir / "corruptions.json").read_text())
    rows = {(r["corruption"], r["severity"]) for r in report["results"]}
    assert len(report["results"]) == len(rows) == 75
    assert all(r["count"] == 2 for r in report["results"])
    assert report["normalised"] is False and report["data"]["imagenet"] is False
    assert report["clean"]["severity"] == 0 and any("frost is an approximation" in n for n in report["notes"])
    plain = evaluate.run(
        evaluate.EvalConfig(data_dir=data_dir, saved_model=export, batch_size=2, ten_crop=False)
    )
    assert report["clean"]["top1_error"] == 1 - plain["centre_crop"]["top1"]
    assert report["clean"]["top5_error"] == 1 - plain["centre_crop"]["top5"]
    with Image.open(report_dir / "corruptions.png") as picture:
        picture.load()
        assert picture.size[0] > 300 and picture.mode == "RGB"
    for message, process in failing.items():
        _, stderr = process.communicate(timeout=300)
        lines = [line for line in stderr.splitlines() if line.startswith("alexnet_tf.evaluate")]
        assert process.returncode == 2 and len(lines) == 1, stderr[-3000:]
        assert message in lines[0]
    assert not os.path.exists(root / "model" / "corruptions.json")
    # The same ConfigError, so the same one line and status 2 (a process each would cost seconds of
    # TensorFlow's import): severities outside 1-5, and a SavedModel, which has no model dir to write into.
    for flags, message in (
        (dict(corruptions="fog", severities="0,6"), "severity 0, 6 is not one of 1, 2, 3, 4, 5"),
        (dict(corruptions="fog"), "pass --report_dir"),
    ):
        with pytest.raises(ConfigError, match=message):
            evaluate.run_corruptions(evaluate.EvalConfig(data_dir=data_dir, saved_model=export, **flags))
