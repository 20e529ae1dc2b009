"""The benchmark command: training, input-pipeline, end-to-end and serving speed on this machine.

    python -m alexnet_tf.benchmark                     # --mode=train: the model alone, ~1.5 min
    python -m alexnet_tf.benchmark --mode=input        # the input pipeline, ~1 min
    python -m alexnet_tf.benchmark --mode=end_to_end   # training from TFRecords vs synthetic, ~3 min
    python -m alexnet_tf.benchmark --mode=serve        # SavedModel latency and throughput, ~1.5 min
    python -m alexnet_tf.benchmark --mode=end_to_end --data_dir=/data/imagenet-tfrecords --json

(times with the defaults on this project's 2-core CPU: paper variant, batch 128, float32 and
mixed_bfloat16, 3 repeats; serve --onnx adds a minute and ~10 GiB of memory converting the
model to ONNX). The modes:
  train       the trainer's own train step (alexnet_tf.training.step) on synthetic batches held in
              memory: model and optimizer speed in images/s and achieved TFLOP/s, with the
              machine's matmul rate in each precision's dtype (a 4096x4096 tf.matmul in
              float32 or bfloat16, the practical ceiling, timed in every round), each row's
              share of it (median over rounds of round rate / round ceiling), and on a known
              GPU its share of the datasheet peak.
  input       the trainer's training pipeline against the bare JPEG-decoding bound and a
              PIL + multiprocessing loader (alexnet_tf.benchmark.pipeline).
  end_to_end  the same train step fed by the trainer's TFRecord pipeline and by synthetic
              batches, interleaved; their ratio is what the input costs a real run.
  serve       SavedModel batch-1 latency (median, p99) and batch-64 throughput, and the same
              through onnxruntime with --onnx (alexnet_tf.benchmark.serve).
  tflite      per variant and quantisation, the LiteRT file's size, conversion time and
              batch-1 latency (median, p99) in the LiteRT interpreter, threads stated, against
              the SavedModel's batch-1 latency (alexnet_tf.benchmark.tflite).
input and end_to_end read --data_dir's train-* shards, or the generated demo dataset (that of
`alexnet_tf.train --demo`: 1,000 small rendered images, built once, ~20 s) without it.
With --data_service=grpc://HOST:PORT they also time the same pipeline through that tf.data
service (a "service" row); --data_service=local starts a dispatcher and one worker on this
machine for the run and counts the worker's CPU time:

    python -m alexnet_tf.benchmark --mode=input --data_service=local

Every precision or row is built once and the repeats go round-robin over all of them, so
noise from other jobs hits them alike and their ratios stay meaningful on a shared machine.
Images/sec are medians over --repeats with min-max. The report also gives the peak resident
memory, the settings and the environment (versions, CPU model and flags, GPUs): a markdown
table, or one JSON object on stdout with --json. Progress and TensorFlow's logs go to stderr.
"""

import contextlib
import json
import os
import platform
import resource
import sys

from absl import app, flags

from alexnet_tf import cli
from alexnet_tf.config import VARIANTS, ConfigError, parse_service_address

