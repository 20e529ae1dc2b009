"""What must hold on every replica: loss-scaling decisions and dropout masks.

- An overflow (a non-finite gradient) on any one replica or worker must skip the step on all
  of them and reduce the loss scale everywhere; Keras' LossScaleOptimizer decided it from the
  first local replica's gradients before the all-reduce (issue 12).
- Dropout masks must be independent between replicas and workers (each replica's images get
  their own), yet reproducible from the seed; Keras' Dropout drew them from a mirrored seed
  variable, the same on every replica (issue 12).

The distributed tests run in subprocesses, as in tests/scenarios/test_distributed.py: logical devices
must be configured before TensorFlow starts, and MultiWorkerMirroredStrategy needs one
process per worker (here on 127.0.0.1, free ports).
"""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap

from conftest import REPO
import keras
from keras_roundtrip import assert_layer_roundtrip
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import optim
from alexnet_tf.layers import ReplicaDropout

TIMEOUT = 180  # the old optimizer deadlocks two workers on an overflow: fail, do not hang

# The trainer's own state and step (training.step.build_state, training.step.make_train_function) with loss
# scaling, float32 weights and the smallest AlexNet the trainer trains: one_weird_trick at 95x95
# (its adaptive pool needs pool5 to be at least 2x2 in a graph). Per-replica batches of
# images that are all inf stand for an overflow: their gradients are NaN.
COMMON = textwrap.dedent("""
    import json, sys
    import keras, numpy as np
    import tensorflow as tf
    from alexnet_tf.training import step as steps
    from alexnet_tf.config import TrainConfig
    from alexnet_tf.training.devices import create_strategy

    GLOBAL_BATCH, CLASSES, SIZE = 4, 3, 95

    def build(strategy, dropout_rate=0.0, seed=0):
        config = TrainConfig(variant="one_weird_trick", image_size=SIZE, batch_size=GLOBAL_BATCH,
                             dropout_rate=dropout_rate, learning_rate=0.1, lr_schedule="step",
                             precision="float32")
        keras.utils.set_random_seed(seed)  # the trainer's --seed
        state = steps.build_state(config, strategy, CLASSES, steps_per_epoch=4, total_steps=4,
                                  loss_scaling=True)
        train = steps.make_train_function(strategy, state, GLOBAL_BATCH, jit_compile=False,
                                          loss_scaling=True)
        return state, train

    def batches(context, overflow):
        # overflow[k]: whether this input pipeline's k-th per-replica batch is all inf.
        per_replica = context.get_per_replica_batch_size(GLOBAL_BATCH)
        images = np.random.default_rng(0).normal(0.0, 50.0, size=(len(overflow) * per_replica, SIZE, SIZE, 3))
        images = images.astype(np.float32)
        for k, bad in enumerate(overflow):
            if bad:
                images[k * per_replica:(k + 1) * per_replica] = np.inf
        labels = (np.arange(len(images)) % CLASSES).astype(np.int32)
        return tf.data.Dataset.from_tensor_slices((images, labels)).batch(per_replica)

    def copies(strategy, variable):
        return [v.numpy() for v in strategy.experimental_local_results(variable.value)]

    def snapshot(strategy, state):
        # [variable][replica] for the model's trainable weights.
        return [copies(strategy, v) for v in state.model.trainable_variables]

    def describe(strategy, state, before, after):
        replicas = len(after[0])
        return {
            "scale": [float(s) for s in copies(strategy, state.optimizer.dynamic_scale)],
            "iterations": int(state.optimizer.iterations.numpy()),
            "moved": max(float(np.abs(a[r] - b[r]).max()) for a, b in zip(after, before)
                         for r in range(replicas)),
            "finite": all(bool(np.isfinite(a[r]).all()) for a in after for r in range(replicas)),
            "replicas_equal": all(np.array_equal(a[0], a[r]) for a in after for r in range(replicas)),
            "fingerprint": float(sum(np.abs(a[0].astype(np.float64)).sum() for a in after)),
        }

    def overflow_steps(strategy, overflow, steps):
        # `steps` one-step train calls on batches(overflow); describe() after each.
        state, train = build(strategy)
        iterator = iter(strategy.distribute_datasets_from_function(lambda c: batches(c, overflow)))
        results, before = [], snapshot(strategy, state)
        for _ in range(steps):
            train(iterator, tf.constant(1), tf.constant(0.0))
            after = snapshot(strategy, state)
            results.append(describe(strategy, state, before, after))
            before = after
        return results

    def dropout_masks(strategy, model, jit_compile):
        # The same input on every replica through the model's own dropout6 layer in training
        # mode, twice: [step][replica] masks (1: kept); and the logits of model(training=True)
        # for an equal image on every replica, [replica].
        layer = model.get_layer("dropout6")
        ones = tf.ones([2, 4096])
        drop = tf.function(lambda x: layer(x, training=True), jit_compile=jit_compile)
        step = tf.function(lambda: strategy.run(lambda: drop(ones)))
        masks = []
        for _ in range(2):
            outputs = strategy.experimental_local_results(step())
            masks.append([(o.numpy() != 0).astype(int).ravel().tolist() for o in outputs])
        images = tf.ones([1, SIZE, SIZE, 3])
        logits = strategy.experimental_local_results(
            tf.function(lambda: strategy.run(lambda: model(images, training=True)))())
        return masks, [o.numpy().ravel().tolist() for o in logits]
""")

