"""Exact resume: a run killed with SIGKILL (or preempted) and re-run ends bit-identical to an unbroken one.

The end-to-end test runs `python -m alexnet_tf.train` as fresh processes on 8 generated
images (2 steps per epoch, 2 epochs, a checkpoint after every step) with the paper
augmentation and dropout, on one device and under MirroredStrategy over 2 logical CPUs, and
interrupts them with real signals at chosen steps (the trainer's test-only
ALEXNET_TF_TEST_SELF_SIGNAL, training/preemption.py). One device: SIGKILL after step 2 (before
its checkpoint) resumes from step 1, mid-epoch; SIGKILL after step 3 resumes from step 2, the
end of epoch 1; a third run finishes. Two replicas: SIGKILL after step 2 resumes from step 1;
SIGTERM after step 2 preempts at step 3 (exit 143); a third run finishes. The final
checkpoints must agree with those of uninterrupted runs variable by variable, bit for bit,
and so must results.json and every TensorBoard scalar but throughput. The one-device chain
runs without --seed (its first process draws a seed, the later ones must continue with it)
and its uninterrupted twin with --seed set to that seed; the mirrored runs have --seed and
--deterministic. Every run has --noexport (nothing here reads a SavedModel), and one test
checks what that flag promises on the uninterrupted one-device run.

The in-process test checks the data stream itself: every epoch visits every image once, in
an order that depends on the epoch, and a stream started at any step continues the
uninterrupted one exactly, with one or two input pipelines.
"""

import concurrent.futures
import json
import logging
import os
import re
import signal
import subprocess
import sys

from absl import flags
from conftest import REPO
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
import tensorflow as tf
from tfrecord_fixtures import make_example, natural_image
from tiny_dataset import write_tiny_dataset

from alexnet_tf import export
from alexnet_tf.config import ConfigError
from alexnet_tf.data import pipelines
from alexnet_tf.training.preemption import TEST_SELF_SIGNAL_ENV
from alexnet_tf.weights.checkpointing import Checkpointer

TIMEOUT = 600
# 8 images at batch 4: 2 steps per epoch, 4 steps; a checkpoint after every step; the step
# schedule divides the rate by 10 after epoch 1. one_weird_trick at 95 px is the smallest
# AlexNet the trainer trains; its dropout (0.5) and the paper's crop, flip and lighting are on.
# No SavedModel (--noexport): nothing here reads one, and each of the 7 runs saves ~10 CPU s.
FLAGS = [
    "--variant=one_weird_trick",
    "--image_size=95",
    "--batch_size=4",
    "--epochs=2",
    "--lr_schedule=step",
    "--lr_decay_epochs=1",
    "--log_every_steps=1",
    "--checkpoint_every_steps=1",
    "--keep_checkpoints=1",
    "--precision=float32",
    "--noexport",
]
MIRRORED = ["--distribution=mirrored", "--seed=3", "--deterministic"]
# `python -m alexnet_tf.train` with two logical CPU devices (configured before TensorFlow starts).
TWO_CPUS = (
    "import runpy, sys, tensorflow as tf; "
    "cpu = tf.config.list_physical_devices('CPU')[0]; "
    "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2); "
    "runpy.run_module('alexnet_tf.train', run_name='__main__', alter_sys=True)"
)
TRAIN_SCALARS = ("loss", "total_loss", "top1", "top5", "learning_rate")
VALIDATION_SCALARS = ("loss", "top1", "top5")


