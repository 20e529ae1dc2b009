"""Owns the input mode of `python -m alexnet_tf.benchmark`: the training pipeline against its bounds.

    python -m alexnet_tf.benchmark --mode=input --data_dir=/data/imagenet-tfrecords

takes about a minute on 2 cores with the defaults (3 rounds of 40 batches of 128 per row).
Without --data_dir it reads the generated demo dataset (1,000 rendered 256-pixel JPEGs in the
converter's schema, the data of `python -m alexnet_tf.train --demo`); a bigger set of the same
kind comes from `python tools/make_demo_dataset.py --output_dir=/tmp/bench_data
--train_per_class=400`.

Rows, timed round-robin so that machine noise (other jobs on the CPU) hits them alike; each
figure is the median over --repeats rounds of --steps batches of --batch_size images, after
--warmup_steps batches. "CPU ms/image" counts the CPU time of the process (and of the PIL
workers) per image: unlike images/sec it barely moves when other jobs share the cores, so
its ratios are the steadier comparison.
  decode:   read the train-* shards and tf.io.decode_jpeg every image, in parallel over all
            cores. Nothing else: the stage's physical bound on this machine.
  pipeline: the trainer's training dataset (alexnet_tf.training.inputs.make_input_fns ->
            data.pipelines.training_dataset, paper augmentation): what the host does per image
            to feed an accelerator. Its batches are uint8 crops with each image's flip and
            lighting draws; the train step flips, adds the lighting and subtracts the mean on
            the accelerator.
  pipeline+finish: the same, with that last step (preprocessing.finish_batch, one XLA kernel)
            run here on the CPU into float32 batches: the input's whole cost when the CPU
            also trains, and the row to compare with pil.
  pil:      a multiprocessing.Pool of --pil_processes, each decoding the same records' JPEG bytes
            with PIL and doing the same work (random crop of the 256 square, flip, PCA lighting,
            mean subtraction) into float32 batches in shared memory. The JPEG bytes are read into
            memory up front (only as many records as one round uses), which favours this row.
            Skipped, with a note, when Pillow is not installed.
  service:  with --data_service, the pipeline row's dataset through the tf.data service
            (workers read, decode, crop and batch; this process finishes the batches).
            --data_service=local starts a dispatcher and one worker on this machine
            (`python -m alexnet_tf.data_service`, free ports): its CPU time is then counted
            with this process's, and "worker images/sec per core" is images per CPU-second of
            the worker alone, the figure that sizes a service (docs/distributed.md).

Then, once per round, the cost of an exact resume (alexnet_tf.data.order's training order): the
seconds from building the trainer's dataset to its first batch at the epoch's start and at its
middle (a run resumed there), and the rate at which the shards' records are read without
parsing or decoding, which is what a resume spends reaching its place; docs/design/exact-resume.md
extrapolates it to ImageNet.

TensorFlow is imported inside the functions: the PIL workers import this module and stay
free of it.
"""

import dataclasses
import gc
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

RESUME_FIGURES = (
    "epoch_start_seconds",
    "mid_epoch_seconds",
    "read_records_per_sec",
    "read_megabytes_per_sec",
)


def describe_train_shards(data_dir, num_classes=None, label_offset=None, **config_fields):
    """The trainer's (TrainConfig, DataInfo) of the train-* shards in `data_dir`; no validation split needed.

    Raises:
      ConfigError: no train-* shards, undetectable label offset, disagreeing num_classes.
    """
    from alexnet_tf.config import TrainConfig
    from alexnet_tf.training.inputs import describe_data

    # Shards whose manifest does not list their record counts are counted (the training order
    # is planned from them).
    config = TrainConfig(
        data_dir=data_dir, num_classes=num_classes, label_offset=label_offset, **config_fields
    )
    return config, describe_data(config, require_validation=False)


