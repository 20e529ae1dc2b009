"""Owns `python -m alexnet_tf.benchmark.keras_backend`: training speed on any Keras backend, TensorFlow-free.

    KERAS_BACKEND=jax python -m alexnet_tf.benchmark.keras_backend --variant=one_weird_trick \
        --precision=mixed_bfloat16 --batch_size=128,256,512,1024 --json=figures.json

(not yet timed on a GPU: each row compiles its step once, then runs --warmup_steps + --repeats x
--steps steps. The defaults are for GPUs; on a CPU take tiny settings, e.g. --image_size=63
--batch_size=4 --steps=1: ~30 s a row on this project's 2 cores, most of it drawing the initial
weights and compiling.)
Built for GPU nodes that have JAX on a CUDA no TensorFlow wheel matches: under
KERAS_BACKEND=jax nothing in this command imports TensorFlow (tools/gpu_benchmark.sh runs it
from a folder that tools/build_backend_bundle.py fills with Keras and this package).

Every (variant, precision, batch size) row builds `build_alexnet` under the precision policy
and trains it on one synthetic batch generated on the device once: SGD with momentum 0.9 and
the paper's weight decay, 5e-4 * w added to the gradient of every kernel inside the update, as
`alexnet_tf.optim.MomentumSGD` does for the trainer. On JAX the train step is
`model.stateless_call` and `optimizer.stateless_apply` in one `jax.jit` that donates the
state, called step after step without waiting (the host queues the next step while the device
runs this one); other backends run `model.compile(jit_compile=...)` + `train_on_batch`, which
waits for every step's loss (`--train_step=train_on_batch` times that on JAX too). The rows
run one after the other, each freed before the next (a GPU is not shared, so the round-robin
the TensorFlow benchmark needs on a drifting CPU buys nothing, and one row at a time fits a
batch of 1024 in memory); the JSON file is rewritten after every row, so a run cut short
keeps the rows it finished.

Per row: images/s (median of --repeats rounds of --steps steps, with min-max), the achieved
TFLOP/s at the training FLOPs per image that `alexnet_tf.costs` counts, and the share of the
device's datasheet peak where `PEAK_TFLOPS` knows the device (CPUs: TFLOP/s only). A markdown
table goes to stdout, progress to stderr, and --json=FILE gets the rows with the settings and
the environment (backend and versions, device, whether TensorFlow was imported).
"""

import dataclasses
import gc
import json
import math
import os
import platform
import statistics
import sys
import time

from absl import app, flags
import keras

from alexnet_tf import cli, hardware
from alexnet_tf.config import ConfigError
from alexnet_tf.costs import layer_table, training_flops
from alexnet_tf.model import VARIANTS, build_alexnet

FLAGS = flags.FLAGS
PROGRAM = "alexnet_tf.benchmark.keras_backend"
PRECISIONS = ("mixed_bfloat16", "float32")
TRAIN_STEPS = ("auto", "jit", "train_on_batch")
NUM_CLASSES = 1000
LEARNING_RATE = 0.01  # the paper's initial rate; a constant, as no schedule changes speed
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4

