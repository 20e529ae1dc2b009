"""Tests of the tf.data service path: `python -m alexnet_tf.data_service` servers feeding the trainer.

Real servers on 127.0.0.1 (free ports), each a fresh process started as a user starts it:
a dispatcher with a journal and two workers. To stay within CI's time, one module fixture
starts them together with the processes that only need to fail (a trainer pointed at a port
nobody serves, a dispatcher on a port in use or with a journal folder it cannot write, servers
given a timing flag that is not positive) and a benchmark through the service, so their
TensorFlow imports overlap; the tests then check one process each, in file order: a pass
through the two workers (in this process) yields every record once, the benchmark, a
training run that loses a worker half way, and SIGTERM. Last, a second fixture: a dispatcher
without a journal, its worker and two trainers; once both train, the dispatcher and the worker
are killed, and one trainer gives up after its --data_service_timeout_s while the other gets
SIGTERM as it waits (a checkpoint of its last step, which a re-run resumes from).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

from conftest import REPO
import numpy as np
import pytest
import tensorflow as tf
from tfrecord_fixtures import make_example, natural_image
from tiny_dataset import write_tiny_dataset

from alexnet_tf.config import ConfigError, TrainConfig, parse_service_address
from alexnet_tf.data import pipelines
from alexnet_tf.data.pipelines import PixelSettings
from alexnet_tf.data.service import ServiceJob
from alexnet_tf.training.inputs import data_source

TIMEOUT = 300  # the longest any one process may take here, even on a loaded machine
COUNT_RECORDS, COUNT_SHARDS = 12, 3
TRAIN_STEPS = 6  # 2 epochs of 3 steps; a worker dies after step 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_counting_shards(directory):
    """COUNT_RECORDS records in COUNT_SHARDS shards whose labels 0..COUNT_RECORDS-1 name them."""
    os.makedirs(directory)
    rng = np.random.default_rng(0)
    writers = [
        tf.io.TFRecordWriter(os.path.join(directory, f"train-{s:05d}-of-{COUNT_SHARDS:05d}"))
        for s in range(COUNT_SHARDS)
    ]
    for i in range(COUNT_RECORDS):
        jpeg = tf.io.encode_jpeg(natural_image(rng, 256, 280)).numpy()
        example = make_example(jpeg, i, 256, 280, f"n{i:08d}", f"class {i}", f"{i}.JPEG")
        writers[i % COUNT_SHARDS].write(example.SerializeToString())
    for writer in writers:
        writer.close()
    return directory


class _Process:
    """A fresh `python args...` from the repository root, its output in a file."""

    def __init__(self, directory, name, args):
        self.name, self.log = name, os.path.join(directory, f"{name}.log")
        self.started = time.monotonic()
        with open(self.log, "w") as out:
            self.popen = subprocess.Popen(
                [sys.executable, *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True
            )

    def output(self):
        with open(self.log) as f:
            return f.read()

    def wait_for(self, text, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.popen.poll() is None, f"{self.name} exited: {self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"{self.name}: no {text!r} in {timeout} s"
            time.sleep(0.2)

    def finish(self, timeout=TIMEOUT):
        self.popen.wait(timeout=timeout)
        return self.popen.returncode, self.output()

    def stop(self):
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    data_dir = write_tiny_dataset(root / "data")
    count_dir = _write_counting_shards(str(root / "counting"))
    port, busy = _free_port(), socket.socket()
    busy.bind(("0.0.0.0", 0))
    busy.listen()
    service = f"grpc://127.0.0.1:{port}"
    module = ["-m", "alexnet_tf.data_service"]
    not_a_folder = root / "not_a_folder"  # a file: no journal folder fits under it, even for root
    not_a_folder.write_text("")
    processes = {
        "dispatcher": _Process(
            root,
            "dispatcher",
            [
                *module,
                "dispatcher",
                f"--port={port}",
                f"--work_dir={root / 'journal'}",
                "--worker_timeout_s=3",
            ],
        ),
        "busy": _Process(root, "busy", [*module, "dispatcher", f"--port={busy.getsockname()[1]}"]),
        "unwritable": _Process(
            root,
            "unwritable",
            [*module, "dispatcher", f"--port={_free_port()}", f"--work_dir={not_a_folder / 'journal'}"],
        ),
        "negative_timeout": _Process(
            root,
            "negative_timeout",
            [*module, "dispatcher", f"--port={_free_port()}", "--worker_timeout_s=-1"],
        ),
        "zero_heartbeat": _Process(
            root,
            "zero_heartbeat",
            [
                *module,
                "worker",
                f"--dispatcher=127.0.0.1:{port}",
                f"--port={_free_port()}",
                "--heartbeat_interval_s=0",
            ],
        ),
        "unreachable": _Process(
            root,
            "unreachable",
            [
                "-m",
                "alexnet_tf.train",
                f"--data_dir={data_dir}",
                f"--model_dir={root / 'never'}",
                f"--data_service=grpc://127.0.0.1:{_free_port()}",
                "--data_service_wait_s=1",
            ],
        ),
        "benchmark": _Process(
            root,
            "benchmark",
            [
                "-m",
                "alexnet_tf.benchmark",
                "--mode=input",
                f"--data_service={service}",
                f"--data_dir={data_dir}",
                "--batch_size=2",
                "--steps=2",
                "--warmup_steps=1",
                "--repeats=1",
                "--pil_processes=1",
                "--json",
            ],
        ),
    }
    for i in (1, 2):
        worker_port = _free_port()
        processes[f"worker{i}"] = _Process(
            root,
            f"worker{i}",
            [
                *module,
                "worker",
                f"--dispatcher=127.0.0.1:{port}",
                f"--port={worker_port}",
                f"--worker_address=127.0.0.1:{worker_port}",
                "--heartbeat_interval_s=0.5",
            ],
        )
    try:
        for name in ("dispatcher", "worker1", "worker2"):
            processes[name].wait_for("serving on")
        yield dict(
            root=root,
            data_dir=data_dir,
            count_dir=count_dir,
            service=service,
            port=port,
            busy_port=busy.getsockname()[1],
            not_a_folder=not_a_folder,
            processes=processes,
        )
    finally:
        busy.close()
        for process in processes.values():
            process.stop()


def _our_lines(output, program):
    return [line for line in output.splitlines() if line.startswith(f"{program}:")]


def test_service_addresses_are_validated_without_io():
    assert parse_service_address("grpc://10.0.0.5:5050") == ("10.0.0.5", 5050)
    assert parse_service_address("grpc://[::1]:5050") == ("::1", 5050)
    for bad in ("10.0.0.5:5050", "grpc://host", "grpc://host:0", "grpc://host:99999", "http://host:5050"):
        with pytest.raises(ConfigError, match="--data_service="):
            parse_service_address(bad)
    with pytest.raises(ConfigError, match="--data_source=synthetic cannot use it"):
        data_source(TrainConfig(data_source="synthetic", model_dir="/m", data_service="grpc://h:1"))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="data_service_timeout_s must be > 0"):
            TrainConfig(data_dir="/d", model_dir="/m", data_service_timeout_s=bad).validate()


@pytest.mark.slow
def test_servers_log_their_addresses_and_the_dispatcher_keeps_a_journal(cluster):
    processes, port = cluster["processes"], cluster["port"]
    assert (
        f"dispatcher serving on grpc://{socket.gethostname()}:{port} (journal in"
        in processes["dispatcher"].output()
    )
    for i in (1, 2):
        line = _our_lines(processes[f"worker{i}"].output(), "alexnet_tf.data_service")[0]
        assert (
            "worker serving on grpc://127.0.0.1:" in line and f"dispatcher at grpc://127.0.0.1:{port}" in line
        )
    assert os.listdir(cluster["root"] / "journal")  # fault-tolerant mode writes its journal there


@pytest.mark.slow
def test_a_dispatcher_on_a_busy_port_exits_with_one_line(cluster):
    returncode, output = cluster["processes"]["busy"].finish()
    assert returncode == 2, output[-3000:]
    assert _our_lines(output, "alexnet_tf.data_service") == [
        f"alexnet_tf.data_service: error: --port={cluster['busy_port']} is in use (Address already in use): "
        "stop what serves there or pick another port"
    ]


@pytest.mark.slow
def test_a_dispatcher_with_an_unwritable_work_dir_exits_with_one_line(cluster):
    returncode, output = cluster["processes"]["unwritable"].finish(timeout=120)
    assert returncode == 2, output[-3000:]
    work_dir = cluster["not_a_folder"] / "journal"
    assert _our_lines(output, "alexnet_tf.data_service") == [
        f"alexnet_tf.data_service: error: --work_dir={work_dir} is not a writable folder "
        f"({cluster['not_a_folder']} is not a directory): the dispatcher journals its state there; "
        "pick a folder it can create and write"
    ]
    assert "Traceback" not in output


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, line",
    [
        ("negative_timeout", "--worker_timeout_s=-1 must be > 0 (seconds)"),
        ("zero_heartbeat", "--heartbeat_interval_s=0 must be > 0 (seconds)"),
    ],
)
def test_a_server_timing_flag_that_is_not_positive_exits_with_one_line(cluster, name, line):
    returncode, output = cluster["processes"][name].finish(timeout=120)  # one that serves is a failure
    assert returncode == 2, output[-3000:]
    assert _our_lines(output, "alexnet_tf.data_service") == [f"alexnet_tf.data_service: error: {line}"]


@pytest.mark.slow
def test_an_unreachable_dispatcher_stops_the_trainer_with_one_line(cluster):
    process = cluster["processes"]["unreachable"]
    returncode, output = process.finish()
    assert returncode == 2, output[-3000:]
    lines = _our_lines(output, "alexnet_tf.train")
    assert len(lines) == 1 and lines[0].startswith(
        "alexnet_tf.train: error: --data_service=grpc://127.0.0.1:"
    )
    assert "no tf.data service dispatcher answers at 127.0.0.1:" in lines[0] and "waited 1 s" in lines[0]
    assert "Traceback" not in output


@pytest.mark.slow
def test_a_pass_through_two_workers_yields_every_record_exactly_once(cluster):
    # The trainer's own pipeline with repeat=False: one pass of the shard list, split by file
    # between the two workers. Labels 0..11 name the records.
    dataset = pipelines.training_dataset(
        os.path.join(cluster["count_dir"], "train-*"),
        1,
        pixels=PixelSettings(image_size=96),
        label_offset=0,
        repeat=False,
        drop_remainder=False,
        service=ServiceJob(cluster["service"], "count-one-pass"),
    )
    labels = [int(label) for _, labels in dataset for label in labels.numpy()]
    assert sorted(labels) == list(range(COUNT_RECORDS))
    assert labels != sorted(labels)  # shuffled, not read in file order


@pytest.mark.slow
def test_input_benchmark_times_the_pipeline_through_the_service(cluster):
    returncode, output = cluster["processes"]["benchmark"].finish()
    assert returncode == 0, output[-3000:]
    report, _ = json.JSONDecoder().raw_decode(output[output.index('{\n  "mode"') :])
    rows = {r["row"]: r for r in report["results"]}
    assert {"decode", "pipeline", "service"} <= set(rows) and rows["service"]["images_per_sec"] > 0
    assert report["ratios"]["service/pipeline"] > 0
    assert report["settings"]["data_service"] == cluster["service"]


@pytest.mark.slow
def test_training_through_the_service_finishes_after_losing_a_worker(cluster):
    processes = cluster["processes"]
    model_dir = cluster["root"] / "model"
    trainer = _Process(
        cluster["root"],
        "trainer",
        [
            "-m",
            "alexnet_tf.train",
            f"--data_dir={cluster['data_dir']}",
            f"--model_dir={model_dir}",
            "--variant=one_weird_trick",
            "--image_size=96",
            "--batch_size=4",
            "--steps_per_epoch=3",
            "--epochs=2",
            "--log_every_steps=1",
            "--precision=float32",
            f"--data_service={cluster['service']}",
        ],
    )
    try:
        trainer.wait_for("step 2/")
        assert f"step {TRAIN_STEPS}/" not in trainer.output()
        processes["worker2"].popen.send_signal(signal.SIGKILL)  # a worker dies mid-run
        returncode, output = trainer.finish()
    finally:
        trainer.stop()
    assert returncode == 0, output[-3000:]
    assert "Exact resume does not hold with service input" in output
    with open(model_dir / "results.json") as f:
        results = json.load(f)
    assert results["global_step"] == TRAIN_STEPS and results["epochs_completed"] == 2
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith(f"-{TRAIN_STEPS}")
    assert os.path.exists(os.path.join(results["export_path"], "saved_model.pb"))


@pytest.mark.slow
def test_sigterm_stops_the_servers_cleanly(cluster):
    for name in ("worker1", "dispatcher"):
        process = cluster["processes"][name]
        process.popen.send_signal(signal.SIGTERM)
        returncode, output = process.finish(timeout=60)
        assert returncode == 0, output[-3000:]
        assert _our_lines(output, "alexnet_tf.data_service")[-1] == "alexnet_tf.data_service: stopped"


GIVE_UP_S = 3  # --data_service_timeout_s of the trainer that gives up on a dead dispatcher


def _trainer_args(data_dir, model_dir, *extra, train_steps=1000):
    """A trainer of `train_steps` steps in one epoch: with 1000, only the watchdog ends it."""
    return [
        "-m",
        "alexnet_tf.train",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--variant=one_weird_trick",
        "--image_size=95",
        "--batch_size=4",
        "--steps_per_epoch=1000",
        f"--train_steps={train_steps}",
        "--log_every_steps=1",
        "--precision=float32",
        "--noexport",
        *extra,
    ]


def _logged_steps(output):
    return [int(step) for step in re.findall(r": step (\d+)/1000:", output)]


def _wait_until_stalled(process, timeout=180):
    """Returns once `process` has logged no new step for 3 times its slowest step so far (at least 10 s)."""
    deadline = time.monotonic() + timeout
    steps, seen, slowest = None, time.monotonic(), 0.0
    while time.monotonic() - seen < max(10.0, 3 * slowest):
        assert process.popen.poll() is None, f"{process.name} exited: {process.output()[-3000:]}"
        assert time.monotonic() < deadline, f"{process.name} still trains after {timeout} s"
        logged = len(_logged_steps(process.output()))
        if logged != steps:
            if steps:
                slowest = max(slowest, time.monotonic() - seen)
            steps, seen = logged, time.monotonic()
        time.sleep(0.2)


def _finish_watching_steps(process, timeout=TIMEOUT):
    """(returncode, output, seconds from its last logged step to its exit) of `process`."""
    deadline, steps, seen = time.monotonic() + timeout, None, time.monotonic()
    while process.popen.poll() is None:
        assert time.monotonic() < deadline, f"{process.name} still runs after {timeout} s"
        logged = len(_logged_steps(process.output()))
        if logged != steps:
            steps, seen = logged, time.monotonic()
        time.sleep(0.2)
    return process.popen.returncode, process.output(), time.monotonic() - seen


@pytest.fixture(scope="module")
def dead_dispatcher(tmp_path_factory):
    """Two trainers on a dispatcher without --work_dir, which is killed (SIGKILL) once both train.

    Their own dispatcher and worker, started with them so that the TensorFlow imports overlap:
    "gives_up" has --data_service_timeout_s=GIVE_UP_S, "preempted" the default and waits for
    the test's SIGTERM. The worker is killed too: its shuffle buffer (10,000 records) holds
    hundreds of passes over the 16 test images, which would keep the trainers going for
    thousands of steps on their open stream (a worker needs the dispatcher only for its next
    shard); the trainers still hold batches for a dozen steps or more.
    """
    root = tmp_path_factory.mktemp("dead")
    data_dir = write_tiny_dataset(root / "data")
    port, worker_port = _free_port(), _free_port()
    service = f"grpc://127.0.0.1:{port}"
    module = ["-m", "alexnet_tf.data_service"]
    processes = {
        "dispatcher": _Process(root, "dispatcher", [*module, "dispatcher", f"--port={port}"]),
        "worker": _Process(
            root,
            "worker",
            [
                *module,
                "worker",
                f"--dispatcher=127.0.0.1:{port}",
                f"--port={worker_port}",
                f"--worker_address=127.0.0.1:{worker_port}",
                "--heartbeat_interval_s=0.5",
            ],
        ),
        "gives_up": _Process(
            root,
            "gives_up",
            _trainer_args(
                data_dir,
                root / "gives_up",
                f"--data_service={service}",
                f"--data_service_timeout_s={GIVE_UP_S}",
            ),
        ),
        "preempted": _Process(
            root, "preempted", _trainer_args(data_dir, root / "preempted", f"--data_service={service}")
        ),
    }
    try:
        for name in ("gives_up", "preempted"):
            processes[name].wait_for("step 2/")
        for name in ("dispatcher", "worker"):
            processes[name].popen.send_signal(signal.SIGKILL)
            processes[name].popen.wait(timeout=60)
        yield dict(root=root, data_dir=data_dir, service=service, processes=processes)
    finally:
        for process in processes.values():
            process.stop()


@pytest.mark.slow
def test_a_dead_dispatcher_stops_the_trainer_after_its_timeout_with_one_line(dead_dispatcher):
    # It trains on the batches it holds, then waits: GIVE_UP_S (at least twice a step's time)
    # later it writes a checkpoint of its last step and stops.
    returncode, output, quiet = _finish_watching_steps(dead_dispatcher["processes"]["gives_up"])
    assert returncode == 1, output[-3000:]
    assert quiet < 45, f"{quiet:.1f} s from the last step to the exit"
    last = _logged_steps(output)[-1]
    checkpoint = tf.train.latest_checkpoint(str(dead_dispatcher["root"] / "gives_up" / "checkpoints"))
    assert checkpoint.endswith(f"-{last}")
    assert _our_lines(output, "alexnet_tf.train") == [
        f"alexnet_tf.train: error: --data_service={dead_dispatcher['service']}: step {last + 1} waited more "
        f"than {GIVE_UP_S} s (--data_service_timeout_s) for training batches and the dispatcher does not "
        f"answer: checkpoint {checkpoint} at step {last}. Start the dispatcher again (with --work_dir a "
        "restarted dispatcher recovers its jobs while trainers wait) and re-run the same command to resume"
    ]
    assert "Traceback" not in output
    print(f"gave up {quiet:.1f} s after its last step")


@pytest.mark.slow
def test_sigterm_while_the_dispatcher_is_dead_saves_the_last_step_and_exits_143(dead_dispatcher):
    trainer, root = dead_dispatcher["processes"]["preempted"], dead_dispatcher["root"]
    _wait_until_stalled(trainer)
    trainer.popen.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    returncode, output = trainer.finish(timeout=60)
    took = time.monotonic() - sent
    assert returncode == 143, output[-3000:]
    assert took < 20, f"{took:.1f} s from SIGTERM to exit"
    last = _logged_steps(output)[-1]
    checkpoint = tf.train.latest_checkpoint(str(root / "preempted" / "checkpoints"))
    assert checkpoint.endswith(f"-{last}")
    assert _our_lines(output, "alexnet_tf.train") == [
        f"alexnet_tf.train: preempted (signal 15) while step {last + 1} waited for training batches from "
        f"the tf.data service: checkpoint {checkpoint} at step {last}; re-run the same command to resume"
    ]
    # The step cancelled in its wait had already counted itself in the optimizer and drawn its
    # dropout seeds (one per layer and step); the checkpoint holds the last step's values.
    reader = tf.train.load_checkpoint(checkpoint)
    counters = [
        reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"),
        reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"),
        *(
            reader.get_tensor(f"random/{layer}.S0/.ATTRIBUTES/VARIABLE_VALUE")[1]
            for layer in ("dropout6", "dropout7")
        ),
    ]
    assert counters == [last] * 4
    # A re-run resumes from it (reading the shards directly, as the service is gone).
    resumed = _Process(
        root, "resumed", _trainer_args(dead_dispatcher["data_dir"], root / "preempted", train_steps=last + 1)
    )
    returncode, output = resumed.finish()
    assert returncode == 0, output[-3000:]
    assert f"Resuming from {checkpoint} at step {last}" in output
    with open(root / "preempted" / "results.json") as f:
        assert json.load(f)["global_step"] == last + 1
    print(f"the trainer exited {took:.1f} s after SIGTERM")
