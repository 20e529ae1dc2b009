"""Tests of alexnet_tf.train: the real entry point end to end, resume, preemption, bad input.

One module-scoped training run (8 steps at batch 4 on a 16-image dataset) serves every
check of its outputs; the resume test repeats the same command and compares with it.
"""

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

from absl import flags
from card_tables import assert_validation_row, card_lines, card_rows
from conftest import REPO
import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
import tensorflow as tf
from tiny_dataset import write_jpeg, write_tiny_dataset

from alexnet_tf import cli, train
from alexnet_tf.config import ConfigError, TrainConfig, config_json, demo_config
from alexnet_tf.training import summaries
from alexnet_tf.training.inputs import data_source
from alexnet_tf.training.schedules import AlexNetSchedule, PlateauState

# 16 training images at batch 4: 4 steps per epoch, 8 steps; the step schedule divides the
# rate by 10 after epoch 1, so the final rate tells whether a resumed run lost its place.
TRAIN_FLAGS = [
    "--batch_size=4",
    "--epochs=2",
    "--lr_schedule=step",
    "--lr_decay_epochs=1",
    "--log_every_steps=1",
    "--keep_checkpoints=2",
    "--seed=0",
]
FINAL_LR = 0.01 * 4 / 128 * 0.1
TIMEOUT = 300


def train_command(data_dir, model_dir, *extra):
    return [
        sys.executable,
        "-m",
        "alexnet_tf.train",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        *TRAIN_FLAGS,
        *extra,
    ]


def run_command(command, timeout=TIMEOUT):
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def checkpoint_step(model_dir):
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else None


def read_results(model_dir):
    with open(os.path.join(model_dir, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("run") / "model")
    result = run_command(train_command(dataset, model_dir, "--ten_crop_eval", "--histograms"))
    assert result.returncode == 0, result.stderr[-4000:]
    return model_dir, result


# ----------------------------------------------------------------------------- in-process units


def test_flags_default_to_the_paper_recipe_and_demo_keeps_given_flags():
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    flag_values(["train", "--data_dir=/d", "--model_dir=/m"])
    config = train.config_from_flags(flag_values)
    assert config == TrainConfig(data_dir="/d", model_dir="/m")
    assert (config.batch_size, config.momentum, config.weight_decay, config.learning_rate) == (
        128,
        0.9,
        5e-4,
        0.01,
    )
    assert (config.lr_schedule, config.max_lr_drops, config.epochs) == ("paper", 3, 90)
    assert not config.decoupled_weight_decay

    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    flag_values(["train", "--demo", "--epochs=2", "--lr_decay_epochs=1,2", "--profile_steps=3,4"])
    config = train.config_from_flags(flag_values)
    assert config == demo_config(epochs=2, lr_decay_epochs=(1.0, 2.0), profile_steps=(3, 4))


def test_the_variant_choices_are_the_models():
    from alexnet_tf import config, model

    assert set(config.VARIANTS) == set(model.VARIANTS)


def test_learning_rate_scales_linearly_with_the_global_batch():
    assert TrainConfig(batch_size=256).scaled_learning_rate == pytest.approx(0.02)
    assert TrainConfig(batch_size=32, learning_rate=0.04).scaled_learning_rate == pytest.approx(0.01)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(data_dir=""), "--data_dir is required"),
        (dict(model_dir=""), "--model_dir is required"),
        (dict(variant="vgg"), "variant='vgg'"),
        (dict(batch_size=0), "batch_size must be >= 1"),
        (dict(image_size=200), "the paper variant needs image_size >= 224"),
        (
            dict(variant="one_weird_trick", image_size=94),
            "the one_weird_trick variant needs image_size >= 95",
        ),
        (dict(profile_steps=(5, 2)), "profile_steps"),
    ],
)
def test_config_validation_names_the_bad_field(changes, message):
    config = TrainConfig(**{**dict(data_dir="/d", model_dir="/m"), **changes})
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.validate()
        data_source(config)  # the data source's own checks: its name, data dir, --data_service


def test_plateau_divides_by_ten_after_patience_at_most_max_drops_times():
    state = PlateauState(patience=2, max_drops=3)
    schedule = AlexNetSchedule("paper", 0.01, total_steps=100, plateau=state)
    drops = [state.update(top1) for top1 in (0.1, 0.2, 0.2, 0.15, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3)]
    assert drops == [False, False, False, True, False, False, True, False, True, False, False]
    assert int(state.drops.numpy()) == 3
    assert float(schedule(0)) == pytest.approx(0.01 * 0.1**3)