def _cpu_seconds(pids, own=True):
    """User + system CPU seconds used so far by this process (all threads, when `own`) and `pids`."""
    total = time.process_time() if own else 0.0  # ns resolution; os.times() counts 10 ms ticks
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _timed(batches, warmup_batches, timed_batches, batch_size, pids=(), service_pids=()):
    """(images/sec, CPU ms/image) of `timed_batches` batches of an iterator, after `warmup_batches`.

    CPU time is this process's and that of `pids` and `service_pids`; a third value, the CPU
    ms/image of `service_pids` alone, is added when they are given.
    """
    for _ in range(warmup_batches):
        next(batches)
    pids = tuple(pids) + tuple(service_pids)
    start, cpu, service_cpu = time.perf_counter(), _cpu_seconds(pids), _cpu_seconds(service_pids, own=False)
    for _ in range(timed_batches):
        next(batches)
    images = timed_batches * batch_size
    timing = (images / (time.perf_counter() - start), (_cpu_seconds(pids) - cpu) * 1e3 / images)
    if service_pids:
        timing += ((_cpu_seconds(service_pids, own=False) - service_cpu) * 1e3 / images,)
    return timing


def _decode_only(tf, files, batch_size):
    def decode(record):
        encoded = tf.io.parse_single_example(record, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})[
            "image/encoded"
        ]
        image = tf.io.decode_jpeg(encoded, channels=3)
        return tf.shape(image)[0] + tf.cast(image[0, 0, 0], tf.int32)  # keeps the decode alive

    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE).repeat()
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return (batch for batch in dataset)


def _pipeline(train_dataset):
    return (images for images, _ in train_dataset())


def _pipeline_finished_on_host(tf, train_dataset):
    from alexnet_tf.data import preprocessing

    with tf.device("/device:CPU:0"):
        for images, _ in train_dataset():
            yield preprocessing.finish_batch(images)


def _first_batch_seconds(train_dataset, start_step):
    start = time.perf_counter()
    next(iter(train_dataset(start=start_step)))
    return time.perf_counter() - start


