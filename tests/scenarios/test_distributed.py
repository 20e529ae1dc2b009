"""Tests of distributed training: MirroredStrategy over 2 logical CPUs and 2 worker processes.

Both run in subprocesses: logical devices must be configured before TensorFlow starts (one
process serves both 2-CPU checks), and MultiWorkerMirroredStrategy needs one process per
worker (here on 127.0.0.1, free ports).
"""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap

from conftest import REPO
import pytest
from tiny_dataset import write_tiny_dataset

TIMEOUT = 300

# Both checks on 2 logical CPUs run in this one process (the devices are set once, before
# TensorFlow starts), each on its own data and printing its own JSON line: first how many
# batches --eval_steps takes, then one replica against two.
MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from alexnet_tf import train
    from alexnet_tf.training import inputs
    from alexnet_tf.training import step as steps
    from alexnet_tf.config import ConfigError, TrainConfig
    from alexnet_tf.training.devices import create_strategy

    def count_eval_batches(data_dir):
        strategy = create_strategy("mirrored")
        config = TrainConfig(data_dir=data_dir, model_dir="/unused", batch_size=4, eval_steps=3)
        input_fns = inputs.make_input_fns(config, inputs.describe_data(config), seed=0)
        batches = images = 0
        for _, labels in strategy.distribute_datasets_from_function(input_fns.evaluation):
            batches += 1
            images += sum(int(tf.shape(l)[0]) for l in strategy.experimental_local_results(labels))
        return {"replicas": strategy.num_replicas_in_sync, "steps": batches, "images": images}

    print(json.dumps({"eval_steps": count_eval_batches(sys.argv[3])}), flush=True)

    GLOBAL_BATCH, CLASSES = 4, 5
    # A rate large enough that a wrongly scaled gradient would show far above the tolerance.
    config = TrainConfig(batch_size=GLOBAL_BATCH, dropout_rate=0.0, learning_rate=0.2, hidden_bias=0.1,
                         lr_schedule="step", precision="float32")
    rng = np.random.default_rng(0)
    images = rng.normal(0.0, 50.0, size=(8, 224, 224, 3)).astype(np.float32)
    labels = rng.integers(0, CLASSES, size=8).astype(np.int32)

    def batches(count, context):
        # One pipeline per worker; its consecutive per-replica batches go to the replicas
        # in turn, so 2 replicas see exactly the global batches of 1 replica.
        data = tf.data.Dataset.from_tensor_slices((images[:count], labels[:count]))
        return data.batch(context.get_per_replica_batch_size(GLOBAL_BATCH))

    def train_two_steps(strategy):
        keras.utils.set_random_seed(0)
        state = steps.build_state(config, strategy, CLASSES, steps_per_epoch=2, total_steps=2,
                                  loss_scaling=False)
        initial = [v.numpy() for v in state.model.trainable_variables]
        train_fn = steps.make_train_function(strategy, state, GLOBAL_BATCH, jit_compile=False,
                                             loss_scaling=False)
        iterator = iter(strategy.distribute_datasets_from_function(lambda c: batches(8, c).repeat()))
        sums = train_fn(iterator, tf.constant(2), tf.constant(0.0)).numpy()
        eval_fn = steps.make_eval_function(strategy, state.model, ten_crop=False)
        # 5 images: the last global batch leaves the second replica an empty batch.
        metrics = steps.run_evaluation(strategy, eval_fn, lambda c: batches(5, c))
        return initial, [v.numpy() for v in state.model.trainable_variables], sums, metrics

    one = train_two_steps(tf.distribute.get_strategy())
    mirrored = create_strategy("mirrored")
    two = train_two_steps(mirrored)
    try:
        train.run(TrainConfig(data_dir=sys.argv[1], model_dir=sys.argv[2], batch_size=3,
                              distribution="mirrored"))
        error = ""
    except ConfigError as e:
        error = str(e)
    print(json.dumps({"mirrored": {
        "replicas": [1, mirrored.num_replicas_in_sync, create_strategy("auto").num_replicas_in_sync],
        "initial_diff": max(float(np.abs(a - b).max()) for a, b in zip(one[0], two[0])),
        "final_diff": max(float(np.abs(a - b).max()) for a, b in zip(one[1], two[1])),
        "moved": max(float(np.abs(a - b).max()) for a, b in zip(one[0], one[1])),
        "sums": [one[2].tolist(), two[2].tolist()],
        "eval": [one[3], two[3]],
        "error": error,
    }}))
