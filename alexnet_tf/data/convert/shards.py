"""Writing shards: a pool of worker processes, each shard written under a temporary name, progress.

A shard is one task: read its items' bytes, convert each image, write the records, fsync, rename.
The same pool and progress line serve verification.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
import concurrent.futures
import contextlib
import hashlib
import multiprocessing
import os
import re
import sys
import time
from typing import NamedTuple

import tensorflow as tf

from alexnet_tf.data.convert.images import BadImageError, convert_image, make_example
from alexnet_tf.data.convert.scan import Item

SHARD_RE = re.compile(r"^(train|validation)-\d{5}-of-\d{5}$")
TMP_PREFIX = ".tmp-"


def shard_name(split: str, index: int, num_shards: int) -> str:
    """Returns the file name of a shard, e.g. `train-00003-of-01024`."""
    return f"{split}-{index:05d}-of-{num_shards:05d}"


class ShardTask(NamedTuple):
    """One shard to write: its items and everything a worker needs to write it alone."""

    split: str
    index: int
    num_shards: int
    items: list[Item]
    synsets: list[str]
    names: list[str]
    output_dir: str
    resize_shorter: int
    quality: int


_COUNTER = None  # in worker processes: shared count of images done, for the progress line


def _init_worker(counter, threads: int) -> None:
    global _COUNTER
    _COUNTER = counter
    # Workers only decode/resize/encode: keep them off GPUs (each would grab all the memory)
    # and share the cores between them instead of each sizing its thread pool to all of them.
    tf.config.set_visible_devices([], "GPU")
    tf.config.threading.set_intra_op_parallelism_threads(threads)


def bump_counter() -> None:
    """In a worker process: counts one image done on the shared progress counter."""
    with _COUNTER.get_lock():
        _COUNTER.value += 1


def atomic_write(path: str, text: str) -> None:
    """Writes text to path through a synced temporary file, so path is always whole."""
    tmp = os.path.join(os.path.dirname(path), TMP_PREFIX + os.path.basename(path))
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sha256_file(path: str) -> str:
    """Returns the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Reader(contextlib.ExitStack):
    """Reads items' bytes, keeping tar archives open between items."""

    def __init__(self):
        super().__init__()
        self._archives = {}

    def read(self, item: Item) -> bytes:
        if item.offset is None:
            with open(item.source, "rb") as f:
                return f.read()
        if item.source not in self._archives:
            self._archives[item.source] = self.enter_context(open(item.source, "rb"))
        archive = self._archives[item.source]
        archive.seek(item.offset)
        return archive.read(item.size)


def convert_shard(task: ShardTask, on_image: Callable[[], None]) -> dict:
    """Writes one shard under a temporary name, then renames it; returns its manifest entry."""
    file = shard_name(task.split, task.index, task.num_shards)
    tmp = os.path.join(task.output_dir, TMP_PREFIX + file)
    index = {s: k for k, s in enumerate(task.synsets)}
    per_class, skipped, repaired = collections.Counter(), [], []
    with tf.io.TFRecordWriter(tmp) as writer, _Reader() as reader:
        for item in task.items:
            where = {"split": task.split, "shard": task.index, "path": item.relpath}
            try:
                image = convert_image(reader.read(item), item.relpath, task.resize_shorter, task.quality)
            except BadImageError as e:
                skipped.append({**where, "reason": str(e)})
            except OSError as e:
                skipped.append({**where, "reason": f"cannot read: {e.strerror or e}"})
            except Exception as e:  # noqa: BLE001  one file never stops a run
                skipped.append({**where, "reason": f"cannot convert: {type(e).__name__}: {e}"})
            else:
                label = index[item.synset]
                example = make_example(
                    image, os.path.basename(item.relpath), label, item.synset, task.names[label]
                )
                # Deterministic: the feature map's order otherwise varies between processes.
                writer.write(example.SerializeToString(deterministic=True))
                per_class[item.synset] += 1
                if image.repair:
                    repaired.append({**where, "reason": image.repair})
            on_image()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    entry = {
        "file": file,
        "num_records": sum(per_class.values()),
        "num_bytes": os.path.getsize(tmp),
        "sha256": sha256_file(tmp),
    }
    os.replace(tmp, os.path.join(task.output_dir, file))
    return {
        "split": task.split,
        "shard": entry,
        "per_class": dict(per_class),
        "skipped": skipped,
        "repaired": repaired,
    }


def pool_convert_shard(task: ShardTask) -> dict:
    """convert_shard in a worker process (by name, so a spawned worker can unpickle it)."""
    return convert_shard(task, bump_counter)


class Progress:
    """One status line on stderr: rewritten in place on a terminal, plain lines otherwise.

    Args:
      total: how many images there are; None when unknown (the line then shows no ETA).
      label: what is being done ("converting", "features").
      enabled: False prints nothing.
    """

    def __init__(self, total: int | None, label: str, enabled: bool = True):
        self._total, self._label = total, label
        self._enabled = enabled and (total is None or total > 0)
        self._tty = sys.stderr.isatty()
        self._start = self._last = time.monotonic()
        self._done = self._shown = 0

    def add(self, n: int = 1) -> None:
        self.update(self._done + n)

    def update(self, done: int, force: bool = False) -> None:
        self._done = done
        now = time.monotonic()
        if not self._enabled or (not force and now - self._last < (0.5 if self._tty else 10.0)):
            return
        self._last, self._shown = now, done
        rate = done / max(now - self._start, 1e-6)
        if self._total is None:
            line = f"{self._label}: {done} images, {rate:.1f} images/s"
        else:
            left = int((self._total - done) / rate) if rate else 0
            eta = f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}" if rate else "?"
            line = (
                f"{self._label}: {done}/{self._total} images ({100 * done / self._total:.1f}%), "
                f"{rate:.1f} images/s, ETA {eta}"
            )
        sys.stderr.write(f"\r{line:<79}" if self._tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self._shown != self._done or self._done == 0:
            self.update(self._done, force=True)
        if self._enabled and self._tty:
            sys.stderr.write("\n")


def run_pool(
    tasks: list,
    local_fn: Callable,
    pool_fn: Callable,
    num_workers: int,
    progress: Progress,
    on_result: Callable[[dict], None],
) -> None:
    """Runs every task in this process (local_fn) or in worker processes (pool_fn).

    Workers are spawned, not forked (a forked TensorFlow runtime can deadlock), so a script
    that calls this with num_workers > 1 needs the usual `if __name__ == "__main__":` guard.
    Each task is a whole shard: each worker imports TensorFlow once. A worker that dies
    (e.g. killed for memory) fails the run with BrokenProcessPool instead of hanging it.
    """
    if num_workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            on_result(local_fn(task, progress.add))
        return
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    workers = min(num_workers, len(tasks))
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(counter, threads)
    )
    try:
        pending = {pool.submit(pool_fn, task) for task in tasks}
        while pending:
            done, pending = concurrent.futures.wait(
                pending, timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                on_result(future.result())
            progress.update(counter.value)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