def test_step_and_cosine_schedules_with_warmup():
    step = AlexNetSchedule("step", 0.1, total_steps=100, boundaries=(30, 60))
    assert [float(step(s)) for s in (0, 29, 30, 60, 99)] == pytest.approx([0.1, 0.1, 0.01, 0.001, 0.001])
    cosine = AlexNetSchedule("cosine", 0.1, total_steps=110, warmup_steps=10)
    assert float(cosine(0)) == pytest.approx(0.01)  # the first step trains at 1/warmup
    assert float(cosine(9)) == pytest.approx(0.1)
    assert float(cosine(60)) == pytest.approx(0.05)
    assert float(cosine(110)) == pytest.approx(0.0, abs=1e-9)


def test_a_train_step_of_a_zero_weight_model_counts_one_top1_hit_not_all():
    from alexnet_tf.training import step as steps

    config = TrainConfig(
        batch_size=4,
        variant="one_weird_trick",
        image_size=128,
        precision="float32",
        dropout_rate=0.0,
        lr_schedule="step",
    )
    strategy = tf.distribute.get_strategy()
    state = steps.build_state(config, strategy, 5, steps_per_epoch=1, total_steps=1, loss_scaling=False)
    for variable in state.model.trainable_variables:
        variable.assign(tf.zeros_like(variable))  # every logit 0: five classes tied
    train_fn = steps.make_train_function(strategy, state, 4, jit_compile=False, loss_scaling=False)
    batch = (tf.ones([4, 128, 128, 3]), tf.constant([0, 1, 2, 4]))
    sums = train_fn(iter(tf.data.Dataset.from_tensors(batch).repeat()), tf.constant(1), tf.constant(0.0))
    ce, _, top1, top5, count, stop = sums.numpy()
    assert ce == pytest.approx(4 * np.log(5))
    assert (top1, top5, count, stop) == (1.0, 4.0, 4.0, 0.0)  # in_top_k said 4 top-1 hits of 4


# The paper variant's conv1 as Figure 3 draws it: two towers of 48 filters, 3 rows of 16 each, every
# 11x11 filter scaled 4x (44 px) with 2 px between filters and 10 px between the towers.
FILTERS_WIDTH, FILTERS_HEIGHT = 16 * 44 + 15 * 2, 2 * (3 * 44 + 2 * 2) + 10


def test_filter_grid_draws_two_towers_of_48_filters_each_stretched_to_0_1_and_scaled_up():
    kernel = np.random.default_rng(0).normal(size=(11, 11, 3, 96)).astype(np.float32)
    kernel[..., 5] *= 100.0
    grid = summaries.filter_grid(kernel, towers=2)
    assert grid.shape == (1, FILTERS_HEIGHT, FILTERS_WIDTH, 3)
    assert grid.min() == 0.0 and grid.max() == 1.0
    tile = grid[0, 0:44, 5 * 46 : 5 * 46 + 44]  # filter 5 is normalised on its own
    assert tile.min() == 0.0 and tile.max() == 1.0
    # Nearest-neighbour scaling: each weight is a 4x4 block of one colour.
    np.testing.assert_array_equal(tile, np.repeat(np.repeat(tile[::4, ::4], 4, axis=0), 4, axis=1))
    stretched = (kernel[..., 5] - kernel[..., 5].min()) / np.ptp(kernel[..., 5])
    np.testing.assert_allclose(tile[::4, ::4], stretched, atol=1e-6)
    # Filter 48, the first of the second tower, opens the lower block.
    second = grid[0, 3 * 46 - 2 + 10 :, :44]
    expected = (kernel[..., 48] - kernel[..., 48].min()) / np.ptp(kernel[..., 48])
    np.testing.assert_allclose(second[:44:4, ::4], expected, atol=1e-6)
    assert np.all(grid[0, 3 * 46 - 2 : 3 * 46 - 2 + 10] == 1.0)  # the white gap between the towers