# Dense (no sparsity) peak TFLOP/s from NVIDIA's datasheets: "NVIDIA A100 Tensor Core GPU",
# "NVIDIA H100 Tensor Core GPU" and "NVIDIA H200 Tensor Core GPU" (SXM and PCIe columns). They
# print tensor-core rates "with sparsity", twice the dense rates given here: H100 SXM's
# 1,979 bf16 is 989.5 dense; FP32 (67 on H100 SXM) is the CUDA cores' rate. "tf32" is the
# float32 rows' tensor-core rate: XLA (JAX's default matmul precision) and TensorFlow compute
# float32 convolutions and matmuls in TF32 on Ampere and later unless told otherwise, so those
# rows get both shares.
# Matched in order by substring of the device name (JAX's device_kind, e.g. "NVIDIA H100 80GB
# HBM3"); the NVL boards run at other clocks and powers and are left unknown.
PEAK_TFLOPS = (
    ("NVL", None),
    ("A100", {"bfloat16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("H100 PCIe", {"bfloat16": 756.5, "tf32": 378.0, "fp32": 51.0}),
    ("H100", {"bfloat16": 989.5, "tf32": 494.5, "fp32": 67.0}),  # SXM: "H100 80GB HBM3"
    ("H200", {"bfloat16": 989.5, "tf32": 494.5, "fp32": 67.0}),  # SXM: H100's compute
)


def define_flags():
    """Defines the command-line flags; only the entry point calls this, so that importing
    this module for its functions defines no flags."""
    flags.DEFINE_multi_string(
        "variant",
        ["paper", "one_weird_trick"],
        f"AlexNet variants ({', '.join(VARIANTS)}): comma-separated or the flag repeated.",
    )
    flags.DEFINE_multi_string(
        "precision",
        list(PRECISIONS),
        f"Precision policies ({', '.join(PRECISIONS)}): comma-separated or the flag repeated.",
    )
    flags.DEFINE_multi_string(
        "batch_size", ["128"], "Batch sizes, e.g. 128,256,512,1024: comma-separated or the flag repeated."
    )
    flags.DEFINE_integer("image_size", 224, "Input height and width (one_weird_trick takes 63 and up).")
    flags.DEFINE_integer("warmup_steps", 5, "Untimed steps after compiling (the first step compiles).")
    flags.DEFINE_integer("steps", 30, "Timed steps per round.")
    flags.DEFINE_integer("repeats", 3, "Timed rounds per row; the median is reported.")
    flags.DEFINE_enum(
        "train_step",
        "auto",
        TRAIN_STEPS,
        "auto: jit on JAX, train_on_batch elsewhere. jit (JAX only): stateless_call + "
        "stateless_apply in one jax.jit donating the state. train_on_batch: model.compile + "
        "train_on_batch, which waits for every step.",
    )
    flags.DEFINE_string("json", None, "Also write the rows, settings and environment to this JSON file.")


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    variants: tuple
    precisions: tuple
    batch_sizes: tuple
    image_size: int
    warmup_steps: int
    steps: int
    repeats: int
    train_step: str  # "jit" or "train_on_batch" (auto resolved)
    json_path: str = None


def _listed(name, values):
    """A multi-string flag's values, commas split, duplicates dropped, order kept."""
    items = [v.strip() for value in values for v in value.split(",")]
    if not items or not all(items):
        raise ConfigError(f"--{name}={','.join(values)} has an empty item")
    return tuple(dict.fromkeys(items))


def _min_image_size(variant):
    # As build_alexnet: the adaptive pool takes 63x63 and up, the fixed 6x6 pool5 needs 224.
    return 63 if VARIANTS[variant].adaptive_pool else 224


def config_from_flags(fv, backend):
    """The BenchmarkConfig the flags ask for on `backend`; raises ConfigError naming a bad flag."""
    variants = _listed("variant", fv.variant)
    precisions = _listed("precision", fv.precision)
    for name, values, allowed in (("variant", variants, VARIANTS), ("precision", precisions, PRECISIONS)):
        for value in values:
            if value not in allowed:
                raise ConfigError(f"--{name}={value} is not one of {', '.join(allowed)}")
    batch_sizes = []
    for value in _listed("batch_size", fv.batch_size):
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"--batch_size={value} is not a positive integer")
        batch_sizes.append(int(value))
    for name in ("steps", "repeats"):
        if getattr(fv, name) < 1:
            raise ConfigError(f"--{name}={getattr(fv, name)} must be >= 1")
    if fv.warmup_steps < 0:
        raise ConfigError(f"--warmup_steps={fv.warmup_steps} must be >= 0")
    for variant in variants:
        if fv.image_size < _min_image_size(variant):
            raise ConfigError(
                f"--image_size={fv.image_size} is below the {_min_image_size(variant)} "
                f"that --variant={variant} needs"
            )
    train_step = fv.train_step
    if train_step == "auto":
        train_step = "jit" if backend == "jax" else "train_on_batch"
    elif train_step == "jit" and backend != "jax":
        raise ConfigError(f"--train_step=jit needs KERAS_BACKEND=jax (this is {backend})")
    return BenchmarkConfig(
        variants=variants,
        precisions=precisions,
        batch_sizes=tuple(dict.fromkeys(batch_sizes)),
        image_size=fv.image_size,
        warmup_steps=fv.warmup_steps,
        steps=fv.steps,
        repeats=fv.repeats,
        train_step=train_step,
        json_path=fv.json,
    )


class PaperSGD(keras.optimizers.SGD):
    """Keras' SGD (momentum as the paper's: v <- m * v - lr * g; w <- w + v) with the paper's
    weight decay added to the gradient of every kernel inside the update, as
    `alexnet_tf.optim.MomentumSGD` does with TensorFlow kernels; written in `keras.ops`, so
    it runs on every backend, and under `jax.jit` XLA fuses it into one pass per variable."""

    def __init__(self, l2, **kwargs):
        super().__init__(**kwargs)
        self.l2 = float(l2)
        self._decayed = []

    def build(self, variables):
        super().build(variables)
        # alexnet_tf.optim.decays' rule (that module imports TensorFlow): kernels, not biases.
        self._decayed = [v.name.split(":")[0].endswith("kernel") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        if self._decayed[self._get_variable_index(variable)]:
            gradient = keras.ops.add(
                keras.ops.cast(gradient, variable.dtype), keras.ops.multiply(self.l2, variable)
            )
        super().update_step(gradient, variable, learning_rate)


def _progress(message):
    print(f"alexnet_tf.benchmark.keras_backend: {message}", file=sys.stderr, flush=True)


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class _JitStep:
    """The JAX train step: one jitted call per step; the state lives in JAX arrays, not the model."""

    def __init__(self, model, optimizer, images, labels):
        import jax  # JAX backend only

        self._jax, self._images, self._labels = jax, images, labels
        loss_fn = _loss()

        def loss_and_state(trainable, non_trainable, x, y):
            # training=True: dropout draws its masks from the seed generators' state, which
            # is part of non_trainable and comes back advanced.
            logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            return loss_fn(y, logits), non_trainable

        gradient = jax.value_and_grad(loss_and_state, has_aux=True)

        def step(state, x, y):
            trainable, non_trainable, optimizer_state = state
            (loss, non_trainable), grads = gradient(trainable, non_trainable, x, y)
            trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
            return (trainable, non_trainable, optimizer_state), loss

        optimizer.build(model.trainable_variables)
        # Donated: XLA updates the weights and momenta in place instead of holding two copies.
        # The model's and optimizer's own variables keep the donated (deleted) buffers; this
        # benchmark never reads them again.
        self._step = jax.jit(step, donate_argnums=0)
        self._state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables],
        )
        self._loss = None

    def run(self, num_steps):
        """Queues `num_steps` steps and waits for the last; returns the seconds taken."""
        start = time.perf_counter()
        for _ in range(num_steps):
            self._state, self._loss = self._step(self._state, self._images, self._labels)
        self._jax.block_until_ready((self._state, self._loss))
        return time.perf_counter() - start

    def loss(self):
        return float(self._loss)