def _train(data_dir, model_dir, *extra, self_signal=None, two_cpus=False):
    """Runs the trainer to its end, or until it sends itself `self_signal` ("SIGKILL@2")."""
    args = [f"--data_dir={data_dir}", f"--model_dir={model_dir}", *FLAGS, *extra]
    command = (
        [sys.executable, "-c", TWO_CPUS, *args]
        if two_cpus
        else [sys.executable, "-m", "alexnet_tf.train", *args]
    )
    env = dict(os.environ)
    env.pop(TEST_SELF_SIGNAL_ENV, None)
    if self_signal:
        env[TEST_SELF_SIGNAL_ENV] = self_signal
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"one_device" | "mirrored": (uninterrupted run's model dir, interrupted run's),
    "noexport": (data dir, the one-device uninterrupted run's model dir, its CompletedProcess)}."""
    root = tmp_path_factory.mktemp("resume")
    data_dir = write_tiny_dataset(root / "data", train_records=8, validation_records=4, num_classes=3)
    one, two = {k: str(root / f"one_{k}") for k in "ui"}, {k: str(root / f"two_{k}") for k in "ui"}

    def one_device_chain():
        # No --seed: the first process draws one, which every later one must continue with.
        first = _train(data_dir, one["i"], self_signal="SIGKILL@2")
        seed = int(re.search(r"chief: seed (\d+) \(kept in the checkpoints", first.stderr).group(1))
        uninterrupted = pool.submit(_train, data_dir, one["u"], f"--seed={seed}")
        return [
            first,
            _train(data_dir, one["i"], self_signal="SIGKILL@3"),
            _train(data_dir, one["i"]),
            uninterrupted.result(),
        ]

    def mirrored_chain():
        return [
            _train(data_dir, two["i"], *MIRRORED, self_signal="SIGKILL@2", two_cpus=True),
            _train(data_dir, two["i"], *MIRRORED, self_signal="SIGTERM@2", two_cpus=True),
            _train(data_dir, two["i"], *MIRRORED, two_cpus=True),
        ]

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        one_chain = pool.submit(one_device_chain)
        two_uninterrupted = pool.submit(_train, data_dir, two["u"], *MIRRORED, two_cpus=True)
        two_chain = pool.submit(mirrored_chain)
        killed, killed_at_boundary, finished, uninterrupted = one_chain.result()
        two_killed, preempted, two_finished = two_chain.result()
        two_uninterrupted = two_uninterrupted.result()
    for result in (uninterrupted, two_uninterrupted, finished, two_finished):
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
    for result in (killed, killed_at_boundary, two_killed):
        assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]

    def resumed(result, model_dir, step, epoch):
        path = os.path.join(model_dir, "checkpoints", f"ckpt-{step}")
        return f"Resuming from {path} at step {step} (epoch {epoch})" in result.stderr

    # SIGKILL after step 2, before its checkpoint: the resume starts from step 1, mid-epoch.
    assert resumed(killed_at_boundary, one["i"], 1, 0), killed_at_boundary.stderr[-3000:]
    assert resumed(preempted, two["i"], 1, 0), preempted.stderr[-3000:]
    # SIGKILL after step 3: from step 2, whose checkpoint the end of epoch 1 wrote.
    assert resumed(finished, one["i"], 2, 1), finished.stderr[-3000:]
    # SIGTERM after step 2: the epoch ends, step 3 trains, its checkpoint is written, exit 143.
    assert preempted.returncode == 143, preempted.stderr[-3000:]
    path = os.path.join(two["i"], "checkpoints", "ckpt-3")
    assert "preempted (signal 15)" in preempted.stderr
    assert f"checkpoint {path} at step 3; re-run the same command to resume" in preempted.stderr
    assert "Traceback" not in preempted.stderr
    assert resumed(two_finished, two["i"], 3, 1), two_finished.stderr[-3000:]
    return {
        "one_device": (one["u"], one["i"]),
        "mirrored": (two["u"], two["i"]),
        "noexport": (data_dir, one["u"], uninterrupted),
    }


def _checkpoint(model_dir):
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    reader = tf.train.load_checkpoint(path)
    # save_counter counts this model dir's saves, which interruptions add to: not training state.
    names = [
        name
        for name, _ in tf.train.list_variables(path)
        if name not in ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE")
    ]
    return path, {name: reader.get_tensor(name) for name in names}


