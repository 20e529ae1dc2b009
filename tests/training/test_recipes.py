"""`--recipe=paper|torchvision`: what each sets, that flags override parts, and that a run keeps it.

The end-to-end run trains one_weird_trick with the torchvision recipe for 2 steps on a tiny
dataset as a fresh `python -m alexnet_tf.train` process, then checks the model spec, config.json,
a re-run with another recipe (refused before anything is written) and the SavedModel (which
takes this project's pixels and normalises them inside, like imported torchvision weights).
"""

import json
import os

from absl import flags
from conftest import run_command
import keras
import numpy as np
import pytest
import tensorflow as tf
from tiny_dataset import write_tiny_dataset

from alexnet_tf import train
from alexnet_tf.config import (
    DEMO_VALUES,
    PIXEL_SCALE_VS_TORCHVISION,
    RECIPES,
    TrainConfig,
    recipe_config,
)
from alexnet_tf.data import preprocessing
from alexnet_tf.model import build_alexnet
from alexnet_tf.training.inputs import data_source
from alexnet_tf.training.step import build_model
from alexnet_tf.weights.checkpointing import restore_model
from alexnet_tf.weights.torchvision_state import TORCHVISION_INPUT


def parse(*argv):
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    flag_values(["train", *argv])
    return train.config_from_flags(flag_values)


def test_the_torchvision_recipe_sets_its_values_and_any_flag_overrides_one_part():
    config = parse("--data_dir=/d", "--model_dir=/m", "--recipe=torchvision")
    assert config == recipe_config("torchvision", data_dir="/d", model_dir="/m")
    assert (config.input_convention, config.weight_init, config.augment, config.lighting_std) == (
        "torchvision",
        "pytorch",
        "inception",
        0.0,
    )
    # 0.01 per 256 images, quoted at the reference batch of 128; /10 at epochs 30 and 60.
    assert config.learning_rate == pytest.approx(0.005)
    assert (config.lr_schedule, config.lr_decay_epochs, config.weight_decay) == ("step", (30.0, 60.0), 1e-4)

    config = parse("--model_dir=/m", "--recipe=torchvision", "--learning_rate=0.04", "--lr_schedule=cosine")
    assert (config.learning_rate, config.lr_schedule) == (0.04, "cosine")
    assert (config.input_convention, config.weight_decay, config.augment) == (
        "torchvision",
        1e-4,
        "inception",
    )

    # --demo's settings come after the recipe's; given flags after both.
    config = parse("--demo", "--recipe=torchvision", "--epochs=3")
    assert config.epochs == 3
    assert config.learning_rate == DEMO_VALUES["learning_rate"]
    assert (config.recipe, config.input_convention) == ("torchvision", "torchvision")

    assert parse("--model_dir=/m") == TrainConfig(model_dir="/m")  # paper: the defaults, untouched
    assert RECIPES["paper"] == {}


def test_recipe_config_refuses_an_unknown_recipe_and_validate_an_unknown_convention():
    with pytest.raises(ValueError, match="recipe='caffe'; choose one of paper, torchvision"):
        recipe_config("caffe")
    with pytest.raises(ValueError, match="input_convention='bgr'"):
        TrainConfig(model_dir="/m", input_convention="bgr").validate()
    with pytest.raises(ValueError, match="lighting_std must be >= 0"):
        TrainConfig(model_dir="/m", lighting_std=-0.1).validate()
    with pytest.raises(ValueError, match="plateau_patience must be >= 1"):
        TrainConfig(model_dir="/m", plateau_patience=0).validate()
    with pytest.raises(ValueError, match="learning_rate must be > 0, got nan"):
        TrainConfig(model_dir="/m", learning_rate=float("nan")).validate()


def test_the_recipe_builds_pytorch_initialised_kernels_zero_biases_and_a_normalising_first_layer():
    keras.utils.set_random_seed(0)
    config = recipe_config("torchvision", variant="paper", model_dir="/m")
    model = build_model(config, 10, TORCHVISION_INPUT)
    conv1 = model.get_layer("conv1").kernel.numpy()  # fan_in 11 * 11 * 3
    bound = 1 / np.sqrt(11 * 11 * 3)
    assert np.abs(conv1).max() <= bound and np.abs(conv1).max() > 0.95 * bound
    assert np.std(conv1) == pytest.approx(bound / np.sqrt(3), rel=0.05)  # uniform, not N(0, 0.01)
    assert not model.get_layer("conv2").bias.numpy().any()  # the paper's 1.0, replaced by 0
    # The same pixels as ever go in; the first layer turns them into torchvision's input.
    pixels = np.array([[[[255.0, 0.0, 128.0]]]], np.float32) - np.float32(preprocessing.MEAN_RGB)
    converted = model.get_layer("input_conversion")(pixels).numpy().ravel()
    expected = (np.array([1.0, 0.0, 128 / 255]) - np.array([0.485, 0.456, 0.406])) / np.array(
        [0.229, 0.224, 0.225]
    )
    np.testing.assert_allclose(converted, expected, rtol=1e-5)

    keras.utils.set_random_seed(0)
    paper = build_model(TrainConfig(model_dir="/m"), 10)
    assert np.std(paper.get_layer("conv1").kernel.numpy()) == pytest.approx(0.01, rel=0.05)
    assert paper.get_layer("conv2").bias.numpy() == pytest.approx(1.0)


