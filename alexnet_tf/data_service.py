"""Owns the tf.data service servers: `python -m alexnet_tf.data_service dispatcher|worker`.

    python -m alexnet_tf.data_service dispatcher --port=5050 --work_dir=/shared/dispatcher
    python -m alexnet_tf.data_service worker --dispatcher=10.0.0.5:5050 --worker_address=10.0.0.7:5051
    python -m alexnet_tf.train --data_dir=/data/imagenet --model_dir=/runs/a --data_service=grpc://10.0.0.5:5050

The servers are `alexnet_tf.data.service`'s: thin wrappers over TensorFlow's `DispatchServer`
and `WorkerServer`, so that the JPEG decoding and cropping of a training run can run on
machines other than the trainer's (docs/distributed.md, "Feeding fast accelerators"). One
dispatcher per run hands out the training shards; any number of workers (add or remove them
at any time) read, decode, crop and batch them and stream uint8 batches to the trainers.
Workers run the dataset graph that the trainer registers (its Python code does not run
there), so they need the trainers' TensorFlow version and must read --data_dir at the same
path as the trainers.

- dispatcher: with --work_dir it journals its state there (fault-tolerant mode), and a
  dispatcher restarted on the same --work_dir and port recovers its jobs; trainers and
  workers wait for it meanwhile. A worker silent for --worker_timeout_s is dropped.
- worker: waits up to --dispatcher_wait_s for the dispatcher to accept connections, then
  registers as --worker_address (what trainers connect to: the default, <hostname>:<port>,
  must resolve on the trainers' machines).
- Each logs the address it serves on one line on stderr. SIGTERM or Ctrl-C ends it with
  status 0: the dispatcher after stopping its server (at most service.STOP_TIMEOUT_S, else
  status 1), a worker at once (trainers carry on without it, as when a worker dies: see
  service.run_worker). A busy port, an unreachable dispatcher or a bad flag ends it with one
  line `alexnet_tf.data_service: error: ...` and status 2, as do a --work_dir it cannot write
  and a timing flag that is not positive.
"""

from absl import app, flags

from alexnet_tf import cli
from alexnet_tf.config import ConfigError
from alexnet_tf.data.service import PROGRAM, check_positive, run_dispatcher, run_worker

FLAGS = flags.FLAGS
ROLES = ("dispatcher", "worker")
DEFAULT_PORTS = {"dispatcher": 5050, "worker": 5051}


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