def _scalars(log_dir, tags):
    """{(tag, step): {float32 bit patterns written}} over every events file in `log_dir`."""
    accumulator = event_accumulator.EventAccumulator(log_dir, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    values = {}
    for tag in tags:
        for event in accumulator.Tensors(tag):
            value = np.asarray(tf.make_ndarray(event.tensor_proto), np.float32)
            values.setdefault((tag, event.step), set()).add(value.tobytes())
    return values


def _read_results(model_dir):
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    assert results.pop("export_path") == ""  # --noexport
    # Names the model dir, which differs; and the throughput.
    for key in ("model_dir", "checkpoint", "export_skipped", "images_per_sec"):
        results.pop(key)
    results["validation"].pop("images_per_sec")
    return results


@pytest.mark.slow
@pytest.mark.parametrize("name, replicas", [("one_device", 1), ("mirrored", 2)])
def test_killed_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(runs, name, replicas):
    uninterrupted, interrupted = runs[name]
    path_u, expected = _checkpoint(uninterrupted)
    path_i, actual = _checkpoint(interrupted)
    assert os.path.basename(path_u) == os.path.basename(path_i) == "ckpt-4"
    assert sorted(actual) == sorted(expected)
    # Weights, momentum slots, iterations, plateau, step, epoch, the seed, dropout generators.
    assert (
        any(variable.startswith("random/dropout") for variable in expected)
        and "seed/.ATTRIBUTES/VARIABLE_VALUE" in expected
    )
    different = [
        n
        for n in expected
        if expected[n].dtype != actual[n].dtype or not np.array_equal(expected[n], actual[n])
    ]
    assert not different
    results = _read_results(interrupted)
    assert results == _read_results(uninterrupted)
    assert results["num_replicas"] == replicas and results["global_step"] == 4
    for split, tags in (("train", TRAIN_SCALARS), ("validation", VALIDATION_SCALARS)):
        reference, resumed = (_scalars(os.path.join(d, split), tags) for d in (uninterrupted, interrupted))
        assert reference and sorted(resumed) == sorted(reference), split
        # Steps logged twice (before a kill and after the resume) hold the same value twice.
        assert all(len(v) == 1 for v in reference.values()) and resumed == reference, split


@pytest.mark.slow
def test_noexport_writes_no_saved_model_and_says_how_to_write_one(runs):
    """Every run here has --noexport: no export dir, and results.json, the log and the report's
    last line name the `python -m alexnet_tf.export` command that writes the SavedModel later."""
    data_dir, model_dir, result = runs["noexport"]
    assert not os.path.exists(os.path.join(model_dir, "export"))
    assert "Exported" not in result.stderr
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    assert results["export_path"] == ""
    command = (
        f"python -m alexnet_tf.export --checkpoint={model_dir} "
        f"--export_dir={os.path.join(model_dir, 'export')} --labels={os.path.join(data_dir, 'labels.txt')}"
    )
    skipped = f"--noexport: no SavedModel was written; `{command}` writes the one this run would have"
    assert results["export_skipped"].startswith(skipped)
    assert skipped in result.stderr  # the log
    assert result.stdout.strip().splitlines()[-1] == f"SavedModel:       none: {results['export_skipped']}"
    # The command it names is one the export command takes.
    flag_values = flags.FlagValues()
    export.define_flags(flag_values)
    flag_values(command.split()[2:])
    assert flag_values.checkpoint == model_dir and flag_values.labels.endswith("labels.txt")


def test_a_checkpoint_without_the_newer_parts_still_resumes(tmp_path, caplog):
    step, seed = tf.Variable(7, dtype=tf.int64), tf.Variable(5, dtype=tf.int64)
    tf.train.Checkpoint(step=step).save(str(tmp_path / "ckpt"))  # as written before the seed was kept
    step.assign(0)
    checkpointer = Checkpointer(tf.train.Checkpoint(step=step, seed=seed), str(tmp_path), True, 1)
    with pytest.raises(ConfigError, match="cannot resume from"):
        checkpointer.restore_latest()  # a part that is not optional must be there
    checkpointer.optional = ("seed",)
    with caplog.at_level(logging.WARNING):
        assert checkpointer.restore_latest() == str(tmp_path / "ckpt-1")
    assert (int(step.numpy()), int(seed.numpy())) == (7, 5)
    assert "without 'seed': resuming without them" in caplog.text


# ----------------------------------------------------------------------------- the data stream


def _write_indexed_shards(directory, counts):
    """Shards of 40 x 52 JPEGs labelled with their indices 0..N-1 (a label names its image).

    Returns:
      {shard file name: records}, as the converter's manifest lists them.
    """
    rng, index, shard_records = np.random.default_rng(0), 0, {}
    for shard, count in enumerate(counts):
        name = f"train-{shard:05d}-of-{len(counts):05d}"
        with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
            for _ in range(count):
                jpeg = tf.io.encode_jpeg(natural_image(rng, 40, 52)).numpy()
                writer.write(
                    make_example(jpeg, index, 40, 52, "n0", "x", f"{index}.JPEG").SerializeToString()
                )
                index += 1
        shard_records[name] = count
    return shard_records


def _batches(directory, shard_records, steps, batch_size=4, **kwargs):
    """`steps` batches (images, labels) of make_dataset's training stream, as numpy arrays."""
    dataset = pipelines.make_dataset(
        os.path.join(directory, "train-*"),
        batch_size,
        True,
        image_size=32,
        resize_shorter=40,
        label_offset=0,
        num_classes=sum(shard_records.values()),
        seed=11,
        shuffle_buffer_size=5,
        cycle_length=2,
        shard_records=shard_records,
        **kwargs,
    )
    return [(images.numpy(), labels.numpy()) for images, labels in dataset.take(steps)]


def test_every_epoch_visits_each_image_once_and_a_stream_started_at_any_step_continues_exactly(tmp_path):
    # Shards of unequal sizes, read 2 at a time, shuffled in windows of 5 (not dividing them).
    shards = _write_indexed_shards(tmp_path, [7, 5, 5, 7])
    num_images = sum(shards.values())
    steps_per_epoch = num_images // 4
    stream = _batches(tmp_path, shards, 2 * steps_per_epoch + 1)
    epochs = [
        np.concatenate([labels for _, labels in stream[e * steps_per_epoch : (e + 1) * steps_per_epoch]])
        for e in range(2)
    ]
    for labels in epochs:
        assert sorted(labels) == list(range(num_images))  # each image exactly once per epoch
    assert epochs[0].tolist() != epochs[1].tolist()  # in an order of its own
    for start in (3, steps_per_epoch + 2):  # in epoch 0 (and on into epoch 1), in epoch 1
        resumed = _batches(tmp_path, shards, len(stream) - start, start_step=start)
        for (images, labels), (images_r, labels_r) in zip(stream[start:], resumed):
            np.testing.assert_array_equal(labels_r, labels)
            np.testing.assert_array_equal(images_r, images)  # the same crop, flip and lighting

    # Two input pipelines (workers) at a global batch of 4: each owns half the shards; together
    # they take every image once per epoch, and each resumes its own stream.
    shares = []
    for worker in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2
        )
        own = _batches(tmp_path, shards, 2 * steps_per_epoch, input_context=context)
        assert all(len(labels) == 2 for _, labels in own)  # per-replica batches
        shares.append(np.concatenate([labels for _, labels in own[:steps_per_epoch]]))
    start = steps_per_epoch - 1
    resumed = _batches(tmp_path, shards, len(own) - start, input_context=context, start_step=start)
    np.testing.assert_array_equal(
        np.concatenate([labels for _, labels in resumed]),
        np.concatenate([labels for _, labels in own[start:]]),
    )  # worker 1's
    assert sorted(np.concatenate(shares)) == list(range(num_images))
    # Unequal shares (shards 0 and 2: 13 images, 1 and 3: 11): every worker stops with the
    # smaller share's full steps, of 2 images each.
    assert pipelines.training_steps_per_epoch([7, 4, 6, 7], 4, num_pipelines=2) == 11 // 2
    assert pipelines.training_steps_per_epoch([7, 4, 6, 7], 4) == 24 // 4


