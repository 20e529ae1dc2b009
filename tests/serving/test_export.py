"""Tests of alexnet_tf.export on a small stand-in classifier (the export takes any Keras model)."""

import os
import subprocess
import sys

from conftest import REPO, run_command
import keras
import numpy as np
import pytest
import tensorflow as tf
from tiny_dataset import write_jpeg
from tiny_models import LABELS, small_classifier

from alexnet_tf import export
from alexnet_tf.config import ConfigError
from alexnet_tf.data import preprocessing
from alexnet_tf.layers import GroupedConv2D, LocalResponseNormalization
from alexnet_tf.serving import limits, saved_model, signatures


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = small_classifier()
    base = str(tmp_path_factory.mktemp("export"))
    path = saved_model.export_saved_model(model, base, labels=LABELS)
    return model, base, path, tf.saved_model.load(path)


def expected_probabilities(model, image):
    return tf.nn.softmax(model(preprocessing.preprocess_for_eval(image)[tf.newaxis])).numpy()


def test_layout_is_tf_serving_versioned_and_complete(exported):
    _, base, path, _ = exported
    assert path == os.path.join(base, "1")
    assert sorted(os.listdir(base)) == ["1"]  # no staging folder left behind
    assert {"saved_model.pb", "variables", "assets"} <= set(os.listdir(path))
    with open(os.path.join(path, "assets", saved_model.LABELS_ASSET)) as f:
        assert f.read().splitlines() == LABELS
    assert saved_model.next_version(base) == 2
    assert saved_model.next_version(os.path.join(base, "missing")) == 1


def test_serving_default_takes_image_bytes_and_returns_named_outputs(exported, tmp_path):
    model, _, _, loaded = exported
    signature = loaded.signatures[signatures.SERVING_SIGNATURE]
    ((name, spec),) = signature.structured_input_signature[1].items()
    assert (name, spec.dtype, spec.shape.as_list()) == ("image_bytes", tf.string, [None])
    jpeg = write_jpeg(tmp_path / "a.jpg", 300, 451)
    png = tf.io.encode_png(tf.io.decode_jpeg(jpeg)).numpy()
    out = signature(image_bytes=tf.constant([jpeg, png]))
    assert {k: (v.dtype, v.shape.as_list()) for k, v in out.items()} == {
        "probabilities": (tf.float32, [2, 7]),
        "top_k_classes": (tf.int32, [2, 5]),
        "top_k_scores": (tf.float32, [2, 5]),
        "top_k_labels": (tf.string, [2, 5]),
    }
    expected = expected_probabilities(model, tf.io.decode_jpeg(jpeg))
    np.testing.assert_allclose(out["probabilities"].numpy()[0], expected[0], atol=1e-6)
    np.testing.assert_allclose(out["probabilities"].numpy()[1], expected[0], atol=1e-6)  # same pixels
    order = np.argsort(-expected[0])[:5]
    assert out["top_k_classes"].numpy()[0].tolist() == order.tolist()
    assert out["top_k_labels"].numpy()[0].astype(str).tolist() == [LABELS[c] for c in order]


def test_predict_images_takes_uint8_or_float32_pixels_of_any_size(exported):
    model, _, _, loaded = exported
    pixels = np.random.default_rng(1).integers(0, 256, size=(2, 260, 300, 3)).astype(np.uint8)
    expected = np.concatenate([expected_probabilities(model, p) for p in pixels])
    as_uint8 = loaded.predict_images(tf.constant(pixels))["probabilities"].numpy()
    as_float = loaded.signatures[signatures.PIXELS_SIGNATURE](images=tf.constant(pixels, tf.float32))
    np.testing.assert_allclose(as_uint8, expected, atol=1e-6)
    np.testing.assert_allclose(as_float["probabilities"].numpy(), expected, atol=1e-4)
    assert int(loaded.image_size.numpy()) == 224 and int(loaded.num_classes.numpy()) == 7
    crops = tf.stack([preprocessing.preprocess_for_eval(p) for p in pixels])
    np.testing.assert_allclose(loaded.logits(crops).numpy(), model(crops).numpy(), atol=1e-5)


