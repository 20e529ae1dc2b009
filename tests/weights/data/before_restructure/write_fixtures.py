"""Writes this folder's fixtures with the code of the current directory (a checkout of an old commit).

    git worktree add /tmp/old cba80cb && cd /tmp/old && \
        python <this repo>/tests/weights/data/before_restructure/write_fixtures.py <this folder>

tests/weights/test_compatibility.py reads them with today's code:
- every_serialisable.keras: a tiny functional model of every Keras serialisable of the package
  (InputConversion, GroupedConv2D, LocalResponseNormalization, ReplicaDropout) compiled with
  LossScaleOptimizer(MomentumSGD) and trained one step, so the optimizer's config and state are
  in the file; expected.npz: a fixed input, the model's output on it and the optimizer variables.
- checkpoint.json: the flags of a one-step `python -m alexnet_tf.train` run on tests/tiny_dataset.py's
  dataset, and the (key, shape, dtype) of every variable of its checkpoint (the checkpoint itself
  is a few hundred MB); model_spec.json: the model_spec.json that run wrote.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

OLD_REPO = os.getcwd()
sys.path[:0] = [OLD_REPO, os.path.join(OLD_REPO, "tests")]

# The flags of the one-step training run, after --data_dir and --model_dir.
TRAIN_FLAGS = [
    "--train_steps=1",
    "--batch_size=4",
    "--precision=float32",
    "--noexport",
    "--seed=0",
    "--checkpoint_every_steps=1",
]


def write_keras_file(out):
    import keras

    from alexnet_tf.layers import GroupedConv2D, InputConversion, LocalResponseNormalization, ReplicaDropout
    from alexnet_tf.optim import LossScaleOptimizer, MomentumSGD

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = InputConversion(
        input_mean=(123.68, 116.78, 103.94), channel_order="bgr", mean=(104.0, 117.0, 123.0), name="convert"
    )(inputs)
    x = GroupedConv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    x = LocalResponseNormalization(depth_radius=1, bias=1.0, alpha=1e-3, beta=0.75, name="lrn1")(x)
    x = GroupedConv2D(8, 3, groups=2, strides=(2, 2), activation="relu", name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = ReplicaDropout(0.5, seed=3, name="dropout")(x)
    outputs = keras.layers.Dense(5, name="fc")(x)
    model = keras.Model(inputs, outputs, name="every_serialisable")
    model.compile(
        optimizer=LossScaleOptimizer(
            MomentumSGD(0.01, momentum=0.9, l2=5e-4, lr_multipliers={"fc": 10.0}), initial_scale=8.0
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    images = rng.uniform(-120.0, 130.0, (4, 12, 12, 3)).astype(np.float32)
    model.train_on_batch(images, np.array([0, 1, 2, 3]))
    model.save(os.path.join(out, "every_serialisable.keras"))
    expected = {"input": images, "output": np.asarray(model(images, training=False))}
    expected.update({f"optimizer/{v.path}": np.asarray(v) for v in model.optimizer.variables})
    np.savez(os.path.join(out, "expected.npz"), **expected)


def write_checkpoint_listing(out):
    import tensorflow as tf
    from tiny_dataset import write_tiny_dataset

    work = tempfile.mkdtemp()
    try:
        data_dir = write_tiny_dataset(os.path.join(work, "data"))
        model_dir = os.path.join(work, "model")
        command = [sys.executable, "-m", "alexnet_tf.train", f"--data_dir={data_dir}"]
        subprocess.run([*command, f"--model_dir={model_dir}", *TRAIN_FLAGS], cwd=OLD_REPO, check=True)
        checkpoints = os.path.join(model_dir, "checkpoints")
        reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(checkpoints))
        dtypes, shapes = reader.get_variable_to_dtype_map(), reader.get_variable_to_shape_map()
        rows = [json.dumps([key, shapes[key], dtypes[key].name]) for key in sorted(shapes)]
        with open(os.path.join(out, "checkpoint.json"), "w") as f:  # one variable a line
            f.write(f'{{\n "train_flags": {json.dumps(TRAIN_FLAGS)},\n "variables": [\n  ')
            f.write(",\n  ".join(rows) + "\n ]\n}\n")
        shutil.copy(os.path.join(checkpoints, "model_spec.json"), os.path.join(out, "model_spec.json"))
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    os.makedirs(sys.argv[1], exist_ok=True)
    write_keras_file(sys.argv[1])
    write_checkpoint_listing(sys.argv[1])