def _context(pipelines, pipeline):
    return tf.distribute.InputContext(
        num_input_pipelines=pipelines, input_pipeline_id=pipeline, num_replicas_in_sync=pipelines
    )


def _labels(batches):
    return np.concatenate([labels for _, labels in batches]) if batches else np.zeros([0], int)


@pytest.mark.parametrize(
    "before, after",
    [
        ((4, 1), (8, 1)),  # a bigger global batch
        ((8, 1), (4, 1)),  # a smaller one
        ((4, 2), (4, 1)),  # fewer input pipelines (workers) after a preemption
        ((4, 1), (6, 2)),  # more of them, and another batch
    ],
)
def test_a_stream_resumed_with_another_batch_or_pipelines_continues_the_epoch_at_its_unseen_images(
    tmp_path, before, after
):
    """(global batch, input pipelines) before and after the resume: the images of the epoch seen
    before it and after it are each image at most once, all but less than a step per pipeline."""
    shards = _write_indexed_shards(tmp_path, [7, 5, 5, 7])
    num_images = sum(shards.values())
    (batch, streams), (new_batch, new_pipelines) = before, after
    steps = 2
    seen = _labels(
        [
            b
            for p in range(streams)
            for b in _batches(tmp_path, shards, steps, batch_size=batch, input_context=_context(streams, p))
        ]
    )
    position = pipelines.position_of_step(steps, list(shards.values()), batch, streams)
    assert (position.epoch, position.images) == (0, steps * batch) == (0, len(seen))
    left = position.steps_left(new_batch, new_pipelines)
    rest = [
        _batches(
            tmp_path,
            shards,
            left + pipelines.training_steps_per_epoch(list(shards.values()), new_batch, new_pipelines),
            batch_size=new_batch,
            input_context=_context(new_pipelines, p),
            position=position,
        )
        for p in range(new_pipelines)
    ]
    epoch = np.concatenate([seen, *(_labels(r[:left]) for r in rest)])
    assert len(epoch) == position.images + left * new_batch
    assert len(set(epoch.tolist())) == len(epoch)  # no image twice in the epoch
    assert num_images - len(epoch) < new_pipelines * (new_batch // new_pipelines) + streams * batch
    # The next epoch is a whole epoch of the new layout: every image once, less the remainder.
    following = np.concatenate([_labels(r[left:]) for r in rest])
    assert len(set(following.tolist())) == len(following) > num_images - new_batch


# ----------------------------------------------------------------------------- re-runs with other flags


def _rerun(data_dir, model_dir, *flags):
    """The trainer on 24 images (6 steps per epoch at batch 4), checkpoints at epoch ends and the end."""
    return _train(data_dir, model_dir, "--checkpoint_every_steps=100", *flags)  # the last flag wins


def _trained(result):
    return re.search(r"^Trained (\d+) steps \((.*?)\)", result.stdout, re.M).groups()


def _epoch_lines(result):
    return re.findall(r"epoch (\d+)/(\d+) \(step (\d+)\)", result.stderr)


@pytest.mark.slow
def test_rerun_with_another_batch_or_a_raised_target_goes_on_and_a_lower_target_is_refused(tmp_path):
    """What users do to a model dir, as fresh processes: a bigger batch, more steps, more epochs."""
    data_dir = write_tiny_dataset(tmp_path / "data", train_records=24, validation_records=4, num_classes=3)
    batch_change, raised = str(tmp_path / "batch"), str(tmp_path / "raised")

    def batch_chain():
        return [
            # Stops inside epoch 1 after 8 of its 24 images.
            _rerun(data_dir, batch_change, "--batch_size=4", "--train_steps=2"),
            # Twice the batch: epoch 1 ends after its 16 unseen images (2 steps), epoch 2 is 3.
            _rerun(data_dir, batch_change, "--batch_size=8", "--epochs=2"),
            _rerun(data_dir, batch_change, "--batch_size=8", "--epochs=1"),  # below what is done
            _rerun(data_dir, batch_change, "--batch_size=8", "--epochs=3"),  # a finished run, raised
        ]

    def raised_chain():
        return [
            _rerun(data_dir, raised, "--batch_size=4", "--train_steps=3"),  # inside epoch 1
            _rerun(data_dir, raised, "--batch_size=4", "--train_steps=6"),  # to its end
            _rerun(data_dir, raised, "--batch_size=4", "--train_steps=8"),  # a finished run, raised
            _rerun(data_dir, raised, "--batch_size=4", "--train_steps=5"),  # below what is done
            _without_newest_index(
                raised, lambda: _rerun(data_dir, raised, "--batch_size=4", "--train_steps=9")
            ),
        ]

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        chains = pool.submit(batch_chain), pool.submit(raised_chain)
        (stopped, bigger, lower_epochs, more_epochs), (three, six, eight, lower_steps, no_index) = (
            c.result() for c in chains
        )
    for result in (stopped, bigger, more_epochs, three, six, eight):
        assert result.returncode == 0, result.stderr[-3000:]

    assert _trained(stopped) == ("2", "0 epochs and 8 images of epoch 1")
    change = (
        f"resuming {batch_change} with --batch_size=8 (was 4): epoch 1 continues at its next unseen "
        "images (8 of 24 trained on, 2 steps of 8 left in it); not bit-identical"
    )
    assert change in bigger.stderr
    assert _epoch_lines(bigger) == [("1", "2", "4"), ("2", "2", "7")]
    assert _trained(bigger) == ("7", "2 epochs")
    assert _epoch_lines(more_epochs) == [("3", "3", "10")] and _trained(more_epochs) == ("10", "3 epochs")
    assert "not bit-identical" not in more_epochs.stderr  # the batch it trained with last

    assert _trained(three) == ("3", "0 epochs and 12 images of epoch 1")
    assert _epoch_lines(six) == [("1", "1", "6")] and _trained(six) == ("6", "1 epochs")
    assert _trained(eight) == ("8", "1 epochs and 8 images of epoch 2")
    for model_dir, result in ((raised, eight), (batch_change, more_epochs)):
        with open(os.path.join(model_dir, "results.json")) as f:
            results = json.load(f)
        steps, epochs = _trained(result)[0], _trained(result)[1]
        assert str(results["global_step"]) == steps and epochs.startswith(f"{results['epochs_completed']} ")

    for result, message in (
        (lower_epochs, f"--epochs=1, but the run in {batch_change} has trained 2 epochs"),
        (lower_steps, f"--train_steps=5, but the run in {raised} has trained 8 steps"),
    ):
        assert result.returncode == 2, result.stderr[-3000:]
        last = result.stderr.strip().splitlines()[-1]
        assert message in last and "Traceback" not in result.stderr
    # Refused before anything was written: the last checkpoint is still the finished run's.
    assert tf.train.latest_checkpoint(os.path.join(raised, "checkpoints")).endswith("ckpt-8")
    # Its index gone, the newest checkpoint is refused too: the run does not start over.
    assert no_index.returncode == 2, no_index.stderr[-3000:]
    assert "the newest checkpoint, ckpt-8, has no ckpt-8.index" in no_index.stderr.strip().splitlines()[-1]


def _without_newest_index(model_dir, rerun):
    """`rerun()` with the newest checkpoint's .index moved away; the files as they were after it."""
    index = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")) + ".index"
    before = sorted(os.listdir(os.path.join(model_dir, "checkpoints")))
    os.rename(index, index + ".moved")
    try:
        result = rerun()
        assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == sorted(
            [n for n in before if n != os.path.basename(index)] + [os.path.basename(index) + ".moved"]
        )
    finally:
        os.rename(index + ".moved", index)
    return result