FLAGS = flags.FLAGS
PROGRAM = "alexnet_tf.benchmark"
MODES = ("train", "input", "end_to_end", "serve", "tflite")
# alexnet_tf.serving.tflite_export.QUANTIZATIONS, named here so that --help imports no TensorFlow.
TFLITE_QUANTIZATIONS = ("none", "float16", "dynamic_range", "int8")
# (warm-up steps, timed steps) per mode when the flags are not given; input's are batches.
DEFAULT_STEPS = {"train": (2, 5), "end_to_end": (2, 5), "input": (10, 40), "serve": (1, 5), "tflite": (5, 1)}
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def define_flags():
    """Defines the command-line flags; only the entry point calls this, so that importing
    this module for its functions defines no flags."""
    flags.DEFINE_enum("mode", "train", MODES, "What to time (see the module docstring).")
    flags.DEFINE_enum("variant", "paper", VARIANTS, "AlexNet variant.")
    flags.DEFINE_integer("batch_size", 128, "Global batch size (train, end_to_end, input).")
    flags.DEFINE_multi_enum(
        "precision",
        ["float32", "mixed_bfloat16"],
        ["float32", "mixed_bfloat16", "mixed_float16"],
        "Precision policies to time (train, end_to_end); repeat the flag for several.",
    )
    flags.DEFINE_multi_enum(
        "grouped_conv",
        ["auto"],
        ["auto", "native", "split"],
        "GroupedConv2D implementation(s) to time (train): auto picks native where the "
        "kernels have grouped convolutions (GPU, oneDNN), else split; repeat to A/B.",
    )
    flags.DEFINE_multi_enum(
        "filter_gradient",
        ["auto"],
        ["auto", "native", "gemm"],
        "Convolution kernel-gradient implementation(s) to time (train): auto picks gemm (a "
        "matmul over image patches) for float32 on CPUs without AVX-512 running oneDNN, else "
        "native (Conv2DBackpropFilter); repeat to A/B.",
    )
    flags.DEFINE_bool("jit_compile", False, "Compile the forward/backward pass with XLA (as the trainer).")
    flags.DEFINE_integer("steps_per_execution", 1, "Train steps per tf.function call.")
    flags.DEFINE_integer(
        "replicas",
        1,
        "Replicas (train, end_to_end): >1 mirrors over that many GPUs, "
        "or logical CPU devices on a machine without GPUs.",
    )
    flags.DEFINE_integer(
        "warmup_steps",
        None,
        "Untimed steps (batches) before timing; default: "
        + ", ".join(f"{m} {w}" for m, (w, _) in DEFAULT_STEPS.items())
        + ".",
    )
    flags.DEFINE_integer(
        "steps",
        None,
        "Timed steps (batches) per repeat; default: "
        + ", ".join(f"{m} {s}" for m, (_, s) in DEFAULT_STEPS.items())
        + ".",
    )
    flags.DEFINE_integer("repeats", 3, "Rounds over the rows; medians are reported.")
    flags.DEFINE_integer("num_classes", None, "Classes; default 1000 (train, serve) or the data's.")
    flags.DEFINE_integer("label_offset", None, "Subtracted from stored labels; default: detect.")
    flags.DEFINE_string(
        "data_dir", None, "Folder of train-* TFRecord shards (input, end_to_end); default: the demo dataset."
    )
    flags.DEFINE_string(
        "data_service",
        None,
        "input, end_to_end: also time the pipeline through the tf.data service at grpc://HOST:PORT; "
        "'local' starts a dispatcher and one worker on this machine (python -m alexnet_tf.data_service).",
    )
    flags.DEFINE_bool(
        "matmul", True, "train: also time a matmul in each row's dtype (the machine's ceiling)."
    )
    flags.DEFINE_integer("matmul_size", 4096, "train: n of the n x n x n matmul.")
    flags.DEFINE_integer("pil_processes", 2, "input: worker processes of the PIL loader.")
    flags.DEFINE_integer("requests", 200, "serve: timed batch-1 requests per latency row.")
    flags.DEFINE_integer("serve_batch_size", 64, "serve: images per throughput batch.")
    flags.DEFINE_multi_enum("variants", list(VARIANTS), VARIANTS, "tflite: the variants to convert and time.")
    flags.DEFINE_multi_enum(
        "quantize", list(TFLITE_QUANTIZATIONS), TFLITE_QUANTIZATIONS, "tflite: the quantisations to time."
    )
    flags.DEFINE_integer("tflite_threads", None, "tflite: LiteRT interpreter threads; default: CPU count.")
    flags.DEFINE_integer(
        "representative_images", 32, "tflite: random crops int8 is calibrated on (the weights are random)."
    )
    flags.DEFINE_bool(
        "onnx",
        False,
        "serve: also time onnxruntime (needs tf2onnx and onnxruntime: "
        "pip install '.[onnx]'); converting takes ~1 min and ~10 GiB of memory.",
    )
    flags.DEFINE_bool("json", False, "Print one JSON object instead of markdown tables.")


