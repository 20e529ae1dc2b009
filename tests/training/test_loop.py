"""Tests of alexnet_tf.training.loop through the real entry point, in process: a 2-step run on 4 images whose
manifest has no record count (the trainer counts them)."""

import json
import logging
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
import tensorflow as tf
from tiny_dataset import write_tiny_dataset

from alexnet_tf import optim, train
from alexnet_tf.config import TrainConfig
from alexnet_tf.training.inputs import RECORD_COUNTS_FILENAME
from alexnet_tf.weights.checkpointing import restore_model


def small_config(data_dir, model_dir):
    # one_weird_trick at 128 px: the trainer's full path at a fraction of the paper model's cost.
    return TrainConfig(
        data_dir=data_dir,
        model_dir=model_dir,
        variant="one_weird_trick",
        image_size=128,
        batch_size=2,
        epochs=1,
        log_every_steps=1,
        checkpoint_every_steps=1,
        keep_checkpoints=3,
        lr_schedule="step",
        precision="float32",
        seed=0,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    data_dir = write_tiny_dataset(root / "data", train_records=4, validation_records=2)
    os.remove(os.path.join(data_dir, "manifest.json"))  # labels.txt gives the classes and offset
    model_dir = str(root / "model")
    return data_dir, model_dir, train.run(small_config(data_dir, model_dir))


def result_model_parameters(model_dir):
    return restore_model(model_dir)[0].count_params()


def _scalars(log_dir, tag):
    accumulator = event_accumulator.EventAccumulator(log_dir, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)}


def test_run_trains_two_steps_evaluates_checkpoints_and_exports(finished_run):
    # Not marked slow: `pytest -m "not slow"` runs the training loop itself, in process.
    _, model_dir, result = finished_run
    assert (result.global_step, result.optimizer_iterations, result.epochs_completed) == (2, 2, 1)
    assert result.validation["count"] == 2 and 0.0 <= result.validation["top1"] <= 1.0
    assert np.isfinite(result.validation["loss"])
    assert result.checkpoint.endswith("ckpt-2")
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")) == result.checkpoint
    assert os.path.isfile(os.path.join(result.export_path, "saved_model.pb"))
    with open(os.path.join(model_dir, "results.json")) as f:
        assert json.load(f)["global_step"] == 2
    # The card beside the checkpoints; this data dir has no manifest.json, and the card says so.
    with open(os.path.join(model_dir, "MODEL_CARD.md"), encoding="utf-8") as f:
        card = f.read()
    assert "- manifest: no manifest.json in the data dir" in card
    assert f"- parameters: {result_model_parameters(model_dir):,}" in card


@pytest.mark.slow
def test_total_loss_adds_the_decay_term_of_the_weights_before_the_logged_step(finished_run):
    _, model_dir, _ = finished_run
    loss = _scalars(os.path.join(model_dir, "train"), "loss")
    total = _scalars(os.path.join(model_dir, "train"), "total_loss")
    assert sorted(total) == [1, 2]
    # Step 2 trained from checkpoint 1's weights; the model has no regularisation losses.
    model, _ = restore_model(os.path.join(model_dir, "checkpoints", "ckpt-1"))
    decay = float(optim.l2_loss(TrainConfig().weight_decay, model.trainable_variables))
    assert decay > 0.1
    assert total[2] - loss[2] == pytest.approx(decay, rel=1e-4)


@pytest.mark.slow
def test_rerunning_a_finished_run_says_so_and_writes_nothing(finished_run, caplog):
    data_dir, model_dir, first = finished_run
    assert os.listdir(os.path.join(model_dir, "export")) == ["1"]
    with open(os.path.join(model_dir, RECORD_COUNTS_FILENAME)) as f:  # counted once, by the first run
        assert [entry["records"] for entry in json.load(f).values()] == [4]

    def snapshot():
        return {
            os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
            for root, _, names in os.walk(model_dir)
            for name in names
            if "events" not in name
        }

    before = snapshot()
    with caplog.at_level(logging.INFO, logger="absl"):
        again = train.run(small_config(data_dir, model_dir))
    assert "is complete (step 2 of 2, 1 epochs); nothing to do" in caplog.text
    assert "cached in" in caplog.text and "counting the records" not in caplog.text
    assert "Exported" not in caplog.text and "validation top-1" not in caplog.text
    assert os.listdir(os.path.join(model_dir, "export")) == ["1"]  # no second SavedModel version
    assert snapshot() == before
    assert again == first
    with open(os.path.join(model_dir, "results.json")) as f:
        assert json.load(f)["global_step"] == 2
    assert np.isfinite(again.validation["loss"])