def test_versions_count_up_and_labels_default_to_class_numbers(tmp_path):
    model = small_classifier(num_classes=3, fc7=False)
    base = str(tmp_path)
    first = saved_model.export_saved_model(model, base)
    second = saved_model.export_saved_model(model, base)
    assert (first, second) == (os.path.join(base, "1"), os.path.join(base, "2"))
    assert saved_model.export_saved_model(model, base, version=7) == os.path.join(base, "7")
    loaded = tf.saved_model.load(second)
    assert signatures.FEATURES_SIGNATURE not in loaded.signatures  # a model without fc7 has none
    out = loaded.predict_images(tf.zeros([1, 240, 240, 3], tf.uint8))
    assert out["top_k_classes"].shape == (1, 3)  # top-k stops at the number of classes
    assert sorted(out["top_k_labels"].numpy()[0].astype(str)) == ["0", "1", "2"]
    with pytest.raises(ValueError, match="already exists"):
        saved_model.export_saved_model(model, base, version=2)
    with pytest.raises(ValueError, match="2 labels for a model with 3 classes"):
        saved_model.export_saved_model(model, base, labels=["a", "b"])


# ----------------------------------------------------------------------------- issue 5: serving

TIMEOUT = 240
# Reads the export in a fresh interpreter and calls every signature, batch 1 and batch N.
FRESH_PROCESS_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
path, out, *files = sys.argv[1:]
loaded = tf.saved_model.load(path)
encoded = [open(f, "rb").read() for f in files]
results = {}
for name in ("serving_default", "serving_ten_crop"):
    signature = loaded.signatures[name]
    results[name + "/batch"] = signature(image_bytes=tf.constant(encoded))["probabilities"].numpy()
    single = signature(image_bytes=tf.constant(encoded[:1]))
    results[name + "/single"] = single["top_k_labels"].numpy().astype(bytes)
pixels = np.stack([tf.io.decode_image(encoded[0], channels=3).numpy()] * 3)
results["predict_images/batch"] = loaded.signatures["predict_images"](
    images=tf.constant(pixels, tf.float32))["probabilities"].numpy()
results["predict_images/uint8"] = loaded.predict_images(tf.constant(pixels[:1]))["probabilities"].numpy()
features = loaded.signatures["features"]
results["features/batch"] = features(image_bytes=tf.constant(encoded))["features"].numpy()
try:
    features(image_bytes=tf.constant([encoded[0], b"not an image"]))
except tf.errors.InvalidArgumentError as e:
    results["features/error"] = np.array(e.message)