def _progress(message):
    print(f"alexnet_tf.benchmark: {message}", file=sys.stderr, flush=True)


def settings_from_flags(flag_values):
    """The settings the chosen mode uses, as a dict; raises ConfigError naming a bad flag."""
    fv, mode = flag_values, flag_values.mode
    warmup, steps = DEFAULT_STEPS[mode]
    warmup = warmup if fv.warmup_steps is None else fv.warmup_steps
    steps = steps if fv.steps is None else fv.steps
    positive = {
        "batch_size": fv.batch_size,
        "steps_per_execution": fv.steps_per_execution,
        "replicas": fv.replicas,
        "steps": steps,
        "repeats": fv.repeats,
        "requests": fv.requests,
        "serve_batch_size": fv.serve_batch_size,
        "pil_processes": fv.pil_processes,
        "matmul_size": fv.matmul_size,
    }
    if fv.num_classes is not None:
        positive["num_classes"] = fv.num_classes
    for name, value in positive.items():
        if value < 1:
            raise ConfigError(f"--{name}={value} must be >= 1")
    if warmup < 0:
        raise ConfigError(f"--warmup_steps={warmup} must be >= 0")
    if fv.replicas > 1 and mode not in ("train", "end_to_end"):
        raise ConfigError(f"--replicas={fv.replicas} applies to --mode=train and end_to_end only")
    if fv.data_dir is not None and mode not in ("input", "end_to_end"):
        raise ConfigError(f"--data_dir={fv.data_dir} applies to --mode=input and end_to_end only")
    if fv.data_service is not None:
        if mode not in ("input", "end_to_end"):
            raise ConfigError(f"--data_service={fv.data_service} applies to --mode=input and end_to_end only")
        if fv.data_service != "local":
            parse_service_address(fv.data_service)
    settings = {"warmup_steps": warmup, "steps": steps, "repeats": fv.repeats}
    if mode in ("train", "end_to_end"):
        for name, value in (("steps", steps), ("warmup_steps", warmup)):
            if value % fv.steps_per_execution:
                raise ConfigError(
                    f"--{name}={value} is not a multiple of --steps_per_execution={fv.steps_per_execution}"
                )
        if fv.batch_size % fv.replicas:
            raise ConfigError(f"--batch_size={fv.batch_size} is not divisible by --replicas={fv.replicas}")
        settings.update(
            variant=fv.variant,
            batch_size=fv.batch_size,
            precisions=list(dict.fromkeys(fv.precision)),
            jit_compile=fv.jit_compile,
            steps_per_execution=fv.steps_per_execution,
            replicas=fv.replicas,
        )
    if mode == "train":
        settings.update(
            num_classes=fv.num_classes or 1000,
            matmul_size=fv.matmul_size if fv.matmul else None,
            grouped_convs=list(dict.fromkeys(fv.grouped_conv)),
            filter_gradients=list(dict.fromkeys(fv.filter_gradient)),
        )
    else:
        for name in ("grouped_conv", "filter_gradient"):
            if fv[name].value != ["auto"]:
                raise ConfigError(f"--{name}={','.join(fv[name].value)} applies to --mode=train only")
    if mode in ("input", "end_to_end"):
        settings.update(
            batch_size=fv.batch_size,
            data_dir=fv.data_dir,
            num_classes=fv.num_classes,
            label_offset=fv.label_offset,
            data_service=fv.data_service,
        )
    if mode == "input":
        settings["pil_processes"] = fv.pil_processes
    if mode == "tflite":
        threads = fv.tflite_threads or os.cpu_count()
        if threads < 1 or fv.representative_images < 1:
            raise ConfigError("--tflite_threads and --representative_images must be >= 1")
        settings.update(
            variants=list(dict.fromkeys(fv.variants)),
            quantize=list(dict.fromkeys(fv.quantize)),
            num_classes=fv.num_classes or 1000,
            requests=fv.requests,
            tflite_threads=threads,
            representative_images=fv.representative_images,
        )
    if mode == "serve":
        settings.update(
            variant=fv.variant,
            num_classes=fv.num_classes or 1000,
            requests=fv.requests,
            serve_batch_size=fv.serve_batch_size,
            onnx=fv.onnx,
        )
    return settings


