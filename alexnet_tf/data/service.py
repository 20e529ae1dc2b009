"""The tf.data service: the trainer's client side, and the dispatcher and worker servers.

Client: `ServiceJob` names the job a training pipeline's batches come from
(`distribute_to_service`), and `wait_for_dispatcher` checks, bounded, that a dispatcher answers.
Servers: `run_dispatcher` and `run_worker` are what `python -m alexnet_tf.data_service` runs:
thin wrappers over `tf.data.experimental.service.DispatchServer` and `WorkerServer` that serve
until SIGTERM (docs/distributed.md, "Feeding fast accelerators").
"""

import dataclasses
import faulthandler
import os
import signal
import socket
import sys
import threading
import time

import tensorflow as tf

from alexnet_tf.cli import check_writable
from alexnet_tf.config import ConfigError, parse_service_address

PROGRAM = "alexnet_tf.data_service"  # the servers' command, which their log lines name
STOP_TIMEOUT_S = 10.0

# ----------------------------------------------------------------------------- client


@dataclasses.dataclass(frozen=True)
class ServiceJob:
    """A training pipeline's job on the tf.data service: the dispatcher's grpc://HOST:PORT and the job's name.

    The name must be the same in every input pipeline of a run, and change whenever the dataset
    does (training.inputs.service_job_name): see distribute_to_service.
    """

    address: str
    job_name: str

    def distribute(self, dataset):
        """`dataset` run by the service's workers as this job (distribute_to_service)."""
        return distribute_to_service(dataset, self.address, self.job_name)


def distribute_to_service(dataset, service, job_name):
    """`dataset` run by the workers of the tf.data service `service`, as one job shared by name.

    Dynamic sharding (docs/distributed.md, "Feeding fast accelerators"): the dispatcher hands
    each worker the next file of the file list it holds (the pipeline's source, shuffled anew
    each pass), so within a pass every file goes to exactly one worker; a worker that dies takes
    the rest of its files' records for that pass with it (at most once, never twice), and a
    worker that joins takes files from the next one handed out. Every input pipeline that
    names the job consumes from it, first come first served, whatever dataset it brings: the
    job keeps the one it was created with, so its name must change whenever the dataset does
    (training.inputs.service_job_name). Elements travel uncompressed: snappy shrank the uint8
    crops of the demo images by 15% only, and costs CPU on both ends.
    """
    return dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
            service=service,
            job_name=job_name,
            compression=None,
        )
    )


def wait_for_dispatcher(host, port, wait_s, poll_s=1.0):
    """Returns once `host:port` accepts TCP connections; ConnectionError after `wait_s` seconds.

    A cheap, bounded check before a tf.data service client or worker starts: theirs retries
    an absent dispatcher for up to an hour without a word.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(5.0, wait_s))):
                return
        except OSError as e:
            if time.monotonic() + poll_s > deadline:
                reason = e.strerror or type(e).__name__
                raise ConnectionError(
                    f"no tf.data service dispatcher answers at {host}:{port} ({reason}, waited {wait_s:g} s)"
                ) from None
            time.sleep(poll_s)


# ----------------------------------------------------------------------------- servers


def check_port_free(port):
    """ConfigError when a server already listens on `port`.

    gRPC servers bind with SO_REUSEPORT, so a second dispatcher on a port in use would start
    and share the port's connections with the first; a plain bind refuses it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as e:
            raise ConfigError(
                f"--port={port} is in use ({e.strerror}): stop what serves there or pick another port"
            ) from None


def serve_until_stopped(server, what, graceful=True):
    """Logs `what`, waits until SIGTERM or SIGINT, then ends the process with status 0.

    `server.join()` would block inside C++ where Python signal handlers never run, so the main
    thread waits on an event the handlers set. With `graceful`, `server.stop()` runs first,
    bounded: it holds the GIL, so a C watchdog (faulthandler) ends the process with status 1
    if it takes over STOP_TIMEOUT_S. The process then ends without tearing the interpreter
    down, which would join the servers' threads again.
    """
    stopping = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda received, frame: stopping.set())
    print(f"{PROGRAM}: {what}; SIGTERM stops it", file=sys.stderr, flush=True)
    while not stopping.wait(0.5):
        pass
    if graceful:
        with open(os.devnull, "w") as devnull:
            faulthandler.dump_traceback_later(STOP_TIMEOUT_S, exit=True, file=devnull)
            server.stop()
            faulthandler.cancel_dump_traceback_later()
    print(f"{PROGRAM}: stopped", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(0)


def check_work_dir(work_dir):
    """Creates `work_dir` and proves it writable (the journal is written there), else ConfigError."""
    check_writable(
        work_dir,
        what=f"--work_dir={work_dir} is not a writable folder",
        hint=": the dispatcher journals its state there; pick a folder it can create and write",
    )


def check_positive(**values):
    """ConfigError naming the first of the flags `values` that is not > 0 (NaN included)."""
    for name, value in values.items():
        if not value > 0:
            raise ConfigError(f"--{name}={value:g} must be > 0 (seconds)")


def run_dispatcher(port, work_dir=None, worker_timeout_s=60.0):
    """Starts a dispatcher on `port` and serves until SIGTERM."""
    check_port_free(port)
    if work_dir:
        check_work_dir(work_dir)
    config = tf.data.experimental.service.DispatcherConfig(
        port=port,
        work_dir=work_dir or None,
        fault_tolerant_mode=bool(work_dir),
        worker_timeout_ms=max(1, round(worker_timeout_s * 1000)),
    )
    try:
        server = tf.data.experimental.service.DispatchServer(config)
    except RuntimeError as e:  # "Could not start gRPC server": the port went between check and start
        raise ConfigError(f"--port={port}: {e}") from None
    journal = f"journal in {work_dir}" if work_dir else "no journal (--work_dir makes it fault tolerant)"
    serve_until_stopped(server, f"dispatcher serving on grpc://{socket.gethostname()}:{port} ({journal})")


def run_worker(dispatcher, port, worker_address=None, heartbeat_interval_s=10.0, dispatcher_wait_s=60.0):
    """Starts a worker of the dispatcher at `dispatcher` (HOST:PORT) on `port`; serves until SIGTERM."""
    address = dispatcher if dispatcher.startswith("grpc://") else f"grpc://{dispatcher}"
    host, dispatcher_port = parse_service_address(address, "--dispatcher")
    check_port_free(port)
    worker_address = worker_address or f"{socket.gethostname()}:{port}"
    try:
        wait_for_dispatcher(host, dispatcher_port, dispatcher_wait_s)
    except ConnectionError as e:
        raise ConfigError(
            f"--dispatcher={dispatcher}: {e}; start the dispatcher first, or raise --dispatcher_wait_s"
        ) from None
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=address.split("://", 1)[1],
        worker_address=worker_address,
        port=port,
        heartbeat_interval_ms=max(1, round(heartbeat_interval_s * 1000)),
    )
    try:
        server = tf.data.experimental.service.WorkerServer(config)
    except RuntimeError as e:
        raise ConfigError(f"--port={port}: {e}") from None
    # No graceful stop: TensorFlow 2.21's WorkerServer.stop() destroys every job's iterator, and
    # each waits for its autotuning thread's next wake-up, up to a minute (measured: 5 s to 100 s
    # with 3-4 jobs). Trainers see the worker leave either way (docs/distributed.md).
    serve_until_stopped(
        server,
        f"worker serving on grpc://{worker_address} for the dispatcher at grpc://{host}:{dispatcher_port}",
        graceful=False,
    )