np.savez(out, **results)
"""


def encoded_images(directory):
    """Real files of four formats and sizes: JPEG 300x451, PNG 257x256, GIF 240x320, BMP 400x230."""
    from PIL import Image

    paths = [os.path.join(directory, "a.jpg")]
    write_jpeg(paths[0], 300, 451, seed=3)
    rng = np.random.default_rng(4)
    for name, (h, w) in (("b.png", (257, 256)), ("c.gif", (240, 320)), ("d.bmp", (400, 230))):
        pixels = np.repeat(np.repeat(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), np.uint8), 8, 0), 8, 1)
        paths.append(os.path.join(directory, name))
        Image.fromarray(pixels[:h, :w]).save(paths[-1])
    return paths


def in_memory_probabilities(model, encoded, ten_crop=False):
    image = preprocessing.decode_image(encoded)
    if ten_crop:
        return tf.reduce_mean(tf.nn.softmax(model(preprocessing.ten_crop(image))), axis=0).numpy()
    return tf.nn.softmax(model(preprocessing.preprocess_for_eval(image)[tf.newaxis]))[0].numpy()


@pytest.mark.slow
def test_fresh_process_serves_every_signature_like_the_in_memory_model(exported, tmp_path):
    model, _, path, _ = exported
    files = encoded_images(str(tmp_path))
    out = str(tmp_path / "out.npz")
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, path, out, *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(out)
    encoded = [open(f, "rb").read() for f in files]
    for signature, ten in (("serving_default", False), ("serving_ten_crop", True)):
        expected = np.stack([in_memory_probabilities(model, e, ten) for e in encoded])
        np.testing.assert_allclose(got[signature + "/batch"], expected, atol=1e-5, err_msg=signature)
        top = [LABELS[c] for c in np.argsort(-expected[0])[:5]]
        assert got[signature + "/single"].astype(str)[0].tolist() == top
    first = in_memory_probabilities(model, encoded[0])
    # Float pixels are resized without rounding to uint8: compare on the same float input.
    as_float = tf.cast(preprocessing.decode_image(encoded[0]), tf.float32)
    first_float = tf.nn.softmax(model(preprocessing.preprocess_for_eval(as_float)[tf.newaxis]))[0].numpy()
    np.testing.assert_allclose(got["predict_images/batch"], np.stack([first_float] * 3), atol=1e-5)
    np.testing.assert_allclose(got["predict_images/uint8"], first[np.newaxis], atol=1e-5)
    fc7 = keras.Model(model.inputs, model.get_layer("fc7").output)
    crops = tf.stack([preprocessing.preprocess_for_eval(preprocessing.decode_image(e)) for e in encoded])
    assert got["features/batch"].dtype == np.float32 and got["features/batch"].shape == (4, 4)
    np.testing.assert_allclose(got["features/batch"], fc7(crops).numpy(), atol=1e-5)
    assert "image_bytes[1] is not a JPEG, PNG, GIF or BMP image" in str(got["features/error"])


def test_features_command_reads_the_features_signature_and_names_a_bad_file(exported, tmp_path):
    """`python -m alexnet_tf.features --model=<export>` gets fc7 from the SavedModel's signature."""
    from absl import flags

    from alexnet_tf.features import run as features
    from alexnet_tf.serving import embedding

    model, base, _, _ = exported
    files = [str(tmp_path / f"{i}.jpg") for i in range(3)]
    encoded = [write_jpeg(path, 240 + 20 * i, 300, seed=i) for i, path in enumerate(files)]
    (tmp_path / "bad.png").write_bytes(b"\x89PNG but nothing more")
    values = flags.FlagValues()
    features.define_flags(values)
    values(["features", f"--model={base}", f"--output={tmp_path / 'f.npz'}", "--batch_size=2"])
    # The bad file fails its batch in the signature; the command retries that batch one by one.
    written, failures = features.run([files[0], str(tmp_path / "bad.png"), *files[1:]], values)
    assert written == str(tmp_path / "f.npz")
    assert [name for name, _ in failures] == [str(tmp_path / "bad.png")]
    assert "image_bytes[0] is a truncated or corrupt image" in failures[0][1]
    saved = np.load(written)
    assert saved["files"].tolist() == files and str(saved["layer"]) == "fc7"
    crops = tf.stack([preprocessing.preprocess_for_eval(preprocessing.decode_image(e)) for e in encoded])
    expected = embedding.feature_model(model)(crops).numpy()
    np.testing.assert_allclose(saved["features"], expected, atol=1e-5)
    values.layer = "conv1"
    with pytest.raises(features.UsageError, match="--layer=conv1: a SavedModel gives only"):
        features.run(files, values)