MIRRORED_OVERFLOW_SCRIPT = (
    textwrap.dedent("""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
""")
    + COMMON
    + textwrap.dedent("""
    strategy = create_strategy("mirrored")
    # One input pipeline: its per-replica batches go to replica 0, replica 1, replica 0, ...
    # Step 1 overflows on replica 1 only, step 2 on replica 0 only, step 3 nowhere.
    results = overflow_steps(strategy, [False, True, True, False, False, False], 3)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "steps": results}))
""")
)


@pytest.mark.slow
def test_an_overflow_on_either_mirrored_replica_skips_the_step_on_both():
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_OVERFLOW_SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    on_replica_1, on_replica_0, finite = out["steps"]
    initial = 2.0**15
    for step, scale in ((on_replica_1, initial / 2), (on_replica_0, initial / 4)):
        # Skipped everywhere: weights untouched and finite, the loss scale halved on both copies.
        assert step["moved"] == 0.0, step
        assert step["finite"] and step["replicas_equal"], step
        assert step["scale"] == [scale, scale], step
        assert step["iterations"] == 0, step
    # A finite step updates both replicas alike and keeps the (halved twice) loss scale.
    assert finite["moved"] > 1e-5, finite
    assert finite["finite"] and finite["replicas_equal"], finite
    assert finite["scale"] == [initial / 4, initial / 4], finite
    assert finite["iterations"] == 1, finite


MIRRORED_DROPOUT_SCRIPT = (
    textwrap.dedent("""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
""")
    + COMMON
    + textwrap.dedent("""
    strategy = create_strategy("mirrored")
    state, _ = build(strategy, dropout_rate=0.5, seed=int(sys.argv[1]))
    results = {}
    for jit_compile in (False, True):
        masks, logits = dropout_masks(strategy, state.model, jit_compile)
        results[str(jit_compile)] = {"masks": masks, "logits": logits}
    print(json.dumps(results))
""")
)


def _mirrored_dropout(seed):
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_DROPOUT_SCRIPT, str(seed)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _assert_independent_masks(masks):
    """masks[step][replica]: 0/1 lists of one input; different everywhere, kept at about 1/2."""
    flat = [tuple(m) for step in masks for m in step]
    assert len(set(flat)) == len(flat), "two replicas or two steps drew the same dropout mask"
    for mask in flat:
        assert 0.45 < np.mean(mask) < 0.55


@pytest.mark.slow
def test_mirrored_replicas_draw_independent_dropout_masks_reproducible_from_the_seed():
    first = _mirrored_dropout(0)
    for jit_compile in ("False", "True"):
        _assert_independent_masks(first[jit_compile]["masks"])
        logits = first[jit_compile]["logits"]
        assert logits[0] != logits[1]  # the model's two dropout layers differ per replica too
    # The dropout layers' seeds come from keras.utils.set_random_seed, as the trainer's --seed
    # sets it: a second run with the same seed draws the very same masks and logits.
    assert _mirrored_dropout(0) == first


