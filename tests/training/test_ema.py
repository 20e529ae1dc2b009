"""Tests of --ema_decay, the moving average of the weights (alexnet_tf/training/step.py, loop.py,
alexnet_tf/weights/checkpointing.py).

In process: the trainer's own state and train step keep averages equal to a NumPy EMA of the
weights they take after each step (with loss scaling and frozen layers too), and swap them into
the model and back. In a fresh process with two mirrored CPU replicas the averages stay identical
on both. End to end through `python -m alexnet_tf.train` on the tiny dataset: the epoch lines,
results.json, the export, `evaluate --checkpoint` and `export --checkpoint` use the averages; a
SIGKILLed run resumes them bit for bit; a changed --ema_decay is refused before anything is written.
"""

import json
import os
import subprocess
import sys
import textwrap

from card_tables import assert_validation_row, card_rows
from conftest import REPO, run_command
import keras
import numpy as np
import pytest
import tensorflow as tf
from tiny_dataset import write_tiny_dataset

from alexnet_tf.config import ConfigError, TrainConfig
from alexnet_tf.model import build_alexnet
from alexnet_tf.training import step as steps
from alexnet_tf.training.preemption import TEST_SELF_SIGNAL_ENV
from alexnet_tf.weights.checkpointing import (
    AVERAGES_PART,
    CHECKPOINT_SUBDIR,
    checkpoint_weights,
    load_model,
    model_weights,
)

SIZE = 95  # one_weird_trick's smallest trainable input: the cheapest whole AlexNet
CLASSES = 5
DECAY = 0.5  # a short memory, so that the averages differ clearly from the weights after a few steps


def test_ema_decay_must_be_in_0_1():
    for value in (-0.1, 1.0, 1.5):
        with pytest.raises(ConfigError, match=r"^ema_decay must be in \[0, 1\)"):
            TrainConfig(model_dir="run", ema_decay=value).validate()
    TrainConfig(model_dir="run", ema_decay=0.999).validate()


# ----------------------------------------------------------------------------- the train step


def _state(ema_decay, loss_scaling=False, trainable="all", strategy=None):
    config = TrainConfig(
        variant="one_weird_trick",
        image_size=SIZE,
        batch_size=4,
        learning_rate=0.5,
        lr_schedule="step",
        dropout_rate=0.0,
        precision="float32",
        trainable=trainable,
        ema_decay=ema_decay,
    )
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    state = steps.build_state(
        config, strategy, 3, steps_per_epoch=4, total_steps=4, loss_scaling=loss_scaling
    )
    train = steps.make_train_function(strategy, state, 4, jit_compile=False, loss_scaling=loss_scaling)
    images = np.random.default_rng(0).normal(0.0, 50.0, size=(16, SIZE, SIZE, 3)).astype(np.float32)
    labels = (np.arange(16) % 3).astype(np.int32)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4).repeat()
    iterator = iter(strategy.distribute_datasets_from_function(lambda _: data))
    return state, lambda: train(iterator, tf.constant(1), tf.constant(0.0))


@pytest.mark.parametrize("loss_scaling, trainable", [(False, "all"), (True, "fc")])
def test_the_averages_are_a_numpy_ema_of_the_weights_after_each_step(loss_scaling, trainable):
    state, train_step = _state(DECAY, loss_scaling, trainable)
    variables = state.model.trainable_variables
    assert list(state.averages) == [v.path for v in variables]  # frozen layers: no average
    assert set(steps.optimizer_averages(state.optimizer, variables)) == set(state.averages)
    frozen_before = {v.path: v.numpy() for v in state.model.non_trainable_weights}
    expected = None
    for _ in range(4):
        train_step()
        weights = [v.numpy() for v in variables]
        # The first step's average is the weights; then average <- d * average + (1 - d) * weights.
        expected = (
            weights
            if expected is None
            else [DECAY * e + np.float32(1 - DECAY) * w for e, w in zip(expected, weights)]
        )
    assert int(state.optimizer.iterations.numpy()) == 4
    averages = [state.averages[v.path].numpy() for v in variables]
    for path, average, want in zip(state.averages, averages, expected):
        np.testing.assert_allclose(average, want, rtol=1e-6, atol=1e-9, err_msg=path)
    assert max(float(np.abs(a - w).max()) for a, w in zip(averages, weights)) > 1e-4  # not the weights

    # averaged_weights puts the averages in the model for the block and the weights back after it.
    with steps.averaged_weights(state):
        for variable, average in zip(variables, averages):
            assert np.array_equal(variable.numpy(), average), variable.path
        for variable in state.model.non_trainable_weights:
            assert np.array_equal(variable.numpy(), frozen_before[variable.path]), variable.path
    for variable, weight in zip(variables, weights):
        assert np.array_equal(variable.numpy(), weight), variable.path


