"""Files written before the restructure into stage folders still load: `.keras` files, training
checkpoints and model dirs.

The fixtures in tests/weights/data/before_restructure/ were written by the code of commit cba80cb
(the last one before the move), with its write_fixtures.py run from a worktree of that commit:

    git worktree add /tmp/old cba80cb && cd /tmp/old && \
        python <repo>/tests/weights/data/before_restructure/write_fixtures.py \
        <repo>/tests/weights/data/before_restructure

- every_serialisable.keras + expected.npz: a tiny model of every Keras serialisable the package
  registers (InputConversion, GroupedConv2D, LocalResponseNormalization, ReplicaDropout; the
  LossScaleOptimizer and MomentumSGD it was compiled with, after one training step), its output
  on a fixed input and its optimizer variables. It must load as users load it: in a fresh
  process, after `import alexnet_tf`.
- checkpoint.json + model_spec.json: what a one-step `python -m alexnet_tf.train` run of the
  paper's AlexNet wrote (its checkpoint is a few hundred MB, so only the key, shape and dtype of
  every variable are kept: a checkpoint restores by these keys). Today's run of the same command
  must write the same variables, and a model dir holding the old model_spec.json must load and
  resume. That today's code resumes exactly from its own checkpoints is
  tests/scenarios/test_resume.py's subject.
"""

import json
import os
import shutil

from conftest import run_command
import numpy as np
import pytest
import tensorflow as tf
from tiny_dataset import write_tiny_dataset

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "before_restructure")
TIMEOUT = 600

LOAD_KERAS_FILE = """
import json, sys
import numpy as np
import alexnet_tf  # registers the package's serialisables, as a user's script would
import keras
from alexnet_tf.weights.checkpointing import load_model

path, expected = sys.argv[1], np.load(sys.argv[2])
model = keras.saving.load_model(path)
checked, _ = load_model(path)  # the commands' loader: also checks that every weight was read
optimizer = model.optimizer
inner = optimizer.inner_optimizer
# In order, by name: a variable's path depends on when Keras built the optimizer, not on the file.
written = [k for k in expected.files if k.startswith("optimizer/")]
report = {
    "layers": {layer.name: f"{type(layer).__module__}.{type(layer).__name__}" for layer in model.layers},
    "optimizer": f"{type(optimizer).__module__}.{type(optimizer).__name__}",
    "inner": f"{type(inner).__module__}.{type(inner).__name__}",
    "inner_config": {k: inner.get_config()[k] for k in ("momentum", "l2", "lr_multipliers")},
    "output": np.asarray(model(expected["input"], training=False)).tolist(),
    "checked_output": np.asarray(checked(expected["input"], training=False)).tolist(),
    "variables": [v.name for v in optimizer.variables],
    "variable_differences": {
        v.name: float(np.max(np.abs(np.asarray(v) - expected[k]))) if len(written) == len(optimizer.variables)
        else None for v, k in zip(optimizer.variables, written)
    },
}
model.train_on_batch(expected["input"], np.array([0, 1, 2, 3]))  # the restored optimizer steps on
report["iterations_after_a_step"] = int(optimizer.iterations)
print(json.dumps(report))
"""


def test_a_keras_file_written_before_the_restructure_loads_after_import_alexnet_tf():
    keras_path = os.path.join(FIXTURES, "every_serialisable.keras")
    expected_path = os.path.join(FIXTURES, "expected.npz")
    result = run_command(["-c", LOAD_KERAS_FILE, keras_path, expected_path], timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    expected = np.load(expected_path)
    assert report["layers"] == {
        "input_layer": "keras.src.layers.core.input_layer.InputLayer",
        "convert": "alexnet_tf.layers.InputConversion",
        "conv1": "alexnet_tf.layers.GroupedConv2D",
        "lrn1": "alexnet_tf.layers.LocalResponseNormalization",
        "conv2": "alexnet_tf.layers.GroupedConv2D",
        "flatten": "keras.src.layers.reshaping.flatten.Flatten",
        "dropout": "alexnet_tf.layers.ReplicaDropout",
        "fc": "keras.src.layers.core.dense.Dense",
    }
    assert report["optimizer"] == "alexnet_tf.optim.LossScaleOptimizer"
    assert report["inner"] == "alexnet_tf.optim.MomentumSGD"
    assert report["inner_config"] == {"momentum": 0.9, "l2": 5e-4, "lr_multipliers": {"fc": 10.0}}
    # The same weights on the same input; a different oneDNN or TensorFlow kernel only rounds.
    np.testing.assert_allclose(report["output"], expected["output"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(report["checked_output"], expected["output"], rtol=1e-5, atol=1e-5)
    # The optimizer state is read back as written: the step count, the loss scale and every momentum.
    assert report["variables"] == [k.rsplit("/", 1)[1] for k in expected.files if k.startswith("optimizer/")]
    differences = report["variable_differences"]
    assert all(diff == 0.0 for diff in differences.values()), differences
    assert any(np.any(expected[k] != 0) for k in expected.files if k.endswith("_momentum"))
    assert report["iterations_after_a_step"] == 2


def _train(data_dir, model_dir, flags):
    return run_command(
        ["-m", "alexnet_tf.train", f"--data_dir={data_dir}", f"--model_dir={model_dir}", *flags],
        timeout=TIMEOUT,
    )


def _variables(checkpoint):
    reader = tf.train.load_checkpoint(checkpoint)
    dtypes, shapes = reader.get_variable_to_dtype_map(), reader.get_variable_to_shape_map()
    return {key: (list(shapes[key]), dtypes[key].name) for key in shapes}


@pytest.mark.slow
def test_a_training_checkpoint_and_model_dir_from_before_the_restructure_still_restore_and_resume(tmp_path):
    with open(os.path.join(FIXTURES, "checkpoint.json")) as f:
        before = json.load(f)
    data_dir = write_tiny_dataset(tmp_path / "data")
    model_dir = str(tmp_path / "model")
    result = _train(data_dir, model_dir, before["train_flags"])
    assert result.returncode == 0, result.stderr[-4000:]
    checkpoints = os.path.join(model_dir, "checkpoints")
    latest = tf.train.latest_checkpoint(checkpoints)

    # The same variables under the same keys, shapes and dtypes: an old checkpoint restores.
    old = {key: (shape, dtype) for key, shape, dtype in before["variables"]}
    new = _variables(latest)
    differences = [
        f"{key}: before {old.get(key)}, now {new.get(key)}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]
    assert not differences, "a checkpoint written before the restructure would not restore:\n" + "\n".join(
        differences
    )

    # The model dir as the old code left it: its model_spec.json beside the checkpoint.
    shutil.copy(os.path.join(FIXTURES, "model_spec.json"), os.path.join(checkpoints, "model_spec.json"))
    from alexnet_tf.weights.checkpointing import load_model

    model, labels_dir = load_model(model_dir)
    reader = tf.train.load_checkpoint(latest)
    for name in ("conv2", "fc6", "fc8"):
        layer = model.get_layer(name)
        np.testing.assert_array_equal(
            np.asarray(layer.kernel), reader.get_tensor(f"model/{name}.Skernel/.ATTRIBUTES/VARIABLE_VALUE")
        )
    assert model.output.shape[-1] == 5 and labels_dir == model_dir
    del model

    # ... and a run resumes from it.
    flags = [f for f in before["train_flags"] if not f.startswith("--train_steps")] + ["--train_steps=2"]
    result = _train(data_dir, model_dir, flags)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Resuming from {latest} at step 1" in result.stderr
    assert tf.train.latest_checkpoint(checkpoints).endswith("ckpt-2")