def test_bytes_that_are_no_image_fail_with_a_clear_error(exported, tmp_path):
    _, _, _, loaded = exported
    jpeg = write_jpeg(tmp_path / "a.jpg", 64, 80)
    for name in (signatures.SERVING_SIGNATURE, signatures.TEN_CROP_SIGNATURE):
        with pytest.raises(
            tf.errors.InvalidArgumentError, match=r"image_bytes\[1\] is not a JPEG, PNG, GIF or BMP"
        ):
            loaded.signatures[name](image_bytes=tf.constant([jpeg, b"hello, not an image"]))
    for cut in (jpeg[:200], jpeg[: len(jpeg) // 2]):  # truncated: valid magic bytes, named by index
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[1\] is a truncated JPEG"):
            loaded.signatures[signatures.SERVING_SIGNATURE](image_bytes=tf.constant([jpeg, cut]))
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"image_bytes\[0\] is a truncated or corrupt "
        r"image: the file ends inside the JPEG header",
    ):
        loaded.signatures[signatures.SERVING_SIGNATURE](image_bytes=tf.constant([jpeg[:20]]))
    # The process and the model go on serving.
    assert loaded.signatures[signatures.SERVING_SIGNATURE](image_bytes=tf.constant([jpeg]))[
        "probabilities"
    ].shape == (1, 7)


def test_warmup_file_holds_prediction_logs_that_replay(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    _, base, path, loaded = exported
    records = list(tf.data.TFRecordDataset(os.path.join(path, saved_model.WARMUP_FILE)).as_numpy_iterator())
    seen = set()
    for record in records:
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        assert request.model_spec.name == os.path.basename(base)
        seen.add(request.model_spec.signature_name)
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
        first_output = outputs["features" if "features" in outputs else "probabilities"]
        assert first_output.shape[0] == len(next(iter(inputs.values())))
    assert seen == {
        signatures.SERVING_SIGNATURE,
        signatures.PIXELS_SIGNATURE,
        signatures.TEN_CROP_SIGNATURE,
        signatures.FEATURES_SIGNATURE,
    }


@pytest.mark.slow
def test_saved_model_cli_shows_and_runs_the_signatures(exported, tmp_path):
    _, _, path, _ = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    show = subprocess.run(
        [cli, "show", "--all", "--dir", path], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert show.returncode == 0, show.stderr[-2000:]
    for text in (
        "signature_def['serving_default']",
        "inputs['image_bytes']",
        "signature_def['predict_images']",
        "signature_def['serving_ten_crop']",
        "outputs['top_k_labels']",
        "dtype: DT_STRING",
        "signature_def['features']",
        "outputs['features']",
    ):
        assert text in show.stdout
    np.save(tmp_path / "bytes.npy", np.array([write_jpeg(tmp_path / "a.jpg", 120, 90)]))
    runs = [
        ["--signature_def", "serving_default", "--inputs", f"image_bytes={tmp_path / 'bytes.npy'}"],
        ["--signature_def", "predict_images", "--inputs", f"images={tmp_path / 'pixels.npy'}"],
    ]
    np.save(tmp_path / "pixels.npy", np.full((2, 250, 300, 3), 90.0, np.float32))
    for args in runs:
        result = subprocess.run(
            [cli, "run", "--dir", path, "--tag_set", "serve", *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert "top_k_labels" in result.stdout and "probabilities" in result.stdout


def test_cli_run_exports_a_keras_file_with_synset_labels(tmp_path):
    model = small_classifier(num_classes=3)
    model.save(tmp_path / "m.keras")
    (tmp_path / "labels.txt").write_text("0\tn01\ttench\n1\tn02\tgoldfish\n2\tn03\tshark\n")
    path = export.run(str(tmp_path / "m.keras"), str(tmp_path / "models"), version=4)
    assert path == str(tmp_path / "models" / "4")
    with open(os.path.join(path, "MODEL_CARD.md"), encoding="utf-8") as f:  # no run, no import: says so
        card = f.read()
    assert f"- parameters: {model.count_params():,}" in card and "not measured yet" in card
    with open(os.path.join(path, "assets", saved_model.LABELS_ASSET)) as f:
        assert f.read().splitlines() == ["n01 tench", "n02 goldfish", "n03 shark"]
    with pytest.raises(ConfigError, match="no checkpoint"):
        export.run(str(tmp_path / "nothing"), str(tmp_path / "models"))


def test_onnx_pixel_model_matches_the_pixel_signature(tmp_path):
    """AlexNet's own layers (grouped convolution, LRN) through tf2onnx and onnxruntime.

    A shrunk stack keeps the test fast; `python -m alexnet_tf.benchmark --mode=serve` converts the
    full network.
    """
    from alexnet_tf.serving import onnx_export

    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.Conv2D(8, 11, strides=4, activation="relu")(inputs)
    x = LocalResponseNormalization()(x)
    x = GroupedConv2D(16, 5, groups=2, padding="same", activation="relu")(x)
    x = LocalResponseNormalization()(keras.layers.MaxPooling2D(3, 2)(x))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x)))
    path = onnx_export.export_onnx(model, str(tmp_path / "alexnet.onnx"))
    labels_path = tmp_path / "labels.txt"
    labels_path.write_text("\n".join(map(str, range(10))) + "\n")
    module = signatures.ServingModule(model, str(labels_path), 224, 5)
    rng = np.random.default_rng(5)
    for shape in ((1, 300, 451, 3), (3, 256, 256, 3)):
        pixels = rng.integers(0, 256, size=shape).astype(np.uint8)
        inputs = np.stack([onnx_export.to_onnx_input(p).numpy() for p in pixels])
        expected = module.predict_images(tf.constant(pixels))["probabilities"].numpy()
        np.testing.assert_allclose(onnx_export.onnxruntime_probabilities(path, inputs), expected, atol=1e-4)
    model.save(tmp_path / "m.keras")  # the command line's path: .keras file -> .onnx file
    written = export.run(str(tmp_path / "m.keras"), str(tmp_path / "out" / "m.onnx"), export_format="onnx")
    assert (tmp_path / "out" / "m.MODEL_CARD.md").read_text().startswith("# AlexNet")  # beside the file
    np.testing.assert_allclose(
        onnx_export.onnxruntime_probabilities(written, inputs),
        onnx_export.onnxruntime_probabilities(path, inputs),
        atol=1e-6,
    )


# ----------------------------------------------------------------------------- issue 12: serving limits


def black_png(height, width):
    """A valid 8-bit grayscale PNG of zeros, written with zlib: 20000x20000 is ~380 KiB."""
    import struct
    import zlib

    def chunk(kind, payload):
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    compressor, row = zlib.compressobj(9), bytes(width + 1)  # filter byte 0, then the pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


# Calls serving_default of a SavedModel in a fresh interpreter, one request per argument file
# (a .npy array of encoded images); prints one JSON line per request: the outcome and the peak
# RSS of the process before and after it.
LIMITS_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
def peak_kib():  # this process image's peak RSS (getrusage's ru_maxrss keeps the parent's across exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
serve(image_bytes=tf.constant([open(sys.argv[2], "rb").read()]))  # trace and warm up
for path in sys.argv[3:]:
    before = peak_kib()
    try:
        result = {"shape": serve(image_bytes=tf.constant(np.load(path)))["probabilities"].shape.as_list()}
    except tf.errors.InvalidArgumentError as e:
        result = {"error": e.message}
    result["rss_kib"] = peak_kib()
    result["rss_before_kib"] = before
    print(json.dumps(result), flush=True)
"""


def run_limits_script(path, requests, tmp_path):
    """Sends each request (a list of encoded images) in one fresh process; returns their results."""
    files = []
    for k, images in enumerate(requests):
        files.append(str(tmp_path / f"request{k}.npy"))
        np.save(files[-1], np.array(images, dtype=object), allow_pickle=True)
    write_jpeg(tmp_path / "warm.jpg", 64, 80)
    script = LIMITS_SCRIPT.replace("np.load(path)", "np.load(path, allow_pickle=True).tolist()")
    result = subprocess.run(
        [sys.executable, "-c", script, path, str(tmp_path / "warm.jpg"), *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.slow
def test_decompression_bomb_is_refused_before_decoding_in_a_fresh_process(exported, tmp_path):
    """A 20000x20000 black PNG (~380 KiB, 1.2 GB decoded) is refused from its header, cheaply."""
    _, _, path, _ = exported
    bomb = black_png(20000, 20000)
    assert len(bomb) < 1 << 20
    small = write_jpeg(tmp_path / "a.jpg", 64, 80)
    bomb_result, batch_result, large_png = run_limits_script(
        path, [[small, bomb], [small] * 65, [black_png(6000, 6000)]], tmp_path
    )
    assert (
        "image_bytes[1] is 20000x20000 pixels (400000000), over the limit of 40000000 pixels per "
        "image (max_pixels)" in bomb_result["error"]
    )
    # Refused from the header: the process grew by far less than the 1.2 GB a decode takes.
    assert bomb_result["rss_kib"] - bomb_result["rss_before_kib"] < 100 * 1024, bomb_result
    assert "request has 65 images, over the limit of 64 per request (max_batch)" in batch_result["error"]
    assert large_png["shape"] == [1, 7]  # 36 MP: under the limit, served


def test_limits_are_export_options(tmp_path):
    path = saved_model.export_saved_model(
        small_classifier(), str(tmp_path), warmup=False, max_pixels=100 * 100, max_batch=2
    )
    serve = tf.saved_model.load(path).signatures[signatures.SERVING_SIGNATURE]
    small, large = write_jpeg(tmp_path / "a.jpg", 100, 100), write_jpeg(tmp_path / "b.jpg", 100, 101)
    assert serve(image_bytes=tf.constant([small, small]))["probabilities"].shape == (2, 7)
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"image_bytes\[1\] is 101x100 pixels \(10100\), "
        r"over the limit of 10000 pixels",
    ):
        serve(image_bytes=tf.constant([small, large]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="request has 3 images, over the limit of 2"):
        serve(image_bytes=tf.constant([small] * 3))
    features = tf.saved_model.load(path).signatures[signatures.FEATURES_SIGNATURE]  # the same limits
    assert features(image_bytes=tf.constant([small, small]))["features"].shape == (2, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[1\] is 101x100 pixels"):
        features(image_bytes=tf.constant([small, large]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="request has 3 images, over the limit of 2"):
        features(image_bytes=tf.constant([small] * 3))
    pixels = tf.saved_model.load(path).signatures[signatures.PIXELS_SIGNATURE]
    with pytest.raises(tf.errors.InvalidArgumentError, match="images are 101x100 pixels"):
        pixels(images=tf.zeros([1, 100, 101, 3]))


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "BMP-top-down", "JPEG-progressive"])
def test_header_sizes_match_the_decoder(fmt):
    """The sizes read from headers are those the decoder produces, for every format served."""
    import io

    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 53, 3), np.uint8))
    buffer = io.BytesIO()
    if fmt == "JPEG-progressive":
        image.save(buffer, "JPEG", progressive=True)
    else:
        image.save(buffer, fmt.split("-")[0])
    encoded = buffer.getvalue()
    if fmt == "BMP-top-down":  # negative height: rows stored top to bottom
        height = int.from_bytes(encoded[22:26], "little", signed=True)
        encoded = encoded[:22] + (-height).to_bytes(4, "little", signed=True) + encoded[26:]
    header = limits.image_header(tf.constant(0), tf.constant(encoded), max_pixels=10**9).numpy()
    assert header.tolist() == [37, 53, 1]
    assert tf.io.decode_image(encoded, channels=3, expand_animations=False).shape == (37, 53, 3)


def test_large_jpegs_are_decoded_downscaled_with_the_same_result(exported, tmp_path):
    """A 4200x5000 JPEG decodes at 1/4 (shorter side 1050 >= 4 x 256): crops match the full decode."""
    model, _, _, loaded = exported
    rng = np.random.default_rng(0)
    from tiny_dataset import natural_image

    for (height, width), ratio in (((1000, 1500), 1), ((2100, 3000), 2), ((4200, 5000), 4)):
        jpeg = tf.io.encode_jpeg(natural_image(rng, height, width), quality=90).numpy()
        header = limits.image_header(tf.constant(0), tf.constant(jpeg), max_pixels=10**9).numpy()
        assert header.tolist() == [height, width, ratio]
        full = preprocessing.preprocess_for_eval(preprocessing.decode_image(jpeg))
        scaled = preprocessing.preprocess_for_eval(tf.io.decode_jpeg(jpeg, channels=3, ratio=ratio))
        assert float(tf.reduce_mean(tf.abs(full - scaled))) < 1.0  # of 255: below JPEG q90 noise
        served = loaded.signatures[signatures.SERVING_SIGNATURE](image_bytes=tf.constant([jpeg]))
        served = served["probabilities"].numpy()[0]
        np.testing.assert_allclose(served, tf.nn.softmax(model(scaled[tf.newaxis]))[0].numpy(), atol=1e-5)
        expected = tf.nn.softmax(model(full[tf.newaxis]))[0].numpy()
        np.testing.assert_allclose(served, expected, atol=1e-2, err_msg=f"{height}x{width}")
        assert np.argmax(served) == np.argmax(expected)


def test_onnx_export_without_tf2onnx_says_how_to_install_it_before_loading_the_model(tmp_path):
    """The command as run where tf2onnx is not installed: `sys.modules` entry None fails its import."""
    code = (
        "import runpy, sys; sys.modules['tf2onnx'] = None; "
        f"sys.argv = ['export', '--checkpoint={tmp_path / 'absent.keras'}', "
        f"'--export_dir={tmp_path / 'm.onnx'}', '--format=onnx']; "
        "runpy.run_module('alexnet_tf.export', run_name='__main__', alter_sys=True)"
    )
    result = run_command(["-c", code], timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("alexnet_tf.export: error:")]
    assert len(lines) == 1 and 'pip install "alexnet_tf[onnx]"' in lines[0], result.stderr[-3000:]
    assert not os.path.exists(tmp_path / "m.onnx")