# Runs the checks named in argv[1] ("overflow,dropout") one after the other in one cluster,
# printing one JSON line each (one pair of processes: each costs a TensorFlow start-up).
WORKER_SCRIPT = COMMON + textwrap.dedent("""
    strategy = create_strategy("multi_worker")
    worker = strategy.cluster_resolver.task_id
    for mode in sys.argv[1].split(","):
        if mode == "overflow":
            # One pipeline and one replica per worker: step 1 overflows on worker 1 only.
            results = overflow_steps(strategy, [worker == 1, False], 2)
            print(json.dumps({"mode": mode, "worker": worker, "replicas": strategy.num_replicas_in_sync,
                              "steps": results}), flush=True)
        elif mode == "dropout":
            state, _ = build(strategy, dropout_rate=0.5)
            masks, logits = dropout_masks(strategy, state.model, jit_compile=False)
            print(json.dumps({"mode": mode, "worker": worker, "masks": masks, "logits": logits}), flush=True)
""")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_two_workers(modes, tmp_path):
    """Runs WORKER_SCRIPT as worker 0 and worker 1 of a localhost cluster; returns
    {mode: [worker 0's JSON, worker 1's]}."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        )
        log = open(tmp_path / f"worker{index}.log", "w")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER_SCRIPT, modes],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        )
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"the workers did not finish in {TIMEOUT} s (one waits in a collective the other "
            f"skipped?); worker 0's log ends:\n{(tmp_path / 'worker0.log').read_text()[-2000:]}"
        )
    finally:
        for process in processes:
            process.kill()
    results = {}
    for index, process in enumerate(processes):
        assert process.returncode == 0, (index, (tmp_path / f"worker{index}.log").read_text()[-4000:])
        for line in outputs[index].splitlines():
            if line.startswith("{"):
                result = json.loads(line)
                results.setdefault(result["mode"], []).append(result)
    assert sorted(results) == sorted(modes.split(",")), results
    return results


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """Both multi-worker checks, in one pair of worker processes: {mode: [worker 0's, worker 1's]}."""
    return _run_two_workers("overflow,dropout", tmp_path_factory.mktemp("workers"))


@pytest.mark.slow
def test_an_overflow_on_one_worker_skips_the_step_on_both_workers(two_workers):
    results = two_workers["overflow"]
    assert [r["worker"] for r in results] == [0, 1]
    assert [r["replicas"] for r in results] == [2, 2]
    for result in results:
        skipped, finite = result["steps"]
        assert skipped["moved"] == 0.0 and skipped["finite"], result
        assert skipped["scale"] == [2.0**14] and skipped["iterations"] == 0, result
        assert finite["moved"] > 1e-5 and finite["finite"], result
        assert finite["scale"] == [2.0**14] and finite["iterations"] == 1, result
    # Identical weights on both workers after the skipped step and after the applied one.
    for step in range(2):
        assert results[0]["steps"][step]["fingerprint"] == results[1]["steps"][step]["fingerprint"]


@pytest.mark.slow
def test_two_workers_draw_independent_dropout_masks(two_workers):
    results = two_workers["dropout"]
    # masks[step][replica]: one local replica per worker; put both workers' side by side.
    masks = [[results[0]["masks"][step][0], results[1]["masks"][step][0]] for step in range(2)]
    _assert_independent_masks(masks)
    assert results[0]["logits"] != results[1]["logits"]


def _one_variable_step(optimizer, variable, gradient):
    @tf.function
    def step():
        optimizer.apply_gradients([(tf.constant(gradient), variable)])

    step()


def test_loss_scale_optimizer_on_one_device_skips_non_finite_steps_as_keras_does():
    variable = tf.Variable([1.0, 2.0])
    optimizer = optim.LossScaleOptimizer(optim.MomentumSGD(0.5, momentum=0.9), initial_scale=8.0)
    optimizer.build([variable])
    _one_variable_step(optimizer, variable, [np.nan, 1.0])
    assert variable.numpy().tolist() == [1.0, 2.0]
    assert float(optimizer.dynamic_scale.numpy()) == 4.0 and int(optimizer.iterations.numpy()) == 0
    _one_variable_step(optimizer, variable, [4.0, 8.0])  # scaled by 4: the gradient is [1, 2]
    np.testing.assert_allclose(variable.numpy(), [0.5, 1.0])
    assert float(optimizer.dynamic_scale.numpy()) == 4.0 and int(optimizer.iterations.numpy()) == 1


def test_loss_scale_optimizer_serialises_and_checkpoints_like_keras_own(tmp_path):
    optimizer = optim.LossScaleOptimizer(
        optim.MomentumSGD(0.1, momentum=0.9, l2=5e-4), initial_scale=64.0, dynamic_growth_steps=7
    )
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer))
    assert type(copy) is optim.LossScaleOptimizer and type(copy.inner_optimizer) is optim.MomentumSGD
    assert copy.get_config() == optimizer.get_config()

    # A checkpoint of Keras' LossScaleOptimizer restores into ours: same variables, same names.
    variable = tf.Variable([1.0, 2.0])
    keras_own = keras.optimizers.LossScaleOptimizer(optim.MomentumSGD(0.1, momentum=0.9), initial_scale=64.0)
    keras_own.build([variable])
    _one_variable_step(keras_own, variable, [64.0, -64.0])
    _one_variable_step(keras_own, variable, [np.inf, 0.0])
    path = tf.train.Checkpoint(optimizer=keras_own).write(str(tmp_path / "ckpt"))
    ours = optim.LossScaleOptimizer(optim.MomentumSGD(0.1, momentum=0.9), initial_scale=64.0)
    ours.build([tf.Variable([0.0, 0.0])])
    # Keras numbers auto-named objects ("loss_scale_optimizer_2"); the names are otherwise equal.
    unnumbered = lambda o: [re.sub(r"_\d+/", "/", v.path) for v in o.variables]  # noqa: E731
    assert unnumbered(ours) == unnumbered(keras_own)
    tf.train.Checkpoint(optimizer=ours).read(path).assert_existing_objects_matched()
    for got, expected in zip(ours.variables, keras_own.variables):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
    assert float(ours.dynamic_scale.numpy()) == 32.0


@pytest.mark.parametrize("rate", [0.5, 0.2])
@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_replica_dropout_on_one_device_drops_at_its_rate_and_scales_what_it_keeps(rate, mode):
    keras.utils.set_random_seed(0)
    layer = ReplicaDropout(rate)
    call = lambda x: layer(x, training=True)  # noqa: E731
    if mode != "eager":
        call = tf.function(call, jit_compile=mode == "xla")
    ones = tf.ones([200, 1000])
    first, second = call(ones).numpy(), call(ones).numpy()
    for output in (first, second):
        kept = output != 0
        assert abs(kept.mean() - (1 - rate)) < 0.01
        np.testing.assert_allclose(output[kept], 1 / (1 - rate), rtol=1e-6)
        assert abs(output.mean() - 1.0) < 0.02
    assert (first != second).any()  # a new mask every call
    np.testing.assert_array_equal(layer(ones, training=False), ones)
    np.testing.assert_array_equal(ReplicaDropout(0.0)(ones, training=True), ones)


def test_replica_dropout_masks_follow_the_seed():
    def masks(seed):
        keras.utils.set_random_seed(seed)
        layer = ReplicaDropout(0.5)
        return [layer(tf.ones([64, 64]), training=True).numpy() for _ in range(3)]

    first = masks(0)
    for again, expected in zip(masks(0), first):
        np.testing.assert_array_equal(again, expected)
    assert not np.array_equal(masks(1)[0], first[0])
    # An explicit seed fixes the masks whatever the global one.
    keras.utils.set_random_seed(5)
    explicit = ReplicaDropout(0.5, seed=3)(tf.ones([64, 64]), training=True)
    keras.utils.set_random_seed(6)
    np.testing.assert_array_equal(ReplicaDropout(0.5, seed=3)(tf.ones([64, 64]), training=True), explicit)


def test_replica_dropout_noise_shape_shares_the_mask_along_its_none_free_axes():
    layer = ReplicaDropout(0.5, noise_shape=(None, 1, 8), seed=1)
    output = layer(tf.ones([3, 5, 8]), training=True).numpy()
    assert (output == output[:, :1, :]).all() and 0 < (output != 0).mean() < 1


def test_replica_dropout_serialisation_roundtrip(tmp_path):
    assert_layer_roundtrip(
        ReplicaDropout, {"rate": 0.3, "noise_shape": (None, 1, 5), "seed": 7}, (2, 4, 5), tmp_path
    )
    assert keras.saving.get_registered_name(ReplicaDropout) == "alexnet_tf>ReplicaDropout"


def test_models_saved_with_keras_dropout_still_load(tmp_path):
    # What a .keras file written before ReplicaDropout holds: keras.layers.Dropout layers.
    inputs = keras.Input((16,))
    x = keras.layers.Dense(8, activation="relu", name="fc6")(inputs)
    x = keras.layers.Dropout(0.5, name="dropout6")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc8")(x))
    model.save(tmp_path / "old.keras")
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    assert type(loaded.get_layer("dropout6")) is keras.layers.Dropout
    x = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))


@pytest.mark.parametrize("variant", ["paper", "one_weird_trick"])
def test_alexnet_drops_out_with_replica_dropout(variant):
    from alexnet_tf.model import build_alexnet

    model = build_alexnet(3, variant, dropout_rate=0.5, kernel_initializer="zeros")
    for name in ("dropout6", "dropout7"):
        layer = model.get_layer(name)
        assert type(layer) is ReplicaDropout and layer.rate == 0.5