def test_conv1_filter_image_follows_the_towers_and_shows_bgr_kernels_in_rgb():
    from alexnet_tf.model import build_alexnet

    one_block = build_alexnet(
        num_classes=2,
        variant="one_weird_trick",
        input_shape=(95, 95, 3),
        weight_decay=0,
        kernel_initializer="zeros",
    )
    image = summaries.conv1_filter_image(one_block)
    assert image.shape == (1, 4 * 44 + 3 * 2, FILTERS_WIDTH, 3)  # 64 filters, one block of 4 rows
    caffe = build_alexnet(
        num_classes=2,
        variant="caffe",
        weight_decay=0,
        input_conversion={"channel_order": "bgr"},
        kernel_initializer="zeros",
    )
    kernel = np.zeros((11, 11, 3, 96), np.float32)
    kernel[:, :, 0, 0] = 1.0  # filter 0 looks at the B of Caffe's BGR input: blue in RGB
    caffe.get_layer("conv1").weights[0].assign(kernel)
    image = summaries.conv1_filter_image(caffe)
    assert image.shape == (1, FILTERS_HEIGHT, FILTERS_WIDTH, 3)
    assert image[0, 20, 20].tolist() == [0.0, 0.0, 1.0]


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_training_run_writes_checkpoint_results_and_export(trained, dataset):
    model_dir, result = trained
    results = read_results(model_dir)
    assert results["global_step"] == results["optimizer_iterations"] == 8
    assert results["epochs_completed"] == 2
    assert results["learning_rate"] == pytest.approx(FINAL_LR)
    assert 0.0 <= results["validation"]["top1"] <= 1.0 and results["validation"]["count"] == 8
    assert results["validation_ten_crop"]["count"] == 8
    assert checkpoint_step(model_dir) == 8
    with open(os.path.join(model_dir, "checkpoints", "model_spec.json")) as f:
        assert json.load(f) == {"variant": "paper", "num_classes": 5, "image_size": 224}
    # The run's whole config, as its flags set it: every TrainConfig field, the rest defaults.
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    assert set(config) == {field.name for field in dataclasses.fields(TrainConfig)}
    assert config == {
        **config_json(TrainConfig()),
        "data_dir": dataset,
        "model_dir": model_dir,
        "batch_size": 4,
        "epochs": 2,
        "lr_schedule": "step",
        "lr_decay_epochs": [1.0],
        "log_every_steps": 1,
        "keep_checkpoints": 2,
        "seed": 0,
        "ten_crop_eval": True,
        "histograms": True,
    }
    assert results["export_path"] == os.path.join(model_dir, "export", "1")
    assert os.path.exists(os.path.join(results["export_path"], "saved_model.pb"))
    with open(os.path.join(results["export_path"], "assets", "labels.txt")) as f:
        # "synset name", from the data dir's labels.txt
        assert f.read().splitlines() == [f"n{9000000 + c:08d} class {c}" for c in range(5)]
    assert f"tensorboard --logdir {model_dir}" in result.stdout
    assert "Traceback" not in result.stderr


def test_the_model_card_shows_results_json_the_model_and_the_manifest(trained, dataset):
    """MODEL_CARD.md in the model dir and in the SavedModel: results.json's figures, exactly."""
    from alexnet_tf.model import build_alexnet

    model_dir, _ = trained
    results = read_results(model_dir)
    with open(os.path.join(model_dir, "MODEL_CARD.md"), encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(results["export_path"], "MODEL_CARD.md"), encoding="utf-8") as f:
        exported = f.read()
    for card in (text, exported):
        rows, lines = card_rows(card), card_lines(card)
        assert_validation_row(rows["final, centre crop"], results["validation"])
        assert_validation_row(rows["final, ten crops"], results["validation_ten_crop"])
        assert rows["final, centre crop"][3] == "step 8, epoch 2"
        model = build_alexnet(num_classes=5, kernel_initializer="zeros")
        assert lines["parameters"] == f"{model.count_params():,}" and lines["variant"] == "`paper`"
        with open(os.path.join(dataset, "manifest.json")) as f:
            assert lines["manifest fingerprint"] == f"`{json.load(f)['fingerprint']}`"
        assert (
            lines["training throughput"]
            == f"{results['images_per_sec']:.1f} images/s (the run's last logging interval)"
        )
        assert rows["`--lr_schedule`"] == ["step"] and rows["`--batch_size`"] == ["4"]
    assert f"Model card:       {os.path.join(model_dir, 'MODEL_CARD.md')}" in trained[1].stdout
    # Each epoch's validation, the last one results.json's.
    with open(os.path.join(model_dir, "validation_history.json")) as f:
        history = json.load(f)
    assert [(e["epoch"], e["step"]) for e in history] == [(1, 4), (2, 8)]
    assert history[-1]["validation"] == {
        k: results["validation"][k] for k in ("loss", "top1", "top5", "count")
    }