def environment(tf, keras):
    """Versions and hardware the figures were measured on."""
    from alexnet_tf import hardware

    gpus = tf.config.list_physical_devices("GPU")
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cpu_model": hardware.cpu_model() or platform.processor(),
        "cpu_flags": [flag for flag in CPU_FLAGS if flag in hardware.cpu_flags()],
        "cpus": os.cpu_count(),
        "gpus": [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus],
        "onednn": hardware.onednn_enabled(),
        "onednn_set_by": hardware.onednn_default
        or os.environ.get(hardware.ONEDNN_ENV, "TensorFlow's default"),
    }


def _demo_data_dir():
    from alexnet_tf.config import DEFAULT_DEMO_CACHE_DIR
    from alexnet_tf.data import demo  # only without --data_dir

    cache_dir = os.path.expanduser(DEFAULT_DEMO_CACHE_DIR)
    _progress(f"no --data_dir: using the demo dataset in {cache_dir} (built the first time, ~20 s)")
    return demo.build_demo_dataset(cache_dir, seed=0)


def run(mode, settings):
    """Runs one mode; returns (its result dict, a function that formats that dict as markdown).

    Raises:
      ConfigError: a flag the machine or the data cannot satisfy (one line naming it).
    """
    from alexnet_tf.benchmark import pipeline, serve, train
    from alexnet_tf.training import devices

    s = settings
    if mode == "tflite":
        from alexnet_tf.benchmark import tflite

        try:
            result = tflite.run(
                variants=s["variants"],
                quantizations=s["quantize"],
                num_classes=s["num_classes"],
                requests=s["requests"],
                warmup_steps=s["warmup_steps"],
                num_threads=s["tflite_threads"],
                representative_images=s["representative_images"],
                progress=_progress,
            )
        except ImportError as e:  # ai-edge-litert: the message says how to install it
            raise ConfigError(str(e)) from None
        return result, tflite.table
    timing = dict(
        warmup_steps=s["warmup_steps"], timed_steps=s["steps"], repeats=s["repeats"], progress=_progress
    )
    if mode == "serve":
        return serve.run(
            variant=s["variant"],
            num_classes=s["num_classes"],
            requests=s["requests"],
            batch_size=s["serve_batch_size"],
            onnx=s["onnx"],
            **timing,
        ), serve.table
    if mode in ("train", "end_to_end"):
        strategy = devices.mirrored_over(s["replicas"])  # before any other TensorFlow op
        for precision in s["precisions"]:
            devices.check_precision(precision, s["variant"])
        timing.update(
            variant=s["variant"],
            batch_size=s["batch_size"],
            precisions=s["precisions"],
            jit_compile=s["jit_compile"],
            steps_per_execution=s["steps_per_execution"],
        )
    if mode == "train":
        result = train.run_train(
            strategy,
            num_classes=s["num_classes"],
            matmul_size=s["matmul_size"],
            grouped_convs=s["grouped_convs"],
            filter_gradients=s["filter_gradients"],
            **timing,
        )
        return result, train.train_table
    data_dir = s["data_dir"] or _demo_data_dir()
    service, service_pids = s["data_service"], ()
    if service and service != "local":
        from alexnet_tf.config import TrainConfig
        from alexnet_tf.training.inputs import check_data_service

        check_data_service(TrainConfig(data_service=service))
    with contextlib.ExitStack() as stack:
        if service == "local":
            _progress("starting a tf.data service dispatcher and worker on this machine")
            local = stack.enter_context(pipeline.LocalService(workers=1))
            service, service_pids = local.address, tuple(local.worker_pids)
        try:
            if mode == "input":
                result, table = (
                    pipeline.run(
                        data_dir,
                        batch_size=s["batch_size"],
                        num_classes=s["num_classes"],
                        label_offset=s["label_offset"],
                        pil_processes=s["pil_processes"],
                        data_service=service,
                        service_pids=service_pids,
                        **timing,
                    ),
                    pipeline.table,
                )
            else:
                result, table = (
                    train.run_end_to_end(
                        strategy,
                        data_dir,
                        num_classes=s["num_classes"],
                        label_offset=s["label_offset"],
                        data_service=service,
                        **timing,
                    ),
                    train.end_to_end_table,
                )
        except ConfigError as e:
            raise ConfigError(f"--data_dir={data_dir}: {e}") from None
    result["data"]["demo"] = s["data_dir"] is None
    return result, table


