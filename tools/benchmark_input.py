"""Measures the training input pipeline against the machine's JPEG-decoding bound and a PIL loader.

    python tools/benchmark_input.py --file_pattern='/tmp/bench_data/train-*' [--json]

About two minutes on 2 cores with the defaults. A test set of 1600 records of 256 x 256..340 JPEGs
(natural-looking smoothed noise, quality 90) in the converter's schema, from a checkout:

    python -c "import sys; sys.path.insert(0, 'tests'); import tfrecord_fixtures as f; \
        f.write_fake_tfrecords('/tmp/bench_data', num_records=1600, num_shards=8, num_classes=1000)"

Rows, timed round-robin so that machine noise (other jobs on the CPU) hits them alike; each
figure is the median over --repeats rounds. "CPU ms/image" counts the CPU time of the process
(and of the PIL workers) per image: unlike images/sec it barely moves when other jobs share
the cores, so its ratios are the steadier comparison.
  decode:   read the shards and tf.io.decode_jpeg every image, in parallel over all cores.
            Nothing else: the stage's physical bound on this machine.
  pipeline: alexnet_tf.data.make_dataset(training=True), batches of --batch_size float32 images.
  pil:      a multiprocessing.Pool of --pil_processes, each decoding the same records' JPEG bytes
            with PIL and doing the same work (random crop of the 256 square, flip, PCA lighting,
            mean subtraction) into float32 batches in shared memory. The JPEG bytes are read into
            memory up front, which favours this row. Skipped when PIL is missing.
"""

import gc
import io
import json
import os
import statistics
import time

from absl import app, flags
import numpy as np

flags.DEFINE_string("file_pattern", None, "Glob of TFRecord shards.", required=True)
flags.DEFINE_integer("batch_size", 128, "Images per batch.")
flags.DEFINE_integer("images", 5120, "Images timed per row and round (after warm-up).")
flags.DEFINE_integer("warmup_images", 1280, "Images consumed before timing each row.")
flags.DEFINE_integer("repeats", 3, "Rounds over the rows; medians are reported.")
flags.DEFINE_integer("pil_processes", 2, "Worker processes of the PIL loader.")
flags.DEFINE_integer("label_offset", None, "Label offset; detected from manifest.json if unset.")
flags.DEFINE_bool("json", False, "Print JSON instead of a markdown table.")
FLAGS = flags.FLAGS



def _cpu_seconds(pids):
    """User + system CPU seconds used so far by this process (all threads) and `pids`."""
    times = os.times()
    total = times.user + times.system
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _timed(batches, warmup, count, pids=()):
    """(images/sec, CPU ms/image) of an iterator of (batch size, batch), after `warmup` images."""
    seen = 0
    for size, _ in batches:
        seen += size
        if seen >= warmup:
            break
    start, cpu, seen = time.perf_counter(), _cpu_seconds(pids), 0
    for size, _ in batches:
        seen += size
        if seen >= count:
            break
    return seen / (time.perf_counter() - start), (_cpu_seconds(pids) - cpu) * 1e3 / seen


def _decode_only(tf, files, batch_size):
    def decode(record):
        encoded = tf.io.parse_single_example(
            record, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})["image/encoded"]
        image = tf.io.decode_jpeg(encoded, channels=3)
        return tf.shape(image)[0] + tf.cast(image[0, 0, 0], tf.int32)  # keeps the decode alive

    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE).repeat()
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return ((batch.shape[0], batch) for batch in dataset)


def _pipeline(data, file_pattern, batch_size, label_offset):
    dataset = data.make_dataset(file_pattern, batch_size, training=True, label_offset=label_offset)
    return ((images.shape[0], images) for images, _ in dataset)


# ----------------------------------------------------------------------------- PIL loader

_WORKER = {}


def _pil_init(jpegs, shm_name, slots, batch_size, mean, eigval, eigvec):
    from multiprocessing import shared_memory  # pylint: disable=g-import-not-at-top

    # Constants come from alexnet_tf.data in the parent: workers stay free of TensorFlow.
    _WORKER["mean"] = np.asarray(mean, np.float32)
    _WORKER["eigval"] = np.asarray(eigval, np.float32) * 255.0
    _WORKER["eigvec"] = np.asarray(eigvec, np.float32)
    _WORKER["jpegs"] = jpegs
    _WORKER["shm"] = shared_memory.SharedMemory(name=shm_name)
    _WORKER["out"] = np.ndarray((slots, batch_size, 224, 224, 3), np.float32, _WORKER["shm"].buf)


def _pil_batch(task):
    from PIL import Image  # pylint: disable=g-import-not-at-top

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
        crop = np.asarray(image)[dy:dy + 224, dx:dx + 224]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        alpha = rng.normal(0.0, 0.1, 3).astype(np.float32)
        offset = _WORKER["eigvec"] @ (alpha * _WORKER["eigval"]) - _WORKER["mean"]
        np.add(crop, offset, out=out[i])
    return slot


