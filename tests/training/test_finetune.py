"""Tests of fine-tuning: `--init_from`, `--trainable`, `--head_lr_multiplier`
(alexnet_tf/training/init_from.py).

The end-to-end test is docs/training.md's "Fine-tune on your own images" at toy size: a model trained on
5 classes, carrying torchvision's input convention as an import by python -m alexnet_tf.import_weights
does, is fine-tuned head-only on 3 other classes through `python -m alexnet_tf.train`; the
first run is SIGKILLed after its first checkpoint and the same command resumes it.
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

from conftest import REPO, run_command
import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
import tensorflow as tf
from tiny_dataset import write_jpeg, write_tiny_dataset

import alexnet_tf
from alexnet_tf import evaluate, model, train
from alexnet_tf.config import ConfigError, TrainConfig
from alexnet_tf.data import pipelines, preprocessing, schema
from alexnet_tf.data.pipelines import PixelSettings
from alexnet_tf.serving import litert
from alexnet_tf.serving.results import top_k
from alexnet_tf.training import step as steps
from alexnet_tf.training.schedules import AlexNetSchedule
from alexnet_tf.weights import torchvision_state
from alexnet_tf.weights.checkpointing import CHECKPOINT_SUBDIR, Checkpointer, check_model_spec, model_weights

SIZE = 95  # one_weird_trick's smallest trainable input: the cheapest whole AlexNet
FROZEN = [f"conv{i}" for i in range(1, 6)] + ["fc6", "fc7"]


def _weights(m):
    return {v.path: v.numpy() for v in m.weights}


def _checkpoint_step(model_dir):
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_SUBDIR))
    return int(latest.rsplit("-", 1)[1]) if latest else None


def _checkpoint_value(prefix, path):
    # checkpointing.model_weights keys the weights by path; the checkpoint escapes "/" as ".S".
    return tf.train.load_variable(prefix, f"model/{path.replace('/', '.S')}/.ATTRIBUTES/VARIABLE_VALUE")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    old = write_tiny_dataset(root / "old", train_records=8, validation_records=4, num_classes=5, seed=0)
    new = write_tiny_dataset(root / "new", train_records=8, validation_records=4, num_classes=3, seed=10)
    return root, old, new


@pytest.fixture(scope="module")
def base(datasets):
    """A .keras model trained for 2 steps on the 5 old classes, with torchvision's input convention."""
    root, old, _ = datasets
    keras.utils.set_random_seed(0)
    source = model.build_alexnet(
        num_classes=5,
        variant="one_weird_trick",
        input_shape=(SIZE, SIZE, 3),
        dropout_rate=0.0,
        input_conversion=torchvision_state.TORCHVISION_INPUT,
    )
    source.compile(
        optimizer=keras.optimizers.SGD(0.001, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    batches = pipelines.evaluation_dataset(
        os.path.join(old, "train-*"), 4, pixels=PixelSettings(image_size=SIZE)
    )
    history = source.fit(batches, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    path = str(root / "base.keras")
    source.save(path)
    return path, source


# ----------------------------------------------------------------------------- in process


def test_head_lr_multiplier_is_the_optimizers_factor_for_fc8():
    config = TrainConfig(head_lr_multiplier=10.0)
    schedule = AlexNetSchedule("step", 0.01, total_steps=1)
    assert steps.build_optimizer(config, schedule, loss_scaling=False).lr_multipliers == {"fc8": 10.0}
    assert steps.build_optimizer(TrainConfig(), schedule, loss_scaling=False).lr_multipliers == {}
    with pytest.raises(ConfigError, match="head_lr_multiplier must be > 0, got 0.0"):
        TrainConfig(data_dir="/d", model_dir="/m", head_lr_multiplier=0.0).validate()
    with pytest.raises(ConfigError, match="trainable='conv'; choose one of all, fc, head"):
        TrainConfig(data_dir="/d", model_dir="/m", trainable="conv").validate()


def test_resuming_with_other_trainable_layers_is_refused_and_old_model_specs_still_match(tmp_path):
    from alexnet_tf.weights.checkpointing import check_model_spec

    plain = {"variant": "paper", "num_classes": 5, "image_size": 224}
    check_model_spec(str(tmp_path / "old"), plain, write=True)  # what runs wrote before fine-tuning existed
    check_model_spec(str(tmp_path / "old"), plain, write=False)
    check_model_spec(str(tmp_path / "head"), {**plain, "trainable": "head"}, write=True)
    with pytest.raises(ConfigError, match=re.escape("trainable='head' (this run: 'all')")):
        check_model_spec(str(tmp_path / "head"), plain, write=False)


def test_init_from_that_does_not_fit_stops_the_run_before_it_writes(datasets, tmp_path):
    _, _, new = datasets
    # Layers named as AlexNet's, without LRN (so one_weird_trick's), but 8 filters where it has 64.
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inputs
    for i, (filters, kernel, stride) in enumerate(
        ((8, 11, 4), (8, 5, 1), (8, 3, 1), (8, 3, 1), (8, 3, 1)), 1
    ):
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", name=f"conv{i}")(x)
    narrow = str(tmp_path / "narrow.keras")
    keras.Model(inputs, keras.layers.Dense(3, name="fc8")(keras.layers.Flatten()(x))).save(narrow)
    # A training checkpoint without fc7's kernel: TensorFlow's restore raised an AssertionError
    # (a traceback), and on JAX or PyTorch it restored nothing at all.
    partial_dir = str(tmp_path / "partial")
    source = model.build_alexnet(
        num_classes=5, variant="one_weird_trick", input_shape=(SIZE, SIZE, 3), kernel_initializer="zeros"
    )
    weights_but_fc7 = {path: v for path, v in model_weights(source).items() if path != "fc7/kernel"}
    check_model_spec(
        os.path.join(partial_dir, CHECKPOINT_SUBDIR),
        {"variant": "one_weird_trick", "num_classes": 5, "image_size": SIZE},
        write=True,
    )
    Checkpointer(
        tf.train.Checkpoint(model=weights_but_fc7), os.path.join(partial_dir, CHECKPOINT_SUBDIR), True, 1
    ).save(3)
    partial_prefix = os.path.join(partial_dir, CHECKPOINT_SUBDIR, "ckpt-3")
    cases = {
        "variant": (
            dict(init_from=narrow, variant="paper", image_size=224),
            f"--init_from={narrow} holds a one_weird_trick AlexNet but --variant=paper: "
            "pass --variant=one_weird_trick",
        ),
        "missing": (
            dict(init_from=str(tmp_path / "nope.keras")),
            f"--init_from={tmp_path / 'nope.keras'}: no such file",
        ),
        "shape": (
            dict(init_from=narrow, precision="float32"),
            f"--init_from={narrow}: conv1/kernel has shape (11, 11, 3, 8) there but (11, 11, 3, 64) here",
        ),
        "unread": (
            dict(init_from=partial_dir),
            f"--init_from={partial_dir}: {partial_prefix}: no weight fc7/kernel there (shape (4096, 4096)",
        ),
    }
    for name, (fields, message) in cases.items():
        model_dir = tmp_path / f"run_{name}"
        config = TrainConfig(
            data_dir=new,
            model_dir=str(model_dir),
            batch_size=4,
            **{"variant": "one_weird_trick", "image_size": SIZE, **fields},
        )
        with pytest.raises(ConfigError) as raised:
            train.run(config)
        assert message in str(raised.value) and "\n" not in str(raised.value), name
        assert not os.path.exists(model_dir / CHECKPOINT_SUBDIR / "model_spec.json"), name


@pytest.mark.slow
def test_init_from_a_file_that_is_not_a_keras_file_is_one_line_and_exit_2(tmp_path):
    """Keras calls any .keras file that is not a zip archive "File not found"."""
    notes = tmp_path / "notes.keras"
    notes.write_text("plain text, not a model")
    result = run_command(
        [
            "-m",
            "alexnet_tf.train",
            "--data_source=synthetic",
            f"--model_dir={tmp_path / 'run'}",
            f"--init_from={notes}",
            "--variant=one_weird_trick",
            f"--image_size={SIZE}",
        ],
        timeout=240,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"alexnet_tf.train: error: --init_from={notes}: {notes} is not a Keras file (not a zip archive): "
        "pass a .keras file written by model.save or python -m alexnet_tf.import_weights"
    )
    assert not os.path.exists(tmp_path / "run" / CHECKPOINT_SUBDIR / "model_spec.json")


def test_the_documented_fine_tuning_commands_use_flags_that_exist():
    """Each command of docs/training.md's "Fine-tune on your own images" parses; the config validates."""
    from absl import flags

    from alexnet_tf import evaluate, export, predict

    with open(os.path.join(REPO, "docs", "training.md"), encoding="utf-8") as f:
        section = f.read().split("## Fine-tune on your own images", 1)[1].split("\n## ", 1)[0]
    lines = [
        line.split()
        for block in re.findall(r"```bash\n(.*?)```", section, re.S)
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip()
    ]
    commands = {words[2] if words[1] == "-m" else words[1]: words for words in lines}
    assert set(commands) == {
        "alexnet_tf.convert",
        "alexnet_tf.import_weights",
        "alexnet_tf.train",
        "alexnet_tf.evaluate",
        "alexnet_tf.export",
        "alexnet_tf.predict",
    }
    for name, words in commands.items():
        if name in ("alexnet_tf.convert", "alexnet_tf.import_weights"):
            # The command's flag definitions: its module, or every module of its package.
            path = os.path.join(REPO, *name.split("."))
            source = ""
            for module in [path + ".py"] if os.path.isfile(path + ".py") else glob.glob(path + "/*.py"):
                with open(module, encoding="utf-8") as f:
                    source += f.read()
            for word in words[3:]:
                assert re.search(r'DEFINE_\w+\(\s*"' + word[2:].split("=")[0] + '"', source), (name, word)
            continue
        flag_values = flags.FlagValues()
        {
            "alexnet_tf.train": train,
            "alexnet_tf.evaluate": evaluate,
            "alexnet_tf.export": export,
            "alexnet_tf.predict": predict,
        }[name].define_flags(flag_values)
        flag_values(words[2:])
        if name == "alexnet_tf.train":
            config = train.config_from_flags(flag_values)
            config.validate()
            assert (config.trainable, config.variant) == ("head", "caffe") and config.init_from


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_head_only_fine_tuning_resumes_after_sigkill_and_keeps_the_frozen_layers(datasets, base, tmp_path):
    root, _, new = datasets
    keras_path, source = base
    model_dir = str(tmp_path / "finetuned")
    command = [
        "-m",
        "alexnet_tf.train",
        f"--data_dir={new}",
        f"--model_dir={model_dir}",
        f"--init_from={keras_path}",
        "--variant=one_weird_trick",
        f"--image_size={SIZE}",
        "--trainable=head",
        "--head_lr_multiplier=10",
        "--batch_size=4",
        "--epochs=2",
        "--log_every_steps=1",
        "--keep_checkpoints=1",
        "--ten_crop_eval",
        "--seed=0",
    ]

    # 1. Fine-tune (2 steps per epoch, a checkpoint at each epoch's end); SIGKILL at the first checkpoint.
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen([sys.executable, *command], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 240
        while _checkpoint_step(model_dir) is None:
            assert first.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint within 240 s"
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    killed_at = _checkpoint_step(model_dir)
    assert killed_at == 2
    text = log_path.read_text()
    # fc8 only: 4096 x 3 + 3 of the 57,016,131 parameters of one_weird_trick at 3 classes.
    assert f"Initialised 14 weights from {keras_path}; fc8 is new for 3 classes." in text
    assert "--trainable=head: 12,291 of 57,016,131 parameters train" in text
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_SUBDIR))
    fc8_at_kill = _checkpoint_value(latest, "fc8/kernel")

    # 2. The same command resumes from that checkpoint and ignores --init_from.
    second = run_command(command, timeout=300)
    assert second.returncode == 0, second.stderr[-4000:]
    assert f"--init_from={keras_path} ignored" in second.stderr
    assert f"Resuming from {latest} at step {killed_at}" in second.stderr
    assert "Initialised" not in second.stderr
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    assert (results["global_step"], results["optimizer_iterations"], results["epochs_completed"]) == (4, 4, 2)
    assert results["validation"]["count"] == 4 and results["validation_ten_crop"]["count"] == 4
    accumulator = event_accumulator.EventAccumulator(
        os.path.join(model_dir, "validation"), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    assert sorted({e.step for e in accumulator.Tensors("top1")}) == [2, 4]  # both runs' epochs, one log dir
    with open(os.path.join(model_dir, CHECKPOINT_SUBDIR, "model_spec.json")) as f:
        assert json.load(f) == {
            "variant": "one_weird_trick",
            "num_classes": 3,
            "image_size": SIZE,
            "input_conversion": model.input_conversion_of(source),
            "trainable": "head",
        }

    # The frozen layers are the base's bit for bit; fc8 is new and went on training after the restart.
    final = tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_SUBDIR))
    assert final.endswith("ckpt-4")
    slots = {
        tuple(shape)
        for name, shape in tf.train.list_variables(final)
        if name.startswith("optimizer/") and shape
    }
    assert slots == {(4096, 3), (3,)}
    tuned = alexnet_tf.AlexNet(weights=model_dir)  # also what evaluate and export rebuild from the spec
    assert model.input_conversion_of(tuned) == model.input_conversion_of(source)
    mine, theirs = _weights(tuned), _weights(source)
    for path in mine:
        if path.split("/")[0] in FROZEN:
            assert np.array_equal(mine[path], theirs[path]), path
    assert mine["fc8/kernel"].shape == (4096, 3) and not np.array_equal(mine["fc8/kernel"], fc8_at_kill)

    # The export is that model, input conversion included, and reads like the application API.
    jpeg = write_jpeg(root / "photo.jpg", 300, 420, seed=3)
    loaded = tf.saved_model.load(results["export_path"])
    outputs = {
        k: v.numpy() for k, v in loaded.signatures["serving_default"](image_bytes=tf.constant([jpeg])).items()
    }
    pixels = alexnet_tf.preprocess_input(tf.io.decode_jpeg(jpeg).numpy(), image_size=SIZE)
    probabilities = tf.nn.softmax(tuned(pixels)).numpy()
    np.testing.assert_allclose(outputs["probabilities"], probabilities, atol=1e-5)
    decoded = alexnet_tf.decode_predictions(probabilities, top=3, labels=os.path.join(new, "labels.txt"))
    assert [(label, c) for label, _, c in decoded[0]] == [(label, c) for label, _, c in top_k(outputs)]
    assert re.fullmatch(r"n0900000\d class \d", decoded[0][0][0])

    # A LiteRT file of the fine-tuned model dir (issue 26): its labels from the run's data dir, the
    # same logits as the model, and evaluate --tflite scores the run's validation as the trainer did.
    lite_path = str(tmp_path / "tuned.tflite")
    exported = run_command(
        ["-m", "alexnet_tf.export", f"--checkpoint={model_dir}", f"--export_dir={lite_path}"]
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    lite = litert.LiteRTModel(lite_path)
    assert lite.metadata["variant"] == "one_weird_trick" and lite.quantize == "none"
    assert lite.labels == [
        f"{e.synset} {e.name}" for e in schema.read_labels_file(os.path.join(new, "labels.txt"))
    ]
    crop = preprocessing.center_crop(tf.io.decode_jpeg(jpeg), SIZE).numpy()[np.newaxis]
    reference = tuned(crop.astype(np.float32) - np.asarray(preprocessing.MEAN_RGB, np.float32)).numpy()
    assert np.abs(lite(crop) - reference).max() <= 1e-4 * np.abs(reference).max()
    scores = evaluate.run(evaluate.EvalConfig(data_dir=new, tflite=lite_path, batch_size=4, ten_crop=False))
    assert scores["centre_crop"]["count"] == results["validation"]["count"]
    assert scores["centre_crop"]["top1"] == results["validation"]["top1"]