def _read_rate(tf, files, records, at_least=20_000):
    """(records/s, MB/s) reading the shards' records, neither parsed nor decoded, 16 shards at a time.

    The shards are read as many times as it takes to read `at_least` records (`records` per
    pass), so that start-up does not dominate on small datasets; repeated reads come from the
    page cache, so this is the per-record cost of a resume's reading, not a disk's bandwidth.
    """
    passes = -(-at_least // max(records, 1))
    start = time.perf_counter()
    dataset = tf.data.Dataset.from_tensor_slices(files * passes).interleave(
        tf.data.TFRecordDataset, cycle_length=16, num_parallel_calls=tf.data.AUTOTUNE
    )

    def add(totals, group):
        lengths = tf.cast(tf.strings.length(group), tf.int64)
        return totals[0] + tf.size(group, out_type=tf.int64), totals[1] + tf.reduce_sum(lengths)

    read = dataset.batch(64).reduce((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), add)
    seconds = time.perf_counter() - start
    return int(read[0]) / seconds, int(read[1]) / seconds / 1e6


# ----------------------------------------------------------------------------- PIL loader

_WORKER = {}


def _pil_init(jpegs, shm_name, slots, batch_size, mean, eigval, eigvec):
    from multiprocessing import shared_memory

    # Constants come from alexnet_tf.data in the parent: workers stay free of TensorFlow.
    _WORKER["mean"] = np.asarray(mean, np.float32)
    _WORKER["eigval"] = np.asarray(eigval, np.float32) * 255.0
    _WORKER["eigvec"] = np.asarray(eigvec, np.float32)
    _WORKER["jpegs"] = jpegs
    _WORKER["shm"] = shared_memory.SharedMemory(name=shm_name)
    _WORKER["out"] = np.ndarray((slots, batch_size, 224, 224, 3), np.float32, _WORKER["shm"].buf)


def _pil_batch(task):
    from PIL import Image

    start, slot, seed = task
    jpegs, out = _WORKER["jpegs"], _WORKER["out"][slot]
    rng = np.random.default_rng(seed)
    for i in range(out.shape[0]):
        image = Image.open(io.BytesIO(jpegs[(start + i) % len(jpegs)])).convert("RGB")
        side = min(image.size)
        left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
        image = image.crop((left, top, left + side, top + side))
        if side != 256:
            image = image.resize((256, 256), Image.BILINEAR)
        dy, dx = rng.integers(0, 33, size=2)
        crop = np.asarray(image)[dy : dy + 224, dx : dx + 224]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        alpha = rng.normal(0.0, 0.1, 3).astype(np.float32)
        offset = _WORKER["eigvec"] @ (alpha * _WORKER["eigval"]) - _WORKER["mean"]
        np.add(crop, offset, out=out[i])
    return slot


class _PilLoader:
    """Batches from a process pool writing into a ring of shared-memory slots (as torch's loader)."""

    SLOTS = 6

    def __init__(self, jpegs, processes, batch_size, constants):
        import multiprocessing
        from multiprocessing import shared_memory

        self._batch_size, slots = batch_size, self.SLOTS
        self._shm = shared_memory.SharedMemory(create=True, size=slots * batch_size * 224 * 224 * 3 * 4)
        self._out = np.ndarray((slots, batch_size, 224, 224, 3), np.float32, self._shm.buf)
        # spawn, not fork: the parent runs TensorFlow's threads.
        self._pool = multiprocessing.get_context("spawn").Pool(
            processes, _pil_init, (jpegs, self._shm.name, slots, batch_size) + constants
        )
        self._pool.map(_pil_batch, [(0, s, s) for s in range(processes)])  # start-up off the clock

    @property
    def pids(self):
        return [process.pid for process in self._pool._pool]  # noqa: SLF001  multiprocessing.Pool names no public list of its workers

    def batches(self):
        pending, step = [], 0
        try:
            while True:
                while len(pending) < self.SLOTS - 1:
                    pending.append(
                        self._pool.apply_async(
                            _pil_batch, ((step * self._batch_size, step % self.SLOTS, step),)
                        )
                    )
                    step += 1
                yield self._out[pending.pop(0).get()]
        finally:  # let the workers go idle before the next row is timed
            for result in pending:
                result.wait()

    def close(self):
        self._pool.terminate()
        self._pool.join()
        del self._out
        self._shm.close()
        self._shm.unlink()


def _read_jpegs(tf, files, count):
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
    return [
        tf.io.parse_single_example(r, spec)["image/encoded"].numpy()
        for r in tf.data.TFRecordDataset(files).take(count)
    ]


class LocalService:
    """A tf.data service dispatcher and worker(s) on this machine: `python -m alexnet_tf.data_service`.

    Started on free ports of 127.0.0.1 as subprocesses, stopped with SIGTERM on exit; `address`
    is the dispatcher's grpc:// address and `worker_pids` the workers' process ids.
    """

    def __init__(self, workers=1, timeout_s=300):
        self._workers, self._timeout_s = workers, timeout_s
        self._processes, self._logs = [], []
        self.address, self.worker_pids = None, []

    @staticmethod
    def _free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def _start(self, *args):
        log = tempfile.TemporaryFile("w+")
        command = [sys.executable, "-m", "alexnet_tf.data_service", *args]
        self._processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        self._logs.append(log)
        return self._processes[-1]

    def __enter__(self):
        port = self._free_port()
        self.address = f"grpc://127.0.0.1:{port}"
        try:
            self._start("dispatcher", f"--port={port}")
            for _ in range(self._workers):
                worker_port = self._free_port()
                worker = self._start(
                    "worker",
                    f"--dispatcher=127.0.0.1:{port}",
                    f"--port={worker_port}",
                    f"--worker_address=127.0.0.1:{worker_port}",
                )
                self.worker_pids.append(worker.pid)
            deadline = time.monotonic() + self._timeout_s
            for process, log in zip(self._processes, self._logs):
                while True:
                    log.seek(0)
                    text = log.read()
                    if "serving on" in text:
                        break
                    if process.poll() is not None or time.monotonic() > deadline:
                        last = text.strip().splitlines()[-1:] or ["(no output)"]
                        raise RuntimeError(f"the local tf.data service did not start: {last[0]}")
                    time.sleep(0.2)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info):
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()