def test_lighting_std_reaches_the_pipeline():
    assert data_source(TrainConfig(data_dir="/d", model_dir="/m")).pixels.pca_std == pytest.approx(0.1)
    assert data_source(recipe_config("torchvision", data_dir="/d", model_dir="/m")).pixels.pca_std == 0.0


def test_warnings_name_the_unstable_combination_and_a_plateau_schedule_that_cannot_drop():
    unstable = TrainConfig(model_dir="/m", variant="one_weird_trick").warnings()
    assert len(unstable) == 1 and f"{PIXEL_SCALE_VS_TORCHVISION:.0f}x" in unstable[0]
    assert "--recipe=torchvision" in unstable[0]
    assert not recipe_config("torchvision", variant="one_weird_trick", model_dir="/m").warnings()
    assert not TrainConfig(model_dir="/m", variant="one_weird_trick", init_from="x.keras").warnings()
    # A resumed fine-tuning run began from weights even when --init_from is not given again.
    assert not TrainConfig(model_dir="/m", variant="one_weird_trick").warnings(from_weights=True)
    assert not TrainConfig(model_dir="/m").warnings()  # the paper's 90 epochs

    (short,) = TrainConfig(model_dir="/m", epochs=5).warnings()
    assert short.startswith("--epochs=5 is too short for --lr_schedule=paper to lower the learning rate")
    (fifteen,) = TrainConfig(model_dir="/m", epochs=15).warnings()
    assert "never while accuracy still climbs" in fifteen
    assert not TrainConfig(model_dir="/m", epochs=18).warnings()
    assert not TrainConfig(model_dir="/m", epochs=5, lr_schedule="cosine").warnings()


def test_pixel_scale_is_255_times_torchvisions_std():
    assert PIXEL_SCALE_VS_TORCHVISION == pytest.approx(255 * np.mean(TORCHVISION_INPUT["std"]), rel=0.01)