class _TrainOnBatchStep:
    """`model.compile` + `train_on_batch`: the plain Keras way, on any backend."""

    def __init__(self, model, optimizer, images, labels):
        # torch.compile is not what a Keras user gets by default; XLA is, on JAX and TensorFlow.
        model.compile(optimizer=optimizer, loss=_loss(), jit_compile=keras.backend.backend() != "torch")
        self._model, self._images, self._labels = model, images, labels
        self._loss = None

    def run(self, num_steps):
        start = time.perf_counter()
        for _ in range(num_steps):
            # Returns the loss as a NumPy number: the step has finished when it returns.
            self._loss = self._model.train_on_batch(self._images, self._labels)
        return time.perf_counter() - start

    def loss(self):
        return float(self._loss)


def device():
    """(platform, device name, device count) of the devices the active backend trains on."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        devices = jax.devices()
        platform_name, kind = devices[0].platform, devices[0].device_kind
    elif backend == "tensorflow":
        import tensorflow as tf  # it is the backend

        devices = tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("CPU")
        platform_name = devices[0].device_type.lower()
        kind = tf.config.experimental.get_device_details(devices[0]).get("device_name", "")
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            devices = range(torch.cuda.device_count())
            platform_name, kind = "gpu", torch.cuda.get_device_name(0)
        else:
            devices, platform_name, kind = [0], "cpu", ""
    else:
        devices, platform_name, kind = [0], "unknown", ""
    if platform_name == "cpu" or not kind:
        kind = hardware.cpu_model() or platform.processor() or kind or platform_name
    return platform_name, kind, len(devices)


def peak_tflops(device_name, platform_name):
    """{"bfloat16"|"tf32"|"fp32": datasheet TFLOP/s} of a known GPU, else None."""
    if platform_name not in ("gpu", "cuda"):
        return None
    for pattern, peaks in PEAK_TFLOPS:
        if pattern in device_name:
            return peaks
    return None


def peak_shares(precision, tflops, peaks):
    """The row's achieved TFLOP/s over each peak its arithmetic may run at ({} where unknown)."""
    if not peaks:
        return {}, {}
    kinds = ("bfloat16",) if precision == "mixed_bfloat16" else ("fp32", "tf32")
    row_peaks = {k: peaks[k] for k in kinds}
    return row_peaks, {k: tflops / p for k, p in row_peaks.items()}


