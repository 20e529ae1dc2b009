"""Tests of python -m alexnet_tf.features: fc7 files, the neighbours, predictions and Grad-CAM pictures.

One module-scoped setup: the demo dataset rendered and converted with 3 classes (4 training
and 2 validation images each, JPEG files and TFRecords) and a one_weird_trick AlexNet at
95 px saved as .keras. The neighbours command runs as a fresh process (exit status, stderr);
the other checks call `features.run`, what the command runs, in this process. An exported
SavedModel as --model is tested in test_export.py, on the export made there.
"""

import json
import os
import shutil
import types

from absl import flags
from conftest import run_command
import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import explain
from alexnet_tf.data import demo as demo_data
from alexnet_tf.data import pipelines, preprocessing
from alexnet_tf.data.pipelines import PixelSettings
from alexnet_tf.features import figures, models
from alexnet_tf.features import run as features
from alexnet_tf.features import sources as image_sources
from alexnet_tf.model import build_alexnet
from alexnet_tf.serving import embedding

IMAGE_SIZE = 95


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    data_dir = demo_data.build_demo_dataset(
        str(root / "cache"), num_classes=3, train_per_class=4, validation_per_class=2
    )
    raw = os.path.join(os.path.dirname(data_dir), "raw")
    keras.utils.set_random_seed(0)
    model = build_alexnet(
        num_classes=3,
        variant="one_weird_trick",
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        dropout_rate=0.0,
        weight_decay=0.0,
    )
    keras_file = str(root / "model.keras")
    model.save(keras_file)
    # What `models.load(keras_file)` returns, without reading the 230 MB file again in each test.
    return types.SimpleNamespace(
        data_dir=data_dir,
        train=os.path.join(raw, "train"),
        val=os.path.join(raw, "val"),
        model=model,
        keras_file=keras_file,
        loaded=models.KerasModel(model, labels_dir=str(root)),
    )


def flag_values(**overrides):
    """The command's flags at their defaults, as `features.run` reads them, with `overrides`."""
    values = flags.FlagValues()
    features.define_flags(values)
    values(["features"])
    return types.SimpleNamespace(**{**values.flag_values_dict(), **overrides})


def read_png(path):
    with open(path, "rb") as f:
        return tf.io.decode_png(f.read(), channels=3).numpy()