def test_without_ema_decay_nothing_is_added():
    state, _ = _state(0.0)
    assert state.averages == {}
    assert not hasattr(state.checkpoint, AVERAGES_PART)
    names = [v.path for v in state.optimizer.variables]
    assert not any("average" in name for name in names), names
    with steps.averaged_weights(state):  # a no-op
        pass


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path[:0] = ["tests", "tests/training"]
    from alexnet_tf.training.devices import mirrored_over
    strategy = mirrored_over(2)
    import numpy as np
    from test_ema import DECAY, _state
    from alexnet_tf.training import step as steps

    def copies(variable):
        return [v.numpy() for v in strategy.experimental_local_results(variable.value)]

    state, train_step = _state(DECAY, loss_scaling=True, strategy=strategy)
    variables = state.model.trainable_variables
    expected = None
    for _ in range(3):
        train_step()
        weights = [copies(v)[0] for v in variables]
        expected = weights if expected is None else [DECAY * e + np.float32(1 - DECAY) * w
                                                     for e, w in zip(expected, weights)]
    averages = [copies(state.averages[v.path]) for v in variables]
    with steps.averaged_weights(state):
        swapped = [copies(v) for v in variables]
    after = [copies(v) for v in variables]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "iterations": int(state.optimizer.iterations.numpy()),
        "averages_equal": all(np.array_equal(a[0], a[1]) for a in averages),
        "ema_error": max(float(np.abs(a[0] - e).max()) for a, e in zip(averages, expected)),
        "ema_scale": max(float(np.abs(e).max()) for e in expected),
        "moved_from_weights": max(float(np.abs(a[0] - w).max()) for a, w in zip(averages, weights)),
        "swapped_in": all(np.array_equal(s[r], a[0]) for s, a in zip(swapped, averages) for r in (0, 1)),
        "swapped_back": all(np.array_equal(b[r], w) for b, w in zip(after, weights) for r in (0, 1)),
    }))
""")


@pytest.mark.slow
def test_the_averages_stay_identical_on_two_mirrored_replicas():
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert (out["replicas"], out["iterations"]) == (2, 3), out
    assert out["averages_equal"], out
    assert out["ema_error"] <= 1e-6 * out["ema_scale"], out
    assert out["moved_from_weights"] > 1e-4, out
    assert out["swapped_in"] and out["swapped_back"], out


# ----------------------------------------------------------------------------- end to end


def _train_command(data_dir, model_dir, *extra):
    return [
        "-m",
        "alexnet_tf.train",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--variant=one_weird_trick",
        f"--image_size={SIZE}",
        "--batch_size=2",
        "--epochs=2",  # 4 steps per epoch
        "--learning_rate=0.1",
        "--lr_schedule=step",
        "--precision=float32",
        "--seed=0",
        "--checkpoint_every_steps=3",
        "--keep_checkpoints=1",
        "--log_every_steps=2",
        "--ema_decay=0.8",
        *extra,
    ]


def _latest(model_dir):
    return tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_SUBDIR))


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ema")
    data_dir = write_tiny_dataset(root / "data", train_records=8, validation_records=4, num_classes=CLASSES)
    model_dir = str(root / "run")
    result = run_command(_train_command(data_dir, model_dir), timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    return root, data_dir, model_dir, result, results


def _model_with(values):
    """A float32 inference model holding `values` ({weight path: array}) and nothing else."""
    model = build_alexnet(
        num_classes=CLASSES, variant="one_weird_trick", input_shape=(SIZE, SIZE, 3), dropout_rate=0.0
    )
    for path, variable in model_weights(model).items():
        variable.assign(values[path])
    return model


LOGITS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    images = tf.constant(np.load(sys.argv[1]))
    loaded = [tf.saved_model.load(path) for path in sys.argv[2:]]  # alive while their functions run
    print(json.dumps([model.logits(images).numpy().tolist() for model in loaded]))
""")


