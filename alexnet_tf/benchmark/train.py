"""Owns the training-speed modes of `python -m alexnet_tf.benchmark`: train and end_to_end.

Both time the trainer's own compiled train step (`training.step.make_train_function`, called as
`alexnet_tf.train` calls it), not `model.fit`. `train` feeds it synthetic batches held in
memory, so it measures the model and the optimizer alone; `end_to_end` alternates the
training TFRecords read and augmented exactly as the trainer does with the same synthetic
batches, so the ratio of the two is the cost of the input pipeline in a real run. Every
precision is built once, all of them share one dataset per source, and the repeats go
round-robin over all rows, so noise from other jobs on the machine hits them alike; before
each timed TFRecord round, --warmup_steps untimed steps use up the batches its pipeline
prefetched while the other rows ran. `matmul_tflops` measures the machine's matrix-multiply
rate in each row's arithmetic (float32 for float32 rows, bfloat16 or float16 for the mixed
ones), the practical ceiling of a training step, in every round beside the rows; on a GPU
that `benchmark.keras_backend.PEAK_TFLOPS` knows, rows also get their share of the datasheet peak.
"""

import dataclasses
import statistics
import time

import keras
import tensorflow as tf

from alexnet_tf import layers
from alexnet_tf.benchmark.keras_backend import peak_shares, peak_tflops
from alexnet_tf.benchmark.pipeline import describe_train_shards
from alexnet_tf.config import TrainConfig
from alexnet_tf.costs import layer_table, training_flops
from alexnet_tf.training import step as steps
from alexnet_tf.training.inputs import describe_data, make_input_fns