def time_row(config, variant, precision, batch_size, peaks):
    """Builds, compiles and times one row; returns its JSON-able dict."""
    keras.backend.clear_session()  # drops the previous row's model and compiled functions
    gc.collect()
    keras.mixed_precision.set_global_policy(precision)
    try:
        # No keras.utils.set_random_seed: it imports TensorFlow wherever it is installed, and
        # the weights' values do not change the speed.
        size = config.image_size
        # weight_decay=0: the decay is in the optimizer's update (PaperSGD), not an L2 loss.
        model = build_alexnet(
            num_classes=NUM_CLASSES, variant=variant, input_shape=(size, size, 3), weight_decay=0.0
        )
        flops_per_image = training_flops(layer_table(model))
        # Generated on the device once: [0, 255] pixels minus a mean, as alexnet_tf.data.pipelines gives them.
        images = keras.random.uniform((batch_size, size, size, 3), minval=-128.0, maxval=128.0, seed=1)
        labels = keras.random.randint((batch_size,), 0, NUM_CLASSES, seed=2)
        optimizer = PaperSGD(WEIGHT_DECAY, learning_rate=LEARNING_RATE, momentum=MOMENTUM)
        step_class = _JitStep if config.train_step == "jit" else _TrainOnBatchStep
        trainer = step_class(model, optimizer, images, labels)
        compile_seconds = trainer.run(1)  # the first step compiles
        if config.warmup_steps > 1:
            trainer.run(config.warmup_steps - 1)
        rounds = [batch_size * config.steps / trainer.run(config.steps) for _ in range(config.repeats)]
        final_loss = trainer.loss()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    median = statistics.median(rounds)
    tflops = median * flops_per_image / 1e12
    row_peaks, shares = peak_shares(precision, tflops, peaks)
    return {
        "variant": variant,
        "precision": precision,
        "batch_size": batch_size,
        "images_per_sec": median,
        "images_per_sec_min": min(rounds),
        "images_per_sec_max": max(rounds),
        "rounds_images_per_sec": rounds,
        "training_flops_per_image": flops_per_image,
        "tflops": tflops,
        "peak_tflops": row_peaks,
        "peak_fraction": shares,
        "compile_seconds": compile_seconds,
        "final_loss": final_loss,  # finite unless the step is broken; speed does not depend on it
        "final_loss_finite": math.isfinite(final_loss),
    }