@pytest.mark.slow
def test_validation_results_and_exports_use_the_averages(ema_run, tmp_path):
    _, data_dir, model_dir, result, results = ema_run
    epoch_lines = [line for line in result.stderr.splitlines() if ": epoch " in line and "validation" in line]
    assert len(epoch_lines) == 2 and all("validation (EMA weights) top-1" in line for line in epoch_lines)
    assert "(EMA weights)" in result.stderr.split("Exported the SavedModel to", 1)[1].splitlines()[0]
    assert "EMA weights:      validation and SavedModel use the moving averages" in result.stdout
    assert results["ema_decay"] == 0.8 and results["global_step"] == 8
    with open(os.path.join(model_dir, CHECKPOINT_SUBDIR, "model_spec.json")) as f:
        assert json.load(f)["ema_decay"] == 0.8

    prefix = _latest(model_dir)
    weights, averages = checkpoint_weights(prefix), checkpoint_weights(prefix, AVERAGES_PART)
    assert set(averages) == set(weights)  # every weight trains: every one has its average
    averaged = _model_with({**weights, **averages})
    raw = _model_with(weights)
    images = np.random.default_rng(1).normal(0.0, 60.0, size=(3, SIZE, SIZE, 3)).astype(np.float32)
    want, raw_logits = averaged(images).numpy(), raw(images).numpy()
    assert np.abs(want - raw_logits).max() > 1e-3  # the averages give other logits than the weights

    # evaluate, export and --init_from read a checkpoint through load_model: the averages.
    loaded, _ = load_model(model_dir)
    for path, variable in model_weights(loaded).items():
        assert np.array_equal(variable.numpy(), averages[path]), path

    exported = run_command(
        ["-m", "alexnet_tf.export", f"--checkpoint={model_dir}", f"--export_dir={tmp_path / 'export'}"]
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    notes = [line for line in exported.stderr.splitlines() if "moving averages of the weights" in line]
    assert len(notes) == 1 and prefix in notes[0] and "--ema_decay=0.8" in notes[0], exported.stderr[-3000:]
    # Its model card comes from the model dir's records: results.json's figures, of the averages.
    with open(os.path.join(exported.stdout.strip().splitlines()[-1], "MODEL_CARD.md"), encoding="utf-8") as f:
        card = f.read()
    assert_validation_row(card_rows(card)["final, centre crop"], results["validation"])
    assert "moving averages" in card and f"from {model_dir}" in card

    # Both SavedModels, loaded in a fresh process, give the averaged model's logits.
    np.save(tmp_path / "images.npy", images)
    paths = [results["export_path"], exported.stdout.strip().splitlines()[-1]]
    logits = run_command(["-c", LOGITS_SCRIPT, str(tmp_path / "images.npy"), *paths])
    assert logits.returncode == 0, logits.stderr[-3000:]
    for got in json.loads(logits.stdout.strip().splitlines()[-1]):
        np.testing.assert_allclose(np.array(got), want, rtol=1e-4, atol=1e-4)

    # evaluate --checkpoint gives the run's final validation, and says which weights it used.
    evaluated = run_command(
        ["-m", "alexnet_tf.evaluate", f"--checkpoint={model_dir}", f"--data_dir={data_dir}"]
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert sum("moving averages of the weights" in line for line in evaluated.stderr.splitlines()) == 1
    line = next(line for line in evaluated.stdout.splitlines() if line.startswith("centre crop"))
    validation = results["validation"]
    assert f"top-1 {100 * validation['top1']:6.2f}%" in line, (line, validation)
    assert f"loss {validation['loss']:.4f}" in line, (line, validation)


def _snapshot(directory):
    """{name: (size, mtime)} of what `directory` holds."""
    paths = {name: os.path.join(directory, name) for name in sorted(os.listdir(directory))}
    return {name: (os.path.getsize(path), os.path.getmtime(path)) for name, path in paths.items()}


@pytest.mark.slow
def test_a_changed_or_bad_ema_decay_is_refused_before_anything_is_written(ema_run):
    _, data_dir, model_dir, _, _ = ema_run
    checkpoint_dir = os.path.join(model_dir, CHECKPOINT_SUBDIR)
    before, config_before = _snapshot(checkpoint_dir), _snapshot(model_dir)
    for value in ("0", "0.9"):
        result = run_command(_train_command(data_dir, model_dir, f"--ema_decay={value}", "--epochs=3"))
        assert result.returncode == 2, result.stderr[-3000:]
        assert result.stderr.strip().splitlines()[-1] == (
            f"alexnet_tf.train: error: --ema_decay={float(value)}, but the checkpoints in {checkpoint_dir} "
            "were written with --ema_decay=0.8 (they hold weight averages); nothing was changed. "
            "Re-run with --ema_decay=0.8, or use a new --model_dir"
        )
    assert "Traceback" not in result.stderr
    assert _snapshot(checkpoint_dir) == before and _snapshot(model_dir) == config_before

    bad = run_command(_train_command(data_dir, model_dir, "--ema_decay=1.5"))
    assert bad.returncode == 2, bad.stderr[-3000:]
    assert bad.stderr.strip().splitlines()[-1] == (
        "alexnet_tf.train: error: ema_decay must be in [0, 1) (0: no weight averaging; "
        "0.99 averages about the last 100 steps), got 1.5"
    )
    assert _snapshot(checkpoint_dir) == before


@pytest.mark.slow
def test_a_killed_run_resumes_its_averages_exactly(ema_run):
    root, data_dir, model_dir, _, _ = ema_run
    other = str(root / "killed")
    command = _train_command(data_dir, other, "--noexport")
    # Killed after step 5: the newest checkpoint is the epoch end at step 4; step 5 is trained again.
    killed = run_command(command, env={TEST_SELF_SIGNAL_ENV: "SIGKILL@5"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert _latest(other).endswith("ckpt-4")
    resumed = run_command(command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stderr and "at step 4" in resumed.stderr
    final, uninterrupted = _latest(other), _latest(model_dir)
    assert final.endswith("ckpt-8") and uninterrupted.endswith("ckpt-8")
    for part in (AVERAGES_PART, "model"):
        mine, theirs = checkpoint_weights(final, part), checkpoint_weights(uninterrupted, part)
        assert set(mine) == set(theirs)
        for path in mine:
            assert np.array_equal(mine[path], theirs[path]), (part, path)