@pytest.mark.slow
def test_a_torchvision_recipe_run_records_it_refuses_another_recipe_and_exports_normalising_pixels(tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "data", train_records=8, validation_records=4, num_classes=3)
    model_dir = str(tmp_path / "run")
    command = [
        "-m",
        "alexnet_tf.train",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--variant=one_weird_trick",
        "--image_size=96",
        "--batch_size=4",
        "--epochs=1",
        "--seed=0",
        "--log_every_steps=1",
    ]
    result = run_command([*command, "--recipe=torchvision"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "one_weird_trick with PyTorch's initialisation" not in result.stderr
    with open(os.path.join(model_dir, "config.json")) as f:
        stored = json.load(f)
    assert (stored["recipe"], stored["input_convention"], stored["weight_init"]) == (
        "torchvision",
        "torchvision",
        "pytorch",
    )
    with open(os.path.join(model_dir, "checkpoints", "model_spec.json")) as f:
        spec = json.load(f)
    assert spec["input_conversion"]["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert spec["input_conversion"]["scale"] == pytest.approx(1 / 255)
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    # 2 steps of 4 images at 0.005 * 4 / 128 (no decay within the first 30 epochs).
    assert results["learning_rate"] == pytest.approx(0.005 * 4 / 128)

    # The same model dir with the paper's recipe: refused before anything is written.
    before = sorted(os.listdir(os.path.join(model_dir, "checkpoints")))
    mtimes = {name: os.path.getmtime(os.path.join(model_dir, "checkpoints", name)) for name in before}
    again = run_command([*command, "--epochs=2"])
    assert again.returncode == 2, again.stderr[-3000:]
    last = again.stderr.strip().splitlines()[-1]
    assert "--input_convention=paper (--recipe=paper)" in last
    assert "started with --input_convention=torchvision" in last
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == before
    assert all(os.path.getmtime(os.path.join(model_dir, "checkpoints", n)) == t for n, t in mtimes.items())
    assert "one_weird_trick with PyTorch's initialisation" not in again.stderr  # the refusal comes first

    # --init_from does not lift the refusal: a resume ignores it, and this run began from scratch.
    assert run_command([*command, "--epochs=2", f"--init_from={model_dir}"]).returncode == 2
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == before

    # Fine-tuning it under --recipe=paper takes the weights' convention, config.json says so,
    # and the run resumes without --init_from (which a resume ignores anyway), with no warning.
    tuned = str(tmp_path / "tuned")
    paper_command = [*command[:3], f"--model_dir={tuned}", *command[4:], "--trainable=head"]
    first = run_command([*paper_command, f"--init_from={model_dir}"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert "one_weird_trick with PyTorch's initialisation" not in first.stderr
    with open(os.path.join(tuned, "config.json")) as f:
        assert json.load(f)["input_convention"] == "torchvision"
    resumed = run_command([*paper_command, "--epochs=2"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "one_weird_trick with PyTorch's initialisation" not in resumed.stderr
    assert "epoch 2/2" in resumed.stderr

    # evaluate --checkpoint rebuilds the normalising model and agrees with the run.
    evaluated = run_command(
        ["-m", "alexnet_tf.evaluate", f"--data_dir={data_dir}", f"--checkpoint={model_dir}"]
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert f"{100 * results['validation']['top1']:.2f}%" in evaluated.stdout

    # The SavedModel, in a fresh process, takes this project's mean-subtracted pixels and
    # normalises them inside: its logits are the restored model's, not those of the same
    # weights fed the pixels as they are.
    crops = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    crops -= np.float32(preprocessing.MEAN_RGB)
    np.save(tmp_path / "crops.npy", crops)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "np.save(sys.argv[3], m.logits(tf.constant(np.load(sys.argv[2]))).numpy())\n"
    )
    served = run_command(
        ["-c", script, results["export_path"], str(tmp_path / "crops.npy"), str(tmp_path / "out.npy")]
    )
    assert served.returncode == 0, served.stderr[-3000:]
    served_logits = np.load(tmp_path / "out.npy")
    restored, _ = restore_model(model_dir)
    expected = restored(crops, training=False).numpy()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(served_logits, expected, atol=1e-4 * scale)
    unconverted = build_alexnet(
        num_classes=3, variant="one_weird_trick", input_shape=(96, 96, 3), dropout_rate=0
    )
    unconverted.set_weights(restored.get_weights())
    assert np.abs(unconverted(crops, training=False).numpy() - expected).max() > 0.1 * scale


def test_on_0_255_pixels_one_weird_tricks_first_steps_are_pixel_scale_times_larger():
    """The cause of the divergence docs/training.md explains: ReLUs, max pools and zero biases make
    one_weird_trick (PyTorch's initialisation) positively homogeneous, so 0-255 pixels scale its
    logits by ~57.6 and, while they are small, each layer's gradient relative to its weights by at
    least as much."""
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (4, 12, 12, 3)).astype(np.float32)
    pixels = tf.image.resize(pixels, (96, 96)).numpy() - np.float32(preprocessing.MEAN_RGB)
    labels = tf.constant([0, 1, 2, 0])
    ratios = {}
    for convention in ("paper", "torchvision"):
        keras.utils.set_random_seed(0)
        config = TrainConfig(model_dir="/m", variant="one_weird_trick", image_size=96, dropout_rate=0.0)
        model = build_model(config, 3, TORCHVISION_INPUT if convention == "torchvision" else None)
        with tf.GradientTape() as tape:
            logits = model(pixels, training=True)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            )
        kernels = [v for v in model.trainable_variables if v.path.endswith("kernel")]
        gradients = tape.gradient(loss, kernels)
        ratios[convention] = (
            float(np.abs(logits).max()),
            [float(tf.norm(g) / tf.norm(k)) for g, k in zip(gradients, kernels)],
        )
    (raw_logit, raw_steps), (normal_logit, normal_steps) = ratios["paper"], ratios["torchvision"]
    assert raw_logit / normal_logit == pytest.approx(PIXEL_SCALE_VS_TORCHVISION, rel=0.05)
    # conv1 ... fc8: at least that factor (60x to 75x here: the softmax is less flat on 0-255).
    steps = [raw / normal for raw, normal in zip(raw_steps, normal_steps)]
    assert len(steps) == 8 and min(steps) > 0.95 * PIXEL_SCALE_VS_TORCHVISION and max(steps) < 100
