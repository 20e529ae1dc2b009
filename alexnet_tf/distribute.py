"""Owns the choice of tf.distribute strategy and which process of a cluster writes files.

`create_strategy("auto")` follows the usual TensorFlow rules: MultiWorkerMirroredStrategy
when TF_CONFIG describes more than one task, MirroredStrategy when there are two or more
GPUs, and the default (one-device) strategy otherwise. In a cluster only the chief writes
to the real model dir; the other workers still take part in every save (a save may
involve collectives), but into a temporary folder that they delete (the recipe of TF's
"Multi-worker training with Keras" tutorial).
"""

import json
import os
import shutil
import tempfile

import tensorflow as tf

from alexnet_tf.config import ConfigError


def cluster_from_env():
    """Returns (number of tasks, task type, task index) from TF_CONFIG, or (1, None, None)."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return 1, None, None
    try:
        tf_config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e})") from None
    cluster = tf_config.get("cluster", {})
    tasks = sum(len(cluster.get(job, [])) for job in ("chief", "worker"))
    task = tf_config.get("task", {})
    return max(tasks, 1), task.get("type"), task.get("index")


def create_strategy(distribution):
    """Creates the tf.distribute strategy; call it before any other TensorFlow op runs.

    Args:
      distribution: "auto", "mirrored" (all GPUs, or all logical CPU devices when there is no
        GPU), "multi_worker" (MultiWorkerMirroredStrategy over TF_CONFIG's cluster) or "none".

    Returns:
      A tf.distribute.Strategy.
    """
    num_tasks, _, _ = cluster_from_env()
    # Physical, not logical, devices: listing logical ones starts the runtime, after which
    # MultiWorkerMirroredStrategy can no longer be created.
    gpus = tf.config.list_physical_devices("GPU")
    if distribution == "auto":
        if num_tasks > 1:
            distribution = "multi_worker"
        elif len(gpus) > 1:
            distribution = "mirrored"
        else:
            distribution = "none"
    if distribution == "multi_worker":
        # AUTO picks NCCL on GPUs and ring all-reduce over gRPC on CPUs.
        return tf.distribute.MultiWorkerMirroredStrategy()
    if distribution == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if distribution == "none":
        return tf.distribute.get_strategy()
    raise ConfigError(f"distribution={distribution!r}; choose auto, mirrored, multi_worker or none")


def is_chief(strategy):
    """True for the process that writes checkpoints, summaries and the export."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def worker_name(strategy):
    """A short name of this process for log lines: "chief" or "worker 1"."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "chief"
    return f"{resolver.task_type} {resolver.task_id}"


class WriteDir:
    """Where this process writes `path`: the path itself on the chief, else a temporary folder.

    Use as a context manager; a non-chief's temporary folder is deleted on exit.
    """

    def __init__(self, path, chief):
        self.chief = chief
        self.path = path if chief else tempfile.mkdtemp(prefix="alexnet_tf_worker_")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def cleanup(self):
        if not self.chief:
            shutil.rmtree(self.path, ignore_errors=True)