def test_fc7_of_a_data_dir_split_are_those_of_the_evaluation_crops(demo, tmp_path, capsys):
    output = str(tmp_path / "out" / "features.npz")
    config = flag_values(
        model=demo.keras_file, layer="fc7", data_dir=demo.data_dir, split="validation", output=output
    )
    written, failures = features.run([], config, demo.loaded)
    assert (written, failures) == (output, [])
    assert "features: 6/6 images (100.0%)" in capsys.readouterr().err  # the progress line
    saved = np.load(output)
    assert saved["features"].dtype == np.float32 and saved["features"].shape == (6, 4096)
    assert saved["label_names"].tolist() == ["circle", "square", "triangle"]
    assert str(saved["layer"]) == "fc7"
    records = tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(os.path.join(demo.data_dir, "validation-*"))))
    parsed = [
        tf.io.parse_single_example(
            r,
            {
                "image/filename": tf.io.FixedLenFeature([], tf.string),
                "image/class/label": tf.io.FixedLenFeature([], tf.int64),
            },
        )
        for r in records
    ]
    assert saved["files"].tolist() == [p["image/filename"].numpy().decode() for p in parsed]
    assert saved["labels"].tolist() == [int(p["image/class/label"]) for p in parsed]
    # The very crops evaluation reads (pipelines.evaluation_dataset), through fc7.
    dataset = pipelines.evaluation_dataset(
        os.path.join(demo.data_dir, "validation-*"), 6, pixels=PixelSettings(image_size=IMAGE_SIZE)
    )
    images, labels = next(iter(dataset))
    assert labels.numpy().tolist() == saved["labels"].tolist()
    expected = embedding.feature_model(demo.model)(images, training=False).numpy()
    np.testing.assert_allclose(saved["features"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_command_draws_each_query_and_its_six_nearest_gallery_images(demo, tmp_path):
    gallery = shutil.copytree(demo.train, tmp_path / "gallery")
    (gallery / "broken.jpg").write_bytes(b"not an image at all")
    query_in_gallery = sorted(gallery.glob("n00000001/*.JPEG"))[0]
    queries = [os.path.join(demo.val, "ILSVRC2012_val_00000001.JPEG"), str(query_in_gallery)]
    output = tmp_path / "neighbours.png"
    result = run_command(
        [
            "-m",
            "alexnet_tf.features",
            f"--model={demo.keras_file}",
            f"--neighbours={','.join(queries)}",
            f"--gallery={gallery}",
            f"--output={output}",
        ]
    )
    # The broken file is named and skipped; the picture of the others is written; status 1.
    assert result.returncode == 1, result.stderr[-3000:]
    assert (
        f"alexnet_tf.features: {gallery / 'broken.jpg'}: not an image: unrecognised content starting "
        f"{b'not an i'!r}; skipped"
    ) in result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(output)
    picture = read_png(output)
    layout = figures.neighbours_layout(6, 128)
    assert picture.shape == (layout.size(2)[1], layout.size(2)[0], 3)
    assert picture.shape[1] >= 7 * 128 and picture.shape[0] >= 2 * 128

    def cell(row, column):
        x, y = layout.origin(row, column)
        return picture[y : y + 128, x : x + 128].astype(int)

    # A query that is in the gallery is its own nearest neighbour (distance 0): the same picture.
    np.testing.assert_array_equal(cell(1, 1), cell(1, 0))
    for column in range(2, 7):
        assert np.abs(cell(1, column) - cell(1, 0)).mean() > 5, column
    for column in range(7):
        assert cell(0, column).std() > 0, column  # every cell holds an image


def test_predictions_picture_shows_top_labels_as_bars_with_the_true_one_red(demo, tmp_path):
    output = str(tmp_path / "predictions.png")
    config = flag_values(
        model=demo.keras_file, data_dir=demo.data_dir, predictions=True, output=output, max_images=5
    )
    written, failures = features.run([], config, demo.loaded)
    assert (written, failures) == (output, [])
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(output).st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not a private temporary
    assert not [name for name in os.listdir(tmp_path) if ".tmp" in name]
    picture = read_png(output)
    columns, rows = 4, 2  # 5 images, 4 per row
    assert picture.shape[1] == 2 * figures.MARGIN + columns * (128 + 2 * figures.PAD) - 2 * figures.PAD
    assert picture.shape[0] > rows * (128 + 3 * 10)  # thumbnails, the true label, 3 bars each
    red = np.all(picture == figures.TRUTH_BAR, axis=-1)
    blue = np.all(picture == figures.BAR, axis=-1)
    assert red.any() and blue.any()
    # 3 classes: every true label is among the top 3, so each image has one red bar.
    cell_width = 128 + 2 * figures.PAD
    for i in range(5):
        left = figures.MARGIN + (i % columns) * cell_width
        top, bottom = (0, picture.shape[0] // 2) if i < columns else (picture.shape[0] // 2, picture.shape[0])
        assert red[top:bottom, left : left + 128].any(), i


def test_any_layer_of_files_and_clear_errors(demo, tmp_path):
    files = sorted(os.path.join(demo.val, name) for name in os.listdir(demo.val))[:3]
    output = str(tmp_path / "conv5.npz")
    config = flag_values(model=demo.keras_file, layer="conv5", output=output)
    written, failures = features.run(files, config, demo.loaded)
    assert (written, failures) == (output, [])
    saved = np.load(output)
    assert saved["features"].shape == (3, 5, 5, 256)  # conv5 of a 95-px crop
    assert saved["files"].tolist() == files and saved["labels"].tolist() == [-1, -1, -1]
    wrong_layer = r"--layer=fc9: the model has no such layer; pass one of its layers: pad1, conv1, .*logits$"
    with pytest.raises(features.UsageError, match=wrong_layer):
        features.run(files, flag_values(model=demo.keras_file, layer="fc9", output=output), demo.loaded)
    with pytest.raises(features.UsageError, match=r"--output=x.png: features are written as NumPy \.npz"):
        features.run(files, flag_values(model=demo.keras_file, output="x.png"))
    with pytest.raises(features.UsageError, match="--neighbours needs --gallery"):
        features.run([], flag_values(model=demo.keras_file, neighbours=files, output="n.png"))
    # A data dir without the split is refused, not read as a folder of files that are no images.
    with pytest.raises(features.UsageError, match=r"no TFRecord shards test-\* in .* \(--gallery\)"):
        config = flag_values(
            model=demo.keras_file, neighbours=files, gallery=demo.data_dir, split="test", output="n.png"
        )
        features.run([], config)
    with pytest.raises(features.UsageError, match="no such file or folder: nowhere.jpg"):
        features.run(["nowhere.jpg"], flag_values(model=demo.keras_file, output=output))
    with pytest.raises(features.UsageError, match=r"no such file: none.keras \(--model\): pass a \.keras"):
        features.run(files, flag_values(model="none.keras", output=output))


def truncated_copy(demo, tmp_path):
    """A copy of the demo data dir whose train-00001-of-00004 (3 records) ends inside its 2nd record.

    Returns (data dir, the cut shard, the records that remain readable in split order).
    """
    data_dir = shutil.copytree(demo.data_dir, tmp_path / "data")
    shard = str(data_dir / "train-00001-of-00004")
    first = next(iter(tf.data.TFRecordDataset(shard))).numpy()
    with open(shard, "r+b") as f:
        f.truncate(16 + len(first) + 100)  # the 1st record's frame, then 100 bytes of the 2nd
    kept = []
    for name in sorted(os.listdir(demo.data_dir)):
        if name.startswith("train-"):
            records = [r.numpy() for r in tf.data.TFRecordDataset(os.path.join(demo.data_dir, name))]
            kept += records[:1] if name == "train-00001-of-00004" else records
    return str(data_dir), shard, kept


FIELDS = {"image/encoded": tf.string, "image/filename": tf.string, "image/class/label": tf.int64}


def fc7_of_records(demo, records):
    """(filenames, 0-based labels, fc7 rows) of serialized records, through the evaluation crop."""
    spec = {key: tf.io.FixedLenFeature([], dtype) for key, dtype in FIELDS.items()}
    parsed = [tf.io.parse_single_example(r, spec) for r in records]
    crops = tf.stack(
        [
            preprocessing.preprocess_for_eval(preprocessing.decode_image(p["image/encoded"]), IMAGE_SIZE)
            for p in parsed
        ]
    )
    return (
        [p["image/filename"].numpy().decode() for p in parsed],
        [int(p["image/class/label"]) for p in parsed],
        embedding.feature_model(demo.model)(crops, training=False).numpy(),
    )


@pytest.mark.slow
def test_command_names_a_truncated_shard_and_the_images_it_lost_and_writes_the_rest(demo, tmp_path):
    data_dir, shard, kept = truncated_copy(demo, tmp_path)
    output = tmp_path / "features.npz"
    result = run_command(
        [
            "-m",
            "alexnet_tf.features",
            f"--model={demo.keras_file}",
            f"--data_dir={data_dir}",
            "--split=train",
            f"--output={output}",
            "--batch_size=4",
        ]
    )
    # The shard is named with the count it lost; the other 10 images are written; status 1.
    assert result.returncode == 1, result.stderr[-3000:]
    assert (
        f"alexnet_tf.features: {shard}: corrupt or truncated TFRecord shard: 2 of its 3 images lost; skipped"
    ) in result.stderr
    assert "features: 12/12 images (100.0%)" in result.stderr  # the lost images count as read
    assert result.stderr.strip().splitlines()[-1] == (
        f"alexnet_tf.features: wrote the fc7 features of 10 images to {output}; "
        "2 images skipped (named above)"
    )
    assert result.stdout.strip().splitlines()[-1] == str(output)
    saved = np.load(output)
    files, labels, expected = fc7_of_records(demo, kept)
    assert len(kept) == 10 and saved["features"].shape == (10, 4096)
    assert saved["files"].tolist() == files and saved["labels"].tolist() == labels
    np.testing.assert_allclose(saved["features"], expected, rtol=1e-4, atol=1e-4)


def test_predictions_and_a_data_dir_gallery_name_a_truncated_shard_and_count_its_loss(demo, tmp_path, capsys):
    data_dir, shard, kept = truncated_copy(demo, tmp_path)
    lost = [(shard, "corrupt or truncated TFRecord shard: 2 of its 3 images lost")]
    output = str(tmp_path / "predictions.png")
    config = flag_values(
        model=demo.keras_file, data_dir=data_dir, split="train", predictions=True, output=output
    )
    assert features.run([], config, demo.loaded) == (output, lost)
    err = capsys.readouterr().err
    assert "predictions: 12/12 images (100.0%)" in err
    assert f"wrote the top-5 predictions of 10 images to {output}; 2 images skipped (named above)" in err
    assert read_png(output).shape[1] == 2 * figures.MARGIN + 4 * (128 + 2 * figures.PAD) - 2 * figures.PAD

    query = os.path.join(demo.val, "ILSVRC2012_val_00000001.JPEG")
    output = str(tmp_path / "neighbours.png")
    config = flag_values(
        model=demo.keras_file,
        neighbours=[query],
        gallery=data_dir,
        split="train",
        output=output,
        num_neighbours=2,
    )
    assert features.run([], config, demo.loaded) == (output, lost)
    err = capsys.readouterr().err
    assert "features: 12/12 images (100.0%)" in err
    assert f"wrote the nearest of 10 gallery images to 1 query to {output}; 2 images skipped" in err


def test_a_missing_shard_and_a_record_that_is_no_example_are_named_and_counted(demo, tmp_path, capsys):
    data_dir = shutil.copytree(demo.data_dir, tmp_path / "data")
    os.remove(data_dir / "train-00002-of-00004")  # manifest.json lists it with 3 records
    first = str(data_dir / "train-00000-of-00004")
    records = [r.numpy() for r in tf.data.TFRecordDataset(first)]
    with tf.io.TFRecordWriter(first) as writer:
        for record in (records[0], b"\x01 no Example", records[2]):
            writer.write(record)
    output = str(tmp_path / "features.npz")
    written, failures = features.run(
        [],
        flag_values(model=demo.keras_file, data_dir=str(data_dir), split="train", output=output),
        demo.loaded,
    )
    assert written == output
    assert [name for name, _ in failures] == [f"{first} record 1", str(data_dir / "train-00002-of-00004")]
    assert failures[0][1].startswith("not an Example of the ImageNet schema (")
    assert failures[1][1] == "shard listed in manifest.json but missing: 3 of its 3 images lost"
    err = capsys.readouterr().err
    assert "features: 12/12 images (100.0%)" in err
    assert "wrote the fc7 features of 8 images" in err and "4 images skipped (named above)" in err
    assert np.load(output)["features"].shape == (8, 4096)


@pytest.mark.parametrize(
    "max_images, written, reason",
    [
        (None, 10, "the records after its first 1 are lost"),  # the split's size tells: 2 images
        (11, 10, "the records after its first 1 are lost (1 of the 11 images --max_images asks for)"),
        (4, 4, None),  # the damage lies past the 4 images asked for: nothing is lost
    ],
)
def test_a_truncated_shard_without_counts_is_counted_against_what_max_images_asks_for(
    demo, tmp_path, max_images, written, reason
):
    data_dir, shard, _ = truncated_copy(demo, tmp_path)
    manifest_path = os.path.join(data_dir, "manifest.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    del manifest["splits"]["train"]["shards"]  # only the split's size: no shard's own count
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    source = image_sources.data_dir_source(data_dir, "train", max_images=max_images)
    assert len(list(source.entries(record=True))) == written
    if reason is None:
        assert source.failures == [] and source.skipped() == (0, 0)
        return
    expected = reason if max_images else reason.replace("the records after", "2 images after")
    assert source.failures == [(shard, f"corrupt or truncated TFRecord shard: {expected}")]
    assert source.skipped() == ((max_images or 12) - 10, 0)


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0", "-1"])
def test_command_refuses_a_max_images_below_1_in_one_line(demo, tmp_path, value):
    result = run_command(
        [
            "-m",
            "alexnet_tf.features",
            f"--model={demo.keras_file}",
            f"--output={tmp_path / 'f.npz'}",
            f"--max_images={value}",
            demo.val,
        ]
    )
    assert result.returncode == 2 and result.stdout == ""
    # TensorFlow's C++ start-up lines may come first; the command's own output is one line.
    ours = [
        line for line in result.stderr.strip().splitlines() if "alexnet_tf" in line or "Traceback" in line
    ]
    assert ours == [
        f"alexnet_tf.features: error: --max_images={value}: pass a number of at least 1; "
        "leave it out to read every image"
    ]


@pytest.mark.slow
def test_command_reads_webp_names_each_file_it_skips_and_counts_it_as_read(demo, tmp_path):
    from PIL import Image

    folder = shutil.copytree(demo.val, tmp_path / "photos")
    jpegs = sorted(str(p) for p in folder.iterdir())
    webp = folder / "b.webp"
    Image.open(jpegs[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(webp, format="WEBP")
    (folder / "notes.txt").write_text("not a picture\n")
    (folder / "zz_broken.jpg").write_bytes(
        b"\xff\xd8\xff\xe0 cut short"
    )  # last: the progress must still end at 9/9
    output = tmp_path / "features.npz"
    result = run_command(
        ["-m", "alexnet_tf.features", f"--model={demo.keras_file}", f"--output={output}", str(folder)]
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert (
        f"alexnet_tf.features: {folder / 'notes.txt'}: not an image: unrecognised content starting "
        f"{b'not a pi'!r}; skipped"
    ) in result.stderr
    assert (
        f"alexnet_tf.features: {folder / 'zz_broken.jpg'}: corrupt JPEG: no readable frame header; skipped"
        in (result.stderr)
    )
    assert "features: 9/9 images (100.0%)" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"alexnet_tf.features: wrote the fc7 features of 7 images to {output}; 2 images skipped (named above)"
    )
    saved = np.load(output)
    assert saved["files"].tolist() == [*jpegs, str(webp)]
    crop = preprocessing.preprocess_for_eval(preprocessing.decode_image(webp.read_bytes()), IMAGE_SIZE)
    expected = embedding.feature_model(demo.model)(crop[None], training=False).numpy()
    np.testing.assert_allclose(saved["features"][-1:], expected, rtol=1e-4, atol=1e-4)


def test_gradcam_picture_puts_each_image_beside_its_map_and_marks_the_explained_class(demo, tmp_path, capsys):
    output = str(tmp_path / "gradcam.png")
    config = flag_values(
        model=demo.keras_file,
        data_dir=demo.data_dir,
        gradcam=True,
        class_index=1,
        max_images=4,
        output=output,
    )
    assert features.run([], config, demo.loaded) == (output, [])
    err = capsys.readouterr().err
    assert (
        "grad-cam: 4/4 images (100.0%)" in err and f"wrote the conv5 Grad-CAM of 4 images to {output}" in err
    )
    # No labels.txt beside demo.keras_file: the bars take the data's names, and a line says so.
    assert (
        "alexnet_tf.features: no --labels and no labels.txt beside the model: its 3 classes are named "
        "after the data's labels, in their order; pass --labels=FILE if the model's classes differ"
    ) in err.splitlines()
    picture = read_png(output)
    layout = figures.gradcam_layout(4, 128, bars=3)  # 3 classes: 3 bars each
    assert picture.shape == (layout.size(4)[1], layout.size(4)[0], 3) and layout.columns == 2
    # The maps again, from the crops evaluation reads and explain.grad_cam: each overlay in the
    # picture is its image (the cell to its left) under that map.
    dataset = pipelines.evaluation_dataset(
        os.path.join(demo.data_dir, "validation-*"), 4, pixels=PixelSettings(image_size=IMAGE_SIZE)
    )
    crops, _ = next(iter(dataset))
    heatmaps, classes, _ = explain.grad_cam(demo.model, crops.numpy(), class_index=1)
    assert heatmaps.shape == (4, 5, 5) and heatmaps.max() == 1.0  # conv5 of a 95-px crop
    assert classes.tolist() == [1, 1, 1, 1]
    for i in range(4):
        x, y = layout.origin(i)
        image = picture[y : y + 128, x : x + 128]
        overlaid = picture[y : y + 128, x + 128 + figures.PAD : x + 256 + figures.PAD]
        expected = explain.overlay(image[None], heatmaps[i : i + 1])[0]
        assert np.abs(overlaid.astype(int) - expected).max() <= 1, i
        bars = picture[y + 128 : y + layout.item_height, x : x + layout.item_width]
        assert np.all(bars == figures.EXPLAINED_BAR, axis=-1).any(), i  # class 1's bar, in orange


def test_class_names_say_where_they_come_from_and_refuse_a_labels_file_of_another_length(
    demo, tmp_path, capsys
):
    bare = models.KerasModel(demo.model, labels_dir=str(tmp_path))  # no labels.txt there
    assert bare.class_names(3, fallback=("a", "b", "c")) == ["a", "b", "c"]
    assert bare.class_names(3, fallback=("a", "b")) == ["0", "1", "2"]
    assert capsys.readouterr().err.splitlines() == [
        "alexnet_tf.features: no --labels and no labels.txt beside the model: its 3 classes are named "
        "after the data's labels, in their order; pass --labels=FILE if the model's classes differ",
        "alexnet_tf.features: no --labels and no labels.txt beside the model: its 3 classes are shown "
        "by number (the data names 2); pass --labels=FILE to name them",
    ]
    (tmp_path / "labels.txt").write_text("x\ny\nz\n")
    assert bare.class_names(3, fallback=("a", "b", "c")) == ["x", "y", "z"]
    assert capsys.readouterr().err == ""
    short = tmp_path / "two.txt"
    short.write_text("x\ny\n")
    with pytest.raises(image_sources.UsageError) as raised:
        models.KerasModel(demo.model, labels_dir=None, labels_path=str(short)).class_names(3)
    assert str(raised.value) == (
        f"{short} lists 2 classes but the model has 3; pass --labels=FILE with 3 names, one per line"
    )


def test_gradcam_refuses_a_dense_layer_a_missing_one_and_a_class_the_model_lacks(demo, tmp_path):
    from tiny_models import small_classifier

    files = [os.path.join(demo.val, name) for name in sorted(os.listdir(demo.val))[:1]]
    output = str(tmp_path / "gradcam.png")

    def refused(match, model=demo.loaded, **overrides):
        config = flag_values(model=demo.keras_file, gradcam=True, output=output, **overrides)
        with pytest.raises(features.UsageError, match=match):
            features.run(files, config, model)

    convolutions = "conv1, conv2, conv3, conv4, conv5"
    refused(f"^--layer=fc7: layer 'fc7' is a Dense, not a convolution: .*: {convolutions}$", layer="fc7")
    refused(f"^--layer=conv6: the model has no layer 'conv6'; .*: {convolutions}$", layer="conv6")
    other = models.KerasModel(small_classifier(num_classes=3, image_size=IMAGE_SIZE), labels_dir=None)
    refused("^--layer=conv5: the model has no layer 'conv5'; .* convolution layers: conv2d", model=other)
    refused(r"^--class_index=3: the model has 3 classes \(0 to 2\)", class_index=3)
    refused("^--class_index=-1: pass a class number of at least 0", class_index=-1)
    with pytest.raises(features.UsageError, match="^--class_index picks the class --gradcam explains"):
        features.run(files, flag_values(model=demo.keras_file, class_index=0, output="f.npz"), demo.loaded)
    with pytest.raises(
        features.UsageError, match="^--neighbours, --predictions and --gradcam draw different"
    ):
        config = flag_values(model=demo.keras_file, gradcam=True, predictions=True, output=output)
        features.run(files, config, demo.loaded)
    assert not os.path.exists(output)


@pytest.mark.slow
def test_command_draws_gradcam_of_image_files_and_refuses_a_dense_layer_in_one_line(demo, tmp_path):
    output = tmp_path / "gradcam.png"
    command = ["-m", "alexnet_tf.features", "--gradcam", f"--output={output}"]
    result = run_command([*command, f"--model={demo.keras_file}", "--max_images=3", demo.val])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(output)
    # Image files name no classes and the model has no labels.txt: the bars are numbered, and say why.
    assert (
        "alexnet_tf.features: no --labels and no labels.txt beside the model: its 3 classes are shown "
        "by number; pass --labels=FILE to name them"
    ) in result.stderr.splitlines()
    labels = tmp_path / "names.txt"
    labels.write_text("cat\ndog\nfish\n")
    named = ["-m", "alexnet_tf.features", "--gradcam", f"--output={tmp_path / 'named.png'}"]
    result = run_command(
        [*named, f"--model={demo.keras_file}", f"--labels={labels}", "--max_images=1", demo.val]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no --labels" not in result.stderr
    width, height = figures.gradcam_layout(3, 128, bars=3).size(3)
    assert read_png(output).shape == (height, width, 3)

    # A small model (it loads in a blink) whose fc7 is a Dense layer and whose convolution is conv2d.
    from tiny_models import small_classifier

    small, model = str(tmp_path / "small.keras"), small_classifier(num_classes=3, image_size=IMAGE_SIZE)
    model.save(small)
    (convolution,) = explain.convolution_layers(model)  # conv2d, or conv2d_N when Keras made others
    result = run_command([*command, f"--model={small}", "--layer=fc7", demo.val])
    assert result.returncode == 2 and result.stdout == ""
    ours = [
        line for line in result.stderr.strip().splitlines() if "alexnet_tf" in line or "Traceback" in line
    ]
    assert ours == [
        "alexnet_tf.features: error: --layer=fc7: layer 'fc7' is a Dense, not a convolution: Grad-CAM "
        f"needs a layer's spatial maps; pass one of the model's convolution layers: {convolution}"
    ]
    assert not output.exists() or output.stat().st_size > 0