def _tensor_events(log_dir):
    accumulator = event_accumulator.EventAccumulator(log_dir, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    events = {}
    for tag in accumulator.Tags()["tensors"]:
        plugin = accumulator.SummaryMetadata(tag).plugin_data.plugin_name
        events[tag] = (plugin, accumulator.Tensors(tag))
    return events


@pytest.mark.slow
def test_tensorboard_events_hold_scalars_input_grid_and_conv1_filters(trained):
    model_dir, _ = trained
    train_events = _tensor_events(os.path.join(model_dir, "train"))
    for tag in ("loss", "top1", "top5", "learning_rate", "images_per_sec"):
        assert train_events[tag][0] == "scalars", tag
    assert [e.step for e in train_events["loss"][1]] == list(range(1, 9))
    rates = [float(tf.make_ndarray(e.tensor_proto)) for e in train_events["learning_rate"][1]]
    assert rates[-1] == pytest.approx(FINAL_LR)

    plugin, inputs = train_events["augmented_inputs"]
    assert plugin == "images" and [e.step for e in inputs] == [0]
    width, height = (int(x) for x in tf.make_ndarray(inputs[0].tensor_proto)[:2])
    assert (width, height) == (2 * 225 - 1, 2 * 225 - 1)  # 4 inputs of 224 px in a 2 x 2 grid
    png = tf.io.decode_png(tf.make_ndarray(inputs[0].tensor_proto)[2])
    assert png.shape == (height, width, 3) and int(tf.reduce_max(png)) > 0

    plugin, filters = train_events["conv1_filters"]
    assert plugin == "images" and [e.step for e in filters] == [0, 4, 8]  # start and every epoch
    width, height = (int(x) for x in tf.make_ndarray(filters[-1].tensor_proto)[:2])
    assert (width, height) == (FILTERS_WIDTH, FILTERS_HEIGHT)  # 2 towers of 48 filters of 44 x 44 px
    assert train_events["conv1/kernel"][0] == "histograms"

    validation_events = _tensor_events(os.path.join(model_dir, "validation"))
    for tag in ("loss", "top1", "top5", "images_per_sec"):
        assert [e.step for e in validation_events[tag][1]] == [4, 8], tag
    assert "ten_crop_top1" in validation_events

    # 4 validation images (--gradcam_images' default) over their Grad-CAM maps, every epoch.
    plugin, gradcam = validation_events["gradcam"]
    assert plugin == "images" and [e.step for e in gradcam] == [4, 8]
    width, height, encoded = tf.make_ndarray(gradcam[-1].tensor_proto)
    assert (int(width), int(height)) == (4 * 225 - 1, 2 * 225 - 1)  # images above, overlays below
    grid = tf.io.decode_png(encoded).numpy().astype(int)
    images, overlays = grid[:224], grid[225:]
    assert images.std() > 0 and np.abs(overlays - images).mean() > 10  # the colour map is there


@pytest.mark.slow
def test_gradcam_image_is_that_of_the_model_dir_on_the_first_validation_crops(trained, dataset):
    """The last `gradcam` image, again from the model dir's checkpoint (load_model) and the crops."""
    from alexnet_tf.data import pipelines
    from alexnet_tf.weights import checkpointing

    model_dir, _ = trained
    (*_, last) = _tensor_events(os.path.join(model_dir, "validation"))["gradcam"][1]
    written = tf.io.decode_png(tf.make_ndarray(last.tensor_proto)[2]).numpy().astype(int)
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(read_results(model_dir)["precision"])  # the run's
    try:
        model, _ = checkpointing.load_model(model_dir)  # the step-8 checkpoint, the last epoch's end
    finally:
        keras.mixed_precision.set_global_policy(policy)
    crops, _ = next(iter(pipelines.evaluation_dataset(os.path.join(dataset, "validation-*"), 4)))
    grid, classes = summaries.gradcam_image(model, crops.numpy())
    assert classes.tolist() == np.argmax(model(crops, training=False), axis=-1).tolist()
    assert np.abs(written - np.round(grid[0] * 255)).max() <= 2


@pytest.mark.slow
def test_projector_holds_fc7_embeddings_labels_and_sprite_of_the_validation_images(trained):
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    model_dir, _ = trained
    run_dir = os.path.join(model_dir, "validation")
    config = projector.ProjectorConfig()
    with open(os.path.join(run_dir, "projector_config.pbtxt")) as f:
        text_format.Parse(f.read(), config)
    (entry,) = config.embeddings
    assert entry.tensor_name == "fc7/.ATTRIBUTES/VARIABLE_VALUE"
    embeddings = tf.train.load_checkpoint(tf.train.latest_checkpoint(run_dir)).get_tensor(entry.tensor_name)
    assert embeddings.shape == (8, 4096) and embeddings.dtype == np.float32  # all 8 validation images
    with open(os.path.join(run_dir, entry.metadata_path)) as f:
        lines = f.read().splitlines()
    assert lines[0] == "label\tpredicted" and len(lines) == 1 + 8
    assert all(set(line.split("\t")) <= {f"class {c}" for c in range(5)} for line in lines[1:])
    with open(os.path.join(run_dir, entry.sprite.image_path), "rb") as f:
        sprite = tf.io.decode_png(f.read()).numpy()
    assert list(entry.sprite.single_image_dim) == [48, 48]
    assert sprite.shape == (3 * 48, 3 * 48, 3)  # ceil(sqrt(8)) = 3 thumbnails per row, 3 rows
    assert sprite[:48, :48].std() > 0 and np.all(sprite[2 * 48 :, 2 * 48 :] == 255)  # 8 drawn, the 9th blank


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_tensorboard_serves_the_scalar_tags(trained):
    model_dir, _ = trained
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            f"--logdir={model_dir}",
            "--host=127.0.0.1",
            f"--port={port}",
            "--load_fast=false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, tags = time.time() + 90, {}
        while time.time() < deadline and not ({"train", "validation"} <= set(tags)):
            time.sleep(1.0)
            assert server.poll() is None, server.stderr.read()[-2000:]
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5
                ) as r:
                    tags = json.load(r)
            except OSError:
                continue
        assert {"loss", "top1", "top5", "learning_rate", "images_per_sec"} <= set(tags["train"])
        assert {"loss", "top1", "top5", "images_per_sec"} <= set(tags["validation"])
        projector = f"http://127.0.0.1:{port}/data/plugin/projector"
        with urllib.request.urlopen(f"{projector}/runs", timeout=30) as r:
            assert json.load(r) == ["validation"]
        name = "fc7/.ATTRIBUTES/VARIABLE_VALUE"
        with urllib.request.urlopen(f"{projector}/tensor?run=validation&name={name}", timeout=30) as r:
            assert len(r.read()) == 8 * 4096 * 4  # the embeddings as float32
        with urllib.request.urlopen(f"{projector}/sprite_image?run=validation&name={name}", timeout=30) as r:
            assert tf.io.decode_png(r.read()).shape == (144, 144, 3)
    finally:
        server.kill()
        server.wait(timeout=30)