# build_state needs a schedule length; a benchmark never reaches it.
_SCHEDULE_STEPS = 1_000_000
# The matmul each precision's rows are compared with: the dtype their convolutions and matmuls run in.
MATMUL_DTYPE = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def device_peaks():
    """The first GPU's datasheet peaks (keras_backend.PEAK_TFLOPS), or None (CPUs, unknown GPUs)."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "")
    return peak_tflops(name, "gpu")


@dataclasses.dataclass
class TrainRow:
    precision: str
    grouped_conv: str  # the GroupedConv2D implementation the row ran ("native" or "split")
    filter_gradient: str  # how its stride-1 kernel gradients ran ("native" or "gemm")
    data: str  # "synthetic" or "tfrecord"
    images_per_sec: float  # median over repeats
    images_per_sec_min: float
    images_per_sec_max: float
    rounds_images_per_sec: list
    tflops: float  # achieved, at the model's training FLOPs per image


def matmul_tflops(dtype="bfloat16", n=4096, iters=10, repeats=3):
    """Best-of-`repeats` FLOP rate (in TFLOP/s) of an n x n x n `tf.matmul` in `dtype`."""
    a = tf.cast(tf.random.normal([n, n]), dtype)
    b = tf.cast(tf.random.normal([n, n]), dtype)
    step = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y)[:1, :1], tf.float32)))
    step(a, b).numpy()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            out = step(a, b)
        out.numpy()
        best = max(best, 2 * n**3 * iters / (time.perf_counter() - start) / 1e12)
    return best


class _Trainer:
    """One precision's (and grouped-convolution implementation's) training state and train function."""

    def __init__(
        self,
        config,
        strategy,
        num_classes,
        iterators,
        warmup_steps,
        grouped_conv="auto",
        filter_gradient="auto",
    ):
        self.steps_per_execution = config.steps_per_execution
        loss_scaling = config.precision == "mixed_float16"
        keras.mixed_precision.set_global_policy(config.precision)
        # The first calls trace under the policy and the grouped-convolution choice, as in the trainer.
        try:
            with (
                layers.grouped_conv_implementation(grouped_conv),
                layers.filter_gradient_implementation(filter_gradient),
            ):
                dtype = keras.mixed_precision.global_policy().compute_dtype
                self.grouped_conv = layers.resolve_grouped_conv_implementation(dtype)
                self.filter_gradient = layers.resolve_filter_gradient_implementation(dtype)
                self.state = steps.build_state(
                    config,
                    strategy,
                    num_classes,
                    steps_per_epoch=100,
                    total_steps=_SCHEDULE_STEPS,
                    loss_scaling=loss_scaling,
                )
                self.train = steps.make_train_function(
                    strategy, self.state, config.batch_size, config.jit_compile, loss_scaling
                )
                for iterator in iterators.values():
                    self.run(iterator, max(warmup_steps, self.steps_per_execution))
        finally:
            keras.mixed_precision.set_global_policy("float32")

    def run(self, iterator, num_steps):
        """Runs `num_steps` steps (a multiple of steps_per_execution); returns the seconds taken."""
        chunk, stop = tf.constant(self.steps_per_execution), tf.constant(0.0)
        start = time.perf_counter()
        for _ in range(num_steps // self.steps_per_execution):
            self.train(iterator, chunk, stop).numpy()  # the trainer waits for every call's sums too
        return time.perf_counter() - start


def _time_rows(
    config,
    strategy,
    num_classes,
    precisions,
    input_fns,
    warmup_steps,
    timed_steps,
    repeats,
    progress,
    each_round=None,
    grouped_convs=("auto",),
    filter_gradients=("auto",),
):
    """Builds every (precision, grouped_conv, filter_gradient), then times every such model on
    every source, round-robin.

    Returns:
      (TrainRows in (precision, grouped_conv, filter_gradient, source) order, training FLOPs
      per image).
    """
    # One distributed dataset per source, shared by all models, as the trainer has one.
    iterators = {name: iter(strategy.distribute_datasets_from_function(fn)) for name, fn in input_fns.items()}
    trainers = {}
    for precision in precisions:
        for grouped_conv in grouped_convs:
            for filter_gradient in filter_gradients:
                progress(
                    f"building the {precision} model (grouped convolutions: {grouped_conv}, "
                    f"filter gradients: {filter_gradient}) and tracing its train step"
                )
                keras.utils.set_random_seed(0)
                trainers[precision, grouped_conv, filter_gradient] = _Trainer(
                    dataclasses.replace(config, precision=precision),
                    strategy,
                    num_classes,
                    iterators,
                    warmup_steps,
                    grouped_conv,
                    filter_gradient,
                )
    flops_per_image = training_flops(layer_table(next(iter(trainers.values())).state.model))
    rates = {(key, s): [] for key in trainers for s in iterators}
    for repeat in range(repeats):
        progress(f"repeat {repeat + 1}/{repeats}")
        if each_round is not None:
            each_round()
        for (key, source), rounds in rates.items():
            trainer, iterator = trainers[key], iterators[source]
            if source != "synthetic" and warmup_steps:
                # Batches the pipeline prefetched while other rows ran must not count.
                trainer.run(iterator, warmup_steps)
            rounds.append(timed_steps * config.batch_size / trainer.run(iterator, timed_steps))
    rows = []
    for (key, source), rounds in rates.items():
        median = statistics.median(rounds)
        rows.append(
            TrainRow(
                key[0],
                trainers[key].grouped_conv,
                trainers[key].filter_gradient,
                source,
                median,
                min(rounds),
                max(rounds),
                rounds,
                median * flops_per_image / 1e12,
            )
        )
    return rows, flops_per_image


def run_train(
    strategy,
    *,
    variant,
    batch_size,
    precisions,
    num_classes,
    jit_compile,
    steps_per_execution,
    warmup_steps,
    timed_steps,
    repeats,
    matmul_size,
    grouped_convs=("auto",),
    filter_gradients=("auto",),
    progress=lambda message: None,
):
    """Training speed on synthetic in-memory batches.

    Args:
      strategy: from training.devices.mirrored_over.
      variant, batch_size, num_classes, jit_compile, steps_per_execution: as TrainConfig's.
      precisions: policies to time, each built once.
      warmup_steps: untimed steps after tracing.
      timed_steps: steps per repeat (multiples of steps_per_execution, as warmup_steps).
      repeats: rounds over the precisions; medians are reported.
      matmul_size: n of the n x n x n bfloat16 matmul whose rate is measured; None: skip it.
      grouped_convs: GroupedConv2D implementations to time ("auto", "native", "split"), each
        with every precision.
      filter_gradients: kernel-gradient implementations to time ("auto", "native", "gemm";
        layers.filter_gradient_implementation), each with every precision and grouped_conv.
      progress: called with a line of progress.

    Returns:
      A JSON-able dict: training_gflop_per_image, bf16_matmul_tflops, results (one per precision).
    """
    config = TrainConfig(
        variant=variant,
        batch_size=batch_size,
        num_classes=num_classes,
        data_source="synthetic",
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    info = describe_data(config, "")
    input_fns = {"synthetic": make_input_fns(config, info, seed=0).train}
    # The ceilings are timed in every round, next to the training they are compared with, so a
    # machine whose speed drifts (shared cores, a VM's neighbours) skews neither side.
    dtypes = sorted({MATMUL_DTYPE[p] for p in precisions})
    ceilings = {dtype: [] for dtype in dtypes}

    def time_ceiling():
        for dtype in dtypes:
            progress(f"timing a {matmul_size}x{matmul_size} {dtype} matmul")
            ceilings[dtype].append(matmul_tflops(dtype, n=matmul_size, repeats=2))

    rows, flops = _time_rows(
        config,
        strategy,
        num_classes,
        precisions,
        input_fns,
        warmup_steps,
        timed_steps,
        repeats,
        progress,
        time_ceiling if matmul_size else None,
        grouped_convs,
        filter_gradients,
    )
    peaks = device_peaks()
    results = []
    for row in rows:
        entry = dataclasses.asdict(row)
        del entry["data"]
        dtype = MATMUL_DTYPE[row.precision]
        entry["matmul_dtype"] = dtype
        # Median over rounds of (round's TFLOP/s / that round's matmul TFLOP/s in the row's dtype).
        entry["share_of_matmul"] = (
            statistics.median(
                rate * flops / 1e12 / ceiling
                for rate, ceiling in zip(row.rounds_images_per_sec, ceilings[dtype])
            )
            if matmul_size
            else None
        )
        entry["peak_tflops"], entry["peak_fraction"] = peak_shares(row.precision, row.tflops, peaks)
        results.append(entry)
    return {
        "training_gflop_per_image": flops / 1e9,
        "matmul_tflops": {d: statistics.median(c) for d, c in ceilings.items()} if matmul_size else None,
        "matmul_tflops_rounds": ceilings if matmul_size else None,
        "matmul_size": matmul_size,
        "results": results,
    }


def run_end_to_end(
    strategy,
    data_dir,
    *,
    variant,
    batch_size,
    precisions,
    num_classes,
    label_offset,
    jit_compile,
    steps_per_execution,
    warmup_steps,
    timed_steps,
    repeats,
    data_service=None,
    progress=lambda message: None,
):
    """Training speed from the TFRecords in `data_dir` and from synthetic batches, interleaved.

    Args:
      strategy: from training.devices.mirrored_over.
      data_dir: folder with train-* shards (and manifest.json or labels.txt).
      num_classes: None: from the data's labels file or manifest (checked against it otherwise).
      label_offset: None: detected as the trainer does.
      data_service: grpc://HOST:PORT of a tf.data service: adds rows fed by the same pipeline
        through it (source "service").
      Others: as run_train.

    Returns:
      A JSON-able dict: data (what was read), training_gflop_per_image, results (one per
      precision and source), ratios ("<precision> tfrecord/synthetic": median over rounds).

    Raises:
      ConfigError: no train-* shards, undetectable label offset, disagreeing num_classes.
    """
    config, info = describe_train_shards(
        data_dir,
        num_classes,
        label_offset,
        variant=variant,
        batch_size=batch_size,
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    synthetic = dataclasses.replace(config, data_source="synthetic")
    input_fns = {
        "tfrecord": make_input_fns(config, info, seed=None).train,
        "synthetic": make_input_fns(synthetic, info, seed=0).train,
    }
    if data_service:
        service_config = dataclasses.replace(config, data_service=data_service, model_dir="benchmark")
        input_fns["service"] = make_input_fns(service_config, info, seed=None).train
    rows, flops = _time_rows(
        config,
        strategy,
        info.num_classes,
        precisions,
        input_fns,
        warmup_steps,
        timed_steps,
        repeats,
        progress,
    )
    by_key = {(r.precision, r.data): r for r in rows}
    ratios = {
        f"{p} tfrecord/synthetic": statistics.median(
            t / s
            for t, s in zip(
                by_key[p, "tfrecord"].rounds_images_per_sec, by_key[p, "synthetic"].rounds_images_per_sec
            )
        )
        for p in precisions
    }
    if data_service:
        for p in precisions:
            ratios[f"{p} service/tfrecord"] = statistics.median(
                v / t
                for v, t in zip(
                    by_key[p, "service"].rounds_images_per_sec, by_key[p, "tfrecord"].rounds_images_per_sec
                )
            )
    return {
        "data": {
            "data_dir": data_dir,
            "num_classes": info.num_classes,
            "label_offset": info.label_offset,
            "train_examples": info.train_examples or None,
        },
        "training_gflop_per_image": flops / 1e9,
        "results": [dataclasses.asdict(r) for r in rows],
        "ratios": ratios,
    }


def train_table(result):
    """Markdown rows of run_train's result."""
    ceilings = result["matmul_tflops"]
    lines = [
        "| precision | grouped conv | filter gradient | images/sec (median) | min-max "
        "| achieved TFLOP/s | share of the same-run matmul | share of the device's peak |",
        "|---|---|---|---:|---|---:|---:|---|",
    ]
    for r in result["results"]:
        share = f"{100 * r['share_of_matmul']:.0f}% of {r['matmul_dtype']}" if ceilings else "-"
        peak = " / ".join(f"{100 * f:.1f}% of {k}" for k, f in r["peak_fraction"].items()) or "- (unknown)"
        lines.append(
            f"| {r['precision']} | {r['grouped_conv']} | {r['filter_gradient']} | {r['images_per_sec']:.1f} "
            f"| {r['images_per_sec_min']:.1f}-{r['images_per_sec_max']:.1f} | {r['tflops']:.3f} "
            f"| {share} | {peak} |"
        )
    lines.append("")
    if ceilings:
        n = result["matmul_size"]
        lines[-1] = "; ".join(
            f"{dtype} {n}x{n} matmul: {rate:.3f} TFLOP/s" for dtype, rate in ceilings.items()
        )
        lines[-1] += " (medians of the rounds); "
    else:
        lines[-1] = "matmul not measured (--nomatmul); "
    lines[-1] += f"{result['training_gflop_per_image']:.2f} GFLOP per training image"
    return "\n".join(lines)


def end_to_end_table(result):
    """Markdown rows of run_end_to_end's result."""
    lines = [
        "| precision | data | images/sec (median) | min-max | achieved TFLOP/s |",
        "|---|---|---:|---|---:|",
    ]
    for r in result["results"]:
        lines.append(
            f"| {r['precision']} | {r['data']} | {r['images_per_sec']:.1f} | "
            f"{r['images_per_sec_min']:.1f}-{r['images_per_sec_max']:.1f} | {r['tflops']:.3f} |"
        )
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in result["ratios"].items()]
    return "\n".join(lines)