def _title(mode, settings, result):
    s = settings
    if mode == "tflite":
        return (
            f"AlexNet {', '.join(s['variants'])} ({s['num_classes']} classes, random weights) as LiteRT "
            f"files ({', '.join(s['quantize'])}) against the SavedModel, {s['requests']} batch-1 "
            "requests each"
        )
    if mode == "serve":
        return (
            f"AlexNet {s['variant']} ({s['num_classes']} classes) serving from a SavedModel in this "
            f"process: {s['requests']} batch-1 requests, median of {s['repeats']} x {s['steps']} batches "
            f"of {s['serve_batch_size']}"
        )
    rounds = f"median of {s['repeats']} x {s['steps']} {'batches' if mode == 'input' else 'steps'}"
    data = result.get("data", {})
    source = f"{data.get('data_dir')}{' (the generated demo dataset)' if s.get('data_dir') is None else ''}"
    if s.get("data_service"):
        service = s["data_service"]
        where = "a dispatcher and worker started here" if service == "local" else service
        rounds += f"; service row through the tf.data service ({where})"
    if mode == "input":
        return f"Training input pipeline, batch {s['batch_size']}, {source}; {rounds}"
    what = "synthetic in-memory data" if mode == "train" else f"TFRecords from {source} and synthetic data"
    return (
        f"AlexNet {s['variant']} training with the trainer's train step, global batch {s['batch_size']} "
        f"on {s['replicas']} replica(s), {what}, jit_compile={s['jit_compile']}, "
        f"steps_per_execution={s['steps_per_execution']}; {rounds}"
    )


@contextlib.contextmanager
def _stdout_to_stderr():
    """Sends everything written to stdout (also by C++ code and child processes) to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        settings = settings_from_flags(FLAGS)
    except ConfigError as e:
        cli.fail(PROGRAM, e)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stdout_to_stderr():  # only the report goes to stdout
        import keras
        import tensorflow as tf

        try:
            result, table = run(FLAGS.mode, settings)
        except ConfigError as e:
            cli.fail(PROGRAM, e)
        env = environment(tf, keras)
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB
    report = {
        "mode": FLAGS.mode,
        "settings": settings,
        **result,
        "peak_rss_gib": peak_rss_gib,
        "environment": env,
    }
    if FLAGS.json:
        print(json.dumps(report, indent=2))
        return cli.ExitStatus.SUCCESS
    print(_title(FLAGS.mode, settings, result))
    gpus = ", ".join(env["gpus"]) or "none"
    print(
        f"TensorFlow {env['tensorflow']}, Keras {env['keras']}, Python {env['python']}; {env['cpus']} "
        f"CPUs: {env['cpu_model']} [{' '.join(env['cpu_flags'])}]; GPUs: {gpus}\n"
    )
    print(table(result))
    print(f"\npeak resident memory: {peak_rss_gib:.2f} GiB (this process)")
    return cli.ExitStatus.SUCCESS


def run_main():
    define_flags()
    cli.run(main, PROGRAM)


if __name__ == "__main__":
    run_main()