""")


@pytest.fixture(scope="module")
def two_logical_cpus(tmp_path_factory):
    """{"eval_steps": ..., "mirrored": ...}: the JSON lines of one run of MIRRORED_SCRIPT."""
    root = tmp_path_factory.mktemp("mirrored")
    data_dir = write_tiny_dataset(root / "data")
    eval_data_dir = write_tiny_dataset(root / "eval_data", validation_records=16)
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, data_dir, str(root / "model"), eval_data_dir],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = {}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            out.update(json.loads(line))
    return out


@pytest.mark.slow
def test_two_mirrored_replicas_match_one_replica_with_the_same_global_batch(two_logical_cpus):
    out = two_logical_cpus["mirrored"]
    assert out["replicas"] == [1, 2, 1]  # "auto" keeps one device without GPUs or TF_CONFIG
    assert out["initial_diff"] == 0.0
    assert out["moved"] > 1e-3  # the steps moved the weights 10x more than the tolerance
    assert out["final_diff"] < 1e-4
    one, two = out["sums"]
    assert one[4] == two[4] == 8  # images seen: 2 steps of the global batch of 4
    assert one[0] == pytest.approx(two[0], rel=1e-4)  # summed cross-entropy
    assert out["eval"][0]["count"] == out["eval"][1]["count"] == 5
    assert out["eval"][0]["loss"] == pytest.approx(out["eval"][1]["loss"], rel=1e-4)
    assert "global batch_size 3 is not divisible by the 2 replicas" in out["error"]


@pytest.mark.slow
def test_eval_steps_counts_global_batches_on_two_mirrored_replicas(two_logical_cpus):
    # --eval_steps=3 at a global batch of 4: 12 of the 16 images (the per-replica take gave 6).
    assert two_logical_cpus["eval_steps"] == {"replicas": 2, "steps": 3, "images": 12}


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _fingerprint(log):
    match = re.search(r"final weights fingerprint (\S+) (\S+)", log)
    assert match, log[-3000:]
    return match.groups()


@pytest.mark.slow
def test_two_workers_train_identical_weights_and_only_the_chief_writes(tmp_path):
    # 3 validation shards over 2 workers: one worker has more batches than the other.
    data_dir = write_tiny_dataset(
        tmp_path / "data", train_records=8, validation_records=9, validation_shards=3
    )
    model_dir = tmp_path / "model"
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes, temp_dirs = [], []
    for index in range(2):
        temp_dir = tmp_path / f"tmp{index}"
        temp_dir.mkdir()
        temp_dirs.append(temp_dir)
        env = dict(
            os.environ,
            TMPDIR=str(temp_dir),
            TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        )
        command = [
            sys.executable,
            "-m",
            "alexnet_tf.train",
            f"--data_dir={data_dir}",
            f"--model_dir={model_dir}",
            "--batch_size=4",
            "--train_steps=2",
            "--steps_per_epoch=2",
            "--log_every_steps=1",
            "--precision=float32",
            "--seed=0",
            # The cheapest whole AlexNet: the check is of the workers' coordination, not the layers.
            "--variant=one_weird_trick",
            "--image_size=95",
        ]
        processes.append(
            subprocess.Popen(
                command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    logs = []
    try:
        for process in processes:
            logs.append(process.communicate(timeout=TIMEOUT)[0])
    finally:
        for process in processes:
            process.kill()
    for index, process in enumerate(processes):
        assert process.returncode == 0, (index, logs[index][-4000:])
        assert "2 replica(s)" in logs[index]
    assert _fingerprint(logs[0]) == _fingerprint(logs[1])
    assert "validation top-1" in logs[1] and "(9 images)" in logs[0]  # uneven shards evaluated whole

    # Only the chief (worker 0) wrote into the model dir; worker 1's temporary dirs are gone.
    assert sorted(os.listdir(model_dir / "export")) == ["1"]
    assert os.path.exists(model_dir / "export" / "1" / "saved_model.pb")
    assert sorted(f for f in os.listdir(model_dir / "checkpoints") if f.startswith("ckpt-")) == [
        "ckpt-2.data-00000-of-00001",
        "ckpt-2.index",
    ]
    with open(model_dir / "results.json") as f:
        assert json.load(f)["num_replicas"] == 2
    assert os.listdir(temp_dirs[1]) == []
    assert "saved checkpoint " + str(temp_dirs[1]) in logs[1]