def run(
    data_dir,
    *,
    batch_size,
    num_classes,
    label_offset,
    warmup_steps,
    timed_steps,
    repeats,
    pil_processes,
    data_service=None,
    service_pids=(),
    progress=lambda message: None,
):
    """Times the rows round-robin.

    Args:
      data_dir: folder with train-* shards (and manifest.json or labels.txt).
      batch_size: images per batch.
      num_classes, label_offset: None: from the data, as the trainer does.
      warmup_steps, timed_steps: untimed and timed batches of every row in every round.
      repeats: rounds; medians are reported.
      pil_processes: worker processes of the PIL loader.
      data_service: grpc://HOST:PORT of a tf.data service: adds the "service" row.
      service_pids: process ids of that service's workers on this machine (LocalService), whose
        CPU time the service row counts; empty for a remote service.
      progress: called with a line of progress.

    Returns:
      A JSON-able dict: data, results (one per row: images/sec median/min/max, CPU ms/image,
      per round), ratios, skipped (rows not run, with the reason).

    Raises:
      ConfigError: no train-* shards, undetectable label offset, disagreeing num_classes.
    """
    import tensorflow as tf

    from alexnet_tf.data import preprocessing
    from alexnet_tf.training.inputs import make_input_fns

    config, info = describe_train_shards(data_dir, num_classes, label_offset, batch_size=batch_size)
    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, config.train_pattern)))
    train_dataset = make_input_fns(config, info, seed=None).train
    rows = {
        "decode": lambda: _decode_only(tf, files, batch_size),
        "pipeline": lambda: _pipeline(train_dataset),
        "pipeline+finish": lambda: _pipeline_finished_on_host(tf, train_dataset),
    }
    if data_service:
        service_config = dataclasses.replace(config, data_service=data_service, model_dir="benchmark")
        service_dataset = make_input_fns(service_config, info, seed=None).train
        rows["service"] = lambda: _pipeline(service_dataset)
    loader, skipped = None, []
    try:
        import PIL
    except ImportError:
        skipped.append({"row": "pil", "reason": "skipped: Pillow is not installed (pip install pillow)"})
    else:
        progress(f"starting {pil_processes} PIL worker processes")
        constants = (preprocessing.MEAN_RGB, preprocessing.PCA_EIGVAL, preprocessing.PCA_EIGVEC)
        records = (warmup_steps + timed_steps + _PilLoader.SLOTS) * batch_size  # one round's worth
        loader = _PilLoader(_read_jpegs(tf, files, records), pil_processes, batch_size, constants)
        rows["pil"] = loader.batches
    # Startup leaves ~1M Python objects that every full collection would walk again.
    gc.freeze()
    rounds = {name: [] for name in rows}
    steps_per_epoch = info.train_examples // batch_size
    resume = {key: [] for key in RESUME_FIGURES}
    try:
        for repeat in range(repeats):
            progress(f"repeat {repeat + 1}/{repeats}")
            for name, make in rows.items():
                batches = make()
                pids = loader.pids if name == "pil" else ()
                on_service = tuple(service_pids) if name == "service" else ()
                rounds[name].append(_timed(batches, warmup_steps, timed_steps, batch_size, pids, on_service))
                batches.close()  # stops a tf.data iterator's threads, drains the PIL pool
                del batches
            resume["epoch_start_seconds"].append(_first_batch_seconds(train_dataset, 0))
            resume["mid_epoch_seconds"].append(_first_batch_seconds(train_dataset, steps_per_epoch // 2))
            records_per_sec, megabytes_per_sec = _read_rate(tf, files, info.train_examples)
            resume["read_records_per_sec"].append(records_per_sec)
            resume["read_megabytes_per_sec"].append(megabytes_per_sec)
    finally:
        if loader is not None:
            loader.close()
    results = []
    for name, rs in rounds.items():
        rates = [r[0] for r in rs]
        results.append(
            {
                "row": name,
                "images_per_sec": statistics.median(rates),
                "images_per_sec_min": min(rates),
                "images_per_sec_max": max(rates),
                "cpu_ms_per_image": statistics.median(r[1] for r in rs),
                "rounds_images_per_sec": rates,
            }
        )
    cpu_ms = {r["row"]: r["cpu_ms_per_image"] for r in results}
    ratio = lambda a, b: statistics.median(x[0] / y[0] for x, y in zip(rounds[a], rounds[b]))  # noqa: E731
    # None when a run too short to register CPU time (the PIL workers' /proc counters tick at 10 ms).
    cpu_ratio = lambda a, b: cpu_ms[b] / cpu_ms[a] if cpu_ms[a] > 0 and cpu_ms[b] > 0 else None  # noqa: E731
    ratios = {
        "pipeline/decode": ratio("pipeline", "decode"),
        "pipeline/decode by CPU time": cpu_ratio("pipeline", "decode"),
        "pipeline+finish/decode by CPU time": cpu_ratio("pipeline+finish", "decode"),
    }
    if "pil" in rounds:
        ratios["pipeline+finish/pil"] = ratio("pipeline+finish", "pil")
        ratios["pipeline+finish/pil by CPU time"] = cpu_ratio("pipeline+finish", "pil")
    per_core = lambda ms: 1e3 / ms if ms and ms > 0 else None  # noqa: E731
    ratios["pipeline images/sec per core"] = per_core(cpu_ms["pipeline"])
    if "service" in rounds:
        ratios["service/pipeline"] = ratio("service", "pipeline")
        if service_pids:
            ratios["service/pipeline by CPU time"] = cpu_ratio("service", "pipeline")
            worker_ms = statistics.median(r[2] for r in rounds["service"])
            ratios["service worker images/sec per core"] = per_core(worker_ms)
    return {
        "data": {
            "data_dir": data_dir,
            "shards": len(files),
            "num_classes": info.num_classes,
            "label_offset": info.label_offset,
            "train_examples": info.train_examples or None,
        },
        "results": results,
        "ratios": ratios,
        "skipped": skipped,
        "resume": {
            "step": steps_per_epoch // 2,
            "steps_per_epoch": steps_per_epoch,
            **{key: statistics.median(values) for key, values in resume.items()},
        },
    }


def table(result):
    """Markdown rows of run's result."""
    lines = ["| row | images/sec (median) | min-max | CPU ms/image |", "|---|---:|---|---:|"]
    for r in result["results"]:
        lines.append(
            f"| {r['row']} | {r['images_per_sec']:.0f} | {r['images_per_sec_min']:.0f}-"
            f"{r['images_per_sec_max']:.0f} | {r['cpu_ms_per_image']:.3f} |"
        )
    lines += [f"| {s['row']} | {s['reason']} | | |" for s in result["skipped"]]
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [
        f"| {name} | {'-' if value is None else f'{value:.2f}'} |" for name, value in result["ratios"].items()
    ]
    r = result["resume"]
    lines += [
        "",
        f"Exact resume: first batch {r['epoch_start_seconds']:.2f} s at the epoch's start, "
        f"{r['mid_epoch_seconds']:.2f} s resumed at step {r['step']} of {r['steps_per_epoch']}; "
        f"records read without decoding: {r['read_records_per_sec']:.0f}/s, "
        f"{r['read_megabytes_per_sec']:.0f} MB/s (medians of the rounds).",
    ]
    return "\n".join(lines)