class _PilLoader:
    """Batches from a process pool writing into a ring of shared-memory slots (as torch's loader)."""

    def __init__(self, jpegs, processes, batch_size, constants, slots=6):
        import multiprocessing  # pylint: disable=g-import-not-at-top
        from multiprocessing import shared_memory  # pylint: disable=g-import-not-at-top

        self._batch_size, self._slots = batch_size, slots
        self._shm = shared_memory.SharedMemory(create=True, size=slots * batch_size * 224 * 224 * 3 * 4)
        self._out = np.ndarray((slots, batch_size, 224, 224, 3), np.float32, self._shm.buf)
        # spawn, not fork: the parent runs TensorFlow's threads.
        self._pool = multiprocessing.get_context("spawn").Pool(
            processes, _pil_init, (jpegs, self._shm.name, slots, batch_size) + constants)
        self._pool.map(_pil_batch, [(0, s, s) for s in range(processes)])  # start-up off the clock

    @property
    def pids(self):
        return [process.pid for process in self._pool._pool]  # pylint: disable=protected-access

    def batches(self):
        pending, step = [], 0
        try:
            while True:
                while len(pending) < self._slots - 1:
                    pending.append(self._pool.apply_async(
                        _pil_batch, ((step * self._batch_size, step % self._slots, step),)))
                    step += 1
                slot = pending.pop(0).get()
                yield self._batch_size, self._out[slot]
        finally:  # let the workers go idle before the next row is timed
            for result in pending:
                result.wait()

    def close(self):
        self._pool.terminate()
        self._pool.join()
        del self._out
        self._shm.close()
        self._shm.unlink()


def _read_jpegs(tf, files):
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
    return [tf.io.parse_single_example(r, spec)["image/encoded"].numpy()
            for r in tf.data.TFRecordDataset(files)]


def run(file_pattern, batch_size, images, warmup_images, repeats, pil_processes, label_offset):
    """Returns {row: {"images_per_sec", "cpu_ms_per_image", "rounds_images_per_sec"}, "ratios": {...}}."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    from alexnet_tf import data  # pylint: disable=g-import-not-at-top

    files = sorted(tf.io.gfile.glob(file_pattern))
    rows = {
        "decode": lambda: _decode_only(tf, files, batch_size),
        "pipeline": lambda: _pipeline(data, file_pattern, batch_size, label_offset),
    }
    loader = None
    try:
        import PIL  # pylint: disable=g-import-not-at-top,unused-import

        constants = (data.MEAN_RGB, data.PCA_EIGVAL, data.PCA_EIGVEC)
        loader = _PilLoader(_read_jpegs(tf, files), pil_processes, batch_size, constants)
        rows["pil"] = loader.batches
    except ImportError:
        pass
    # Startup leaves ~1M Python objects that every full collection would walk again.
    gc.freeze()
    rounds = {name: [] for name in rows}
    try:
        for _ in range(repeats):
            for name, make in rows.items():
                batches = make()
                pids = loader.pids if name == "pil" else ()
                rounds[name].append(_timed(batches, warmup_images, images, pids))
                batches.close()  # stops a tf.data iterator's threads, drains the PIL pool
                del batches
    finally:
        if loader is not None:
            loader.close()
    result = {name: {"images_per_sec": statistics.median(r[0] for r in rs),
                     "cpu_ms_per_image": statistics.median(r[1] for r in rs),
                     "rounds_images_per_sec": [r[0] for r in rs]}
              for name, rs in rounds.items()}
    ratio = lambda a, b: statistics.median(x[0] / y[0] for x, y in zip(rounds[a], rounds[b]))
    cpu_ratio = lambda a, b: result[b]["cpu_ms_per_image"] / result[a]["cpu_ms_per_image"]
    result["ratios"] = {"pipeline/decode": ratio("pipeline", "decode"),
                        "pipeline/decode by CPU time": cpu_ratio("pipeline", "decode")}
    if "pil" in rounds:
        result["ratios"]["pipeline/pil"] = ratio("pipeline", "pil")
        result["ratios"]["pipeline/pil by CPU time"] = cpu_ratio("pipeline", "pil")
    return result


def _table(result):
    lines = ["| row | images/sec (median) | CPU ms/image | images/sec per round |",
             "|---|---:|---:|---|"]
    for name in ("decode", "pipeline", "pil"):
        if name in result:
            row = result[name]
            rounds = ", ".join(f"{r:.0f}" for r in row["rounds_images_per_sec"])
            lines.append(f"| {name} | {row['images_per_sec']:.0f} | {row['cpu_ms_per_image']:.3f} | {rounds} |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in result["ratios"].items()]
    return "\n".join(lines)


def main(argv):
    del argv
    result = run(FLAGS.file_pattern, FLAGS.batch_size, FLAGS.images, FLAGS.warmup_images,
                 FLAGS.repeats, FLAGS.pil_processes, FLAGS.label_offset)
    print(json.dumps(result, indent=2) if FLAGS.json else _table(result))


if __name__ == "__main__":
    app.run(main)
