"""Owns the tf.data service servers: `python -m alexnet_tf.data_service dispatcher|worker`.

    python -m alexnet_tf.data_service dispatcher --port=5050 --work_dir=/shared/dispatcher
    python -m alexnet_tf.data_service worker --dispatcher=10.0.0.5:5050 --worker_address=10.0.0.7:5051
    python -m alexnet_tf.train --data_dir=/data/imagenet --model_dir=/runs/a --data_service=grpc://10.0.0.5:5050

Thin wrappers over `tf.data.experimental.service.DispatchServer` and `WorkerServer`, so that
the JPEG decoding and cropping of a training run can run on machines other than the trainer's
(docs/distributed.md, "Feeding fast accelerators"). One dispatcher per run hands out the
training shards; any number of workers (add or remove them at any time) read, decode, crop
and batch them and stream uint8 batches to the trainers. Workers run the dataset graph that
the trainer registers (its Python code does not run there), so they need the trainers'
TensorFlow version and must read --data_dir at the same path as the trainers.

- dispatcher: with --work_dir it journals its state there (fault-tolerant mode), and a
  dispatcher restarted on the same --work_dir and port recovers its jobs; trainers and
  workers wait for it meanwhile. A worker silent for --worker_timeout_s is dropped.
- worker: waits up to --dispatcher_wait_s for the dispatcher to accept connections, then
  registers as --worker_address (what trainers connect to: the default, <hostname>:<port>,
  must resolve on the trainers' machines).
- Each logs the address it serves on one line on stderr. SIGTERM or Ctrl-C ends it with
  status 0: the dispatcher after stopping its server (at most STOP_TIMEOUT_S, else status 1),
  a worker at once (trainers carry on without it, as when a worker dies: see run_worker). A
  busy port, an unreachable dispatcher or a bad flag ends it with one line
  `alexnet_tf.data_service: error: ...` and status 2, as do a --work_dir it cannot write and
  a timing flag that is not positive.
"""

import faulthandler
import os
import signal
import socket
import sys
import threading

from absl import app, flags
import tensorflow as tf

from alexnet_tf import cli
from alexnet_tf.cli import check_writable
from alexnet_tf.config import ConfigError, parse_service_address
from alexnet_tf.data import pipelines

FLAGS = flags.FLAGS
ROLES = ("dispatcher", "worker")
DEFAULT_PORTS = {"dispatcher": 5050, "worker": 5051}
PROGRAM = "alexnet_tf.data_service"
STOP_TIMEOUT_S = 10.0


def define_flags(flag_values=FLAGS):
    """Defines the flags on `flag_values` (only the entry point calls this: importing defines none)."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_integer("port", None, "Port to serve on; default 5050 (dispatcher), 5051 (worker).", **fv)
    flags.DEFINE_string(
        "work_dir",
        None,
        "dispatcher: journal folder (fault-tolerant mode); a dispatcher restarted on it recovers its jobs.",
        **fv,
    )
    flags.DEFINE_float("worker_timeout_s", 60.0, "dispatcher: drop a worker silent for this long.", **fv)
    flags.DEFINE_string("dispatcher", None, "worker: the dispatcher's HOST:PORT (or grpc://HOST:PORT).", **fv)
    flags.DEFINE_string(
        "worker_address", None, "worker: HOST:PORT trainers connect to; default <hostname>:<port>.", **fv
    )
    flags.DEFINE_float(
        "heartbeat_interval_s", 10.0, "worker: heartbeat period (below the dispatcher's timeout).", **fv
    )
    flags.DEFINE_float(
        "dispatcher_wait_s", 60.0, "worker: seconds to wait for the dispatcher to accept connections.", **fv
    )


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
        pipelines.wait_for_dispatcher(host, dispatcher_port, dispatcher_wait_s)
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


def main(argv):
    if len(argv) != 2 or argv[1] not in ROLES:
        raise app.UsageError(
            "usage: python -m alexnet_tf.data_service dispatcher [--port=5050 --work_dir=DIR] | "
            "worker --dispatcher=HOST:5050 [--port=5051 --worker_address=HOST:5051]"
        )
    role = argv[1]
    port = DEFAULT_PORTS[role] if FLAGS.port is None else FLAGS.port
    try:
        if not 0 < port < 65536:
            raise ConfigError(f"--port={port} must be in 1..65535")
        # Zero or negative: TensorFlow would take them as "use the default" or never drop a worker.
        check_positive(
            worker_timeout_s=FLAGS.worker_timeout_s, heartbeat_interval_s=FLAGS.heartbeat_interval_s
        )
        if not FLAGS.dispatcher_wait_s >= 0:
            raise ConfigError(f"--dispatcher_wait_s={FLAGS.dispatcher_wait_s:g} must be >= 0 (seconds)")
        if role == "dispatcher":
            run_dispatcher(port, FLAGS.work_dir, FLAGS.worker_timeout_s)
        else:
            if not FLAGS.dispatcher:
                raise ConfigError("--dispatcher=HOST:PORT is required: the address the dispatcher serves on")
            run_worker(
                FLAGS.dispatcher,
                port,
                FLAGS.worker_address,
                FLAGS.heartbeat_interval_s,
                FLAGS.dispatcher_wait_s,
            )
    except ConfigError as e:
        cli.fail(PROGRAM, e)


if __name__ == "__main__":
    define_flags()
    cli.run(main, PROGRAM)