@pytest.mark.slow
def test_saved_model_classifies_a_real_jpeg_in_a_fresh_process(trained, tmp_path):
    model_dir, _ = trained
    jpeg_path = tmp_path / "photo.jpg"
    write_jpeg(jpeg_path, 333, 500)
    script = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({os.path.join(model_dir, "export", "1")!r})
        image_bytes = tf.io.read_file({str(jpeg_path)!r})
        out = loaded.signatures["serving_default"](image_bytes=tf.stack([image_bytes, image_bytes]))
        features = loaded.signatures["features"](image_bytes=tf.stack([image_bytes]))["features"]
        pixels = tf.io.decode_jpeg(image_bytes)[tf.newaxis]
        by_pixels = loaded.predict_images(pixels)  # uint8: the very same preprocessing
        print(json.dumps({{
            "shape": out["probabilities"].shape.as_list(),
            "sums": out["probabilities"].numpy().sum(axis=1).tolist(),
            "labels": out["top_k_labels"].numpy()[0].astype(str).tolist(),
            "classes": out["top_k_classes"].numpy()[0].tolist(),
            "same_as_pixels": float(np.abs(out["probabilities"][:1] - by_pixels["probabilities"]).max()),
            "features": [features.shape.as_list(), features.dtype.name, float(tf.reduce_min(features))],
        }}))
    """)
    result = run_command([sys.executable, "-c", script], timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["shape"] == [2, 5]
    assert out["sums"] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert out["labels"] == [f"n{9000000 + c:08d} class {c}" for c in out["classes"]]
    # Batch 2 and batch 1 run different oneDNN kernel blockings: float rounding only (a
    # preprocessing difference moves probabilities by 1e-3 and more).
    assert out["same_as_pixels"] < 1e-5
    assert out["features"][:2] == [[1, 4096], "float32"] and out["features"][2] >= 0.0  # fc7 after its ReLU


# ----------------------------------------------------------------------------- resume


def _wait_for(predicate, process, what, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            raise AssertionError(f"process exited ({process.returncode}) before {what}")
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"timed out waiting for {what}")


# The cheapest whole AlexNet, checkpointed at every step, with epochs to spare: a run that
# is still training when the test interrupts it.
LONG_RUN_FLAGS = ["--variant=one_weird_trick", "--image_size=95", "--checkpoint_every_steps=1", "--noexport"]


def _ours(stderr):
    return [line for line in stderr.splitlines() if line.startswith("alexnet_tf.train:")]


@pytest.mark.slow
def test_ctrl_c_stops_with_status_130_and_a_resume_logs_the_flags_that_differ_from_config_json(
    dataset, tmp_path
):
    model_dir = str(tmp_path / "model")
    command = train_command(dataset, model_dir, *LONG_RUN_FLAGS, "--epochs=100")
    with open(tmp_path / "stderr.txt", "w+") as stderr:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
            # As a terminal's foreground job: a shell's background job, and so a test run started
            # with `&`, inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            _wait_for(lambda: checkpoint_step(model_dir), process, "the first checkpoint")
            process.send_signal(signal.SIGINT)  # what Ctrl-C sends
            process.wait(timeout=120)
        finally:
            process.kill()
        stderr.seek(0)
        output = stderr.read()
    assert process.returncode == cli.ExitStatus.INTERRUPTED == 130, output[-3000:]
    # Ctrl-C writes no checkpoint: the line names the newest one, which a re-run resumes from.
    assert _ours(output) == [
        "alexnet_tf.train: interrupted; re-run the same command to resume from its newest checkpoint, "
        f"ckpt-{checkpoint_step(model_dir)} (steps after it are trained again)"
    ]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    with open(os.path.join(model_dir, "config.json"), "rb") as f:
        first = f.read()
    assert json.loads(first)["epochs"] == 100 and json.loads(first)["train_steps"] is None

    # The same command with flags changed resumes, says what changed, and keeps config.json.
    step = checkpoint_step(model_dir)
    resumed = run_command([*command, f"--train_steps={step + 1}", "--gradcam_images=0"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {os.path.join(model_dir, 'checkpoints')}" in resumed.stderr
    lines = [line for line in resumed.stderr.splitlines() if "differ from the first start's" in line]
    assert len(lines) == 1, resumed.stderr[-3000:]
    assert lines[0].endswith(
        f"({os.path.join(model_dir, 'config.json')}): --train_steps={step + 1} (config.json: None), "
        "--gradcam_images=0 (config.json: 4)"
    )
    with open(os.path.join(model_dir, "config.json"), "rb") as f:
        assert f.read() == first
    assert read_results(model_dir)["global_step"] == step + 1


@pytest.mark.slow
def test_a_truncated_shard_ends_train_with_status_2_and_one_line(dataset, tmp_path):
    """As in evaluate (tests/test_evaluate.py): a damaged shard is bad input the user must fix."""
    data_dir = tmp_path / "data"
    shutil.copytree(dataset, data_dir)
    for shard in data_dir.glob("train-*"):
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    result = run_command(train_command(data_dir, tmp_path / "model", *LONG_RUN_FLAGS))
    assert result.returncode == cli.ExitStatus.BAD_INPUT == 2, result.stderr[-3000:]
    ours = _ours(result.stderr)
    assert len(ours) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    expected = "alexnet_tf.train: error: InvalidArgumentError: corrupt or truncated TFRecord shard"
    assert ours[0].startswith(f"{expected} {data_dir}/train-"), ours


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def bad_inputs(dataset, tmp_path):
    """name -> (TrainConfig fields, expected message) of every bad-input case run() rejects."""
    empty = tmp_path / "empty"
    empty.mkdir()
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("no shards here")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    other_model = tmp_path / "other_model"
    (other_model / "checkpoints").mkdir(parents=True)
    (other_model / "checkpoints" / "model_spec.json").write_text(
        json.dumps({"variant": "one_weird_trick", "num_classes": 5, "image_size": 224})
    )
    model_dir = str(tmp_path / "model")
    return {
        "missing data dir": (dict(data_dir=str(tmp_path / "nope"), model_dir=model_dir), "does not exist"),
        "empty data dir": (dict(data_dir=str(empty), model_dir=model_dir), "is empty"),
        "no shards": (
            dict(data_dir=str(unrelated), model_dir=model_dir),
            "no training files match 'train-*'",
        ),
        "no data_dir": (dict(model_dir=model_dir), "--data_dir is required"),
        "num_classes": (dict(data_dir=dataset, model_dir=model_dir, num_classes=7), "--num_classes=7 but"),
        "unwritable model dir": (dict(data_dir=dataset, model_dir=str(a_file / "model")), "is not writable"),
        "other variant": (
            dict(data_dir=dataset, model_dir=str(other_model)),
            "holds checkpoints of another model: variant='one_weird_trick'",
        ),
    }


def test_run_rejects_bad_input_with_a_config_error(bad_inputs):
    for name, (fields, message) in bad_inputs.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            train.run(TrainConfig(batch_size=4, **fields))
        assert not os.path.exists(os.path.join(fields["model_dir"], "checkpoints", "checkpoint")), name


def _cli_flags(fields):
    return [f"--{name}={value}" for name, value in fields.items()]


@pytest.mark.slow
def test_bad_input_gives_one_clear_line_and_a_nonzero_exit(bad_inputs, dataset, tmp_path):
    # The command line maps every ConfigError the same way; three cases prove the mapping,
    # the in-process test above covers every message. Divergence has its own exit status.
    nan_dir = str(tmp_path / "nan")
    cases = {
        name: (_cli_flags(bad_inputs[name][0]), 2, bad_inputs[name][1])
        for name in ("missing data dir", "num_classes", "other variant")
    }
    cases["diverging"] = (
        [
            f"--data_dir={dataset}",
            f"--model_dir={nan_dir}",
            "--learning_rate=1e9",
            "--train_steps=4",
            "--checkpoint_every_steps=1",
            "--precision=float32",
            "--variant=one_weird_trick",  # the cheapest whole AlexNet diverges as well
            "--image_size=95",
        ],
        1,
        "training diverged",
    )
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "alexnet_tf.train", "--batch_size=4", "--train_steps=2", *flag_list],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (flag_list, _, _) in cases.items()
    }
    for name, process in processes.items():
        _, stderr = process.communicate(timeout=TIMEOUT)
        _, returncode, message = cases[name]
        assert process.returncode == returncode, (name, stderr[-3000:])
        ours = [line for line in stderr.splitlines() if line.startswith("alexnet_tf.train:")]
        assert len(ours) == 1 and message in ours[0], (name, ours, stderr[-2000:])
        assert "Traceback" not in stderr, name
    assert "Last good checkpoint" in ours[0]  # the diverging case, last in `cases`
    # Divergence keeps the last good checkpoint, if any, and never writes non-finite weights.
    latest = tf.train.latest_checkpoint(os.path.join(nan_dir, "checkpoints"))
    if latest:
        for name, _ in tf.train.list_variables(latest):
            if name.startswith("model/"):
                assert np.all(np.isfinite(tf.train.load_variable(latest, name))), name


def test_check_precision_refuses_mixed_float16_grouped_convolutions_on_cpu():
    from alexnet_tf.config import ConfigError
    from alexnet_tf.training import devices

    devices.check_precision("mixed_float16", "one_weird_trick")  # no groups: fine on CPU
    devices.check_precision("mixed_bfloat16", "paper")
    if not tf.config.list_physical_devices("GPU"):
        with pytest.raises(ConfigError, match="mixed_float16 needs a GPU for the paper variant"):
            devices.check_precision("mixed_float16", "paper")