def environment():
    """The backend, versions and device the figures were measured on."""
    backend = keras.backend.backend()
    platform_name, device_name, device_count = device()
    env = {
        "backend": backend,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "platform": platform_name,
        "device": device_name,
        "device_count": device_count,  # the benchmark trains on the first
        "cpu_model": hardware.cpu_model() or platform.processor(),
        "cpus": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    if backend == "jax":
        import jax
        import jaxlib

        env.update(
            jax=jax.__version__,
            jaxlib=jaxlib.__version__,
            # None is XLA's default: TF32 for float32 convolutions and matmuls on Ampere and later.
            jax_default_matmul_precision=jax.config.jax_default_matmul_precision,
        )
    elif backend in ("tensorflow", "torch"):
        env[backend] = sys.modules[backend].__version__
    return env


def _write_json(path, report):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    os.replace(path + ".tmp", path)


def run(config):
    """Times every row of `config`; returns the report dict (written to config.json_path after each row)."""
    env = environment()
    peaks = peak_tflops(env["device"], env["platform"])
    _progress(
        f"{env['backend']} on {env['platform']}: {env['device']}; "
        + (f"datasheet peaks {peaks} TFLOP/s" if peaks else "no known peak for this device")
    )
    report = {
        "command": "alexnet_tf.benchmark.keras_backend",
        "settings": {
            **dataclasses.asdict(config),
            "num_classes": NUM_CLASSES,
            "learning_rate": LEARNING_RATE,
            "momentum": MOMENTUM,
            "weight_decay": WEIGHT_DECAY,
            "data": "synthetic, on the device",
        },
        "results": [],
        "complete": False,
        "environment": env,
    }
    rows = [(v, p, b) for v in config.variants for p in config.precisions for b in config.batch_sizes]
    for index, (variant, precision, batch_size) in enumerate(rows, start=1):
        _progress(f"row {index}/{len(rows)}: {variant} {precision} batch {batch_size}: compiling and timing")
        row = time_row(config, variant, precision, batch_size, peaks)
        _progress(
            f"row {index}/{len(rows)}: {row['images_per_sec']:.1f} images/s, {row['tflops']:.3f} TFLOP/s "
            f"(compiled in {row['compile_seconds']:.1f} s)"
        )
        report["results"].append(row)
        if config.json_path:
            _write_json(config.json_path, report)
    report["complete"] = True
    return report


def table(report):
    """The report as a title line and a markdown table."""
    env, s = report["environment"], report["settings"]
    versions = ", ".join(
        f"{k} {env[k]}" for k in ("keras", "jax", "jaxlib", "tensorflow", "torch") if k in env
    )
    lines = [
        f"AlexNet training, Keras backend {env['backend']} ({versions}, Python {env['python']}) on "
        f"{env['platform']}: {env['device']}; train step: {s['train_step']}; synthetic data on the device; "
        f"{s['image_size']}x{s['image_size']} images; median of {s['repeats']} x {s['steps']} steps "
        f"after {s['warmup_steps']} warm-up",
        "",
        "| variant | precision | batch | images/s (median) | min-max | TFLOP/s | share of peak | compile s |",
        "|---|---|---:|---:|---|---:|---|---:|",
    ]
    for r in report["results"]:
        share = " / ".join(f"{100 * f:.1f}% of {k}" for k, f in r["peak_fraction"].items()) or "-"
        lines.append(
            f"| {r['variant']} | {r['precision']} | {r['batch_size']} | {r['images_per_sec']:.1f} "
            f"| {r['images_per_sec_min']:.1f}-{r['images_per_sec_max']:.1f} | {r['tflops']:.3f} | {share} "
            f"| {r['compile_seconds']:.1f} |"
        )
    gflops = {r["variant"]: r["training_flops_per_image"] / 1e9 for r in report["results"]}
    lines.append(
        "\nGFLOP per training image: "
        + ", ".join(f"{v} {g:.2f}" for v, g in gflops.items())
        + (
            ""
            if report["results"] and report["results"][0]["peak_fraction"]
            else "; no known peak for this device"
        )
    )
    if not env["tensorflow_imported"]:
        lines[-1] += "; TensorFlow was not imported"
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = config_from_flags(FLAGS, keras.backend.backend())
    except ConfigError as e:
        cli.fail(PROGRAM, e)
    report = run(config)
    # Last, so that it covers everything the run did.
    report["environment"]["tensorflow_imported"] = "tensorflow" in sys.modules
    if config.json_path:
        _write_json(config.json_path, report)
    print(table(report))
    return cli.ExitStatus.SUCCESS


def run_main():
    define_flags()
    cli.run(main, PROGRAM)


if __name__ == "__main__":
    run_main()
