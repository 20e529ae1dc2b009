"""The devices a run trains on: the tf.distribute strategy, the chief, and the precision.

`create_strategy("auto")` follows the usual TensorFlow rules: MultiWorkerMirroredStrategy
when TF_CONFIG describes more than one task, MirroredStrategy when there are two or more
GPUs, and the default (one-device) strategy otherwise. In a cluster only the chief writes
to the real model dir; the other workers still take part in every save (a save may
involve collectives), but into a temporary folder that they delete (the recipe of TF's
"Multi-worker training with Keras" tutorial; `checkpointing.Checkpointer` does it).
`resolve_precision("auto")` picks the fastest mixed-precision policy the device runs correctly.
"""

import json
import os

import tensorflow as tf

from alexnet_tf import hardware
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


def check_global_batch(batch_size, replicas):
    """Raises ConfigError unless the global batch splits evenly over the replicas."""
    if batch_size % replicas:
        raise ConfigError(
            f"global batch_size {batch_size} is not divisible by the {replicas} replicas "
            "(--batch_size is the global batch)"
        )


def num_workers(strategy):
    """Worker processes of the strategy's cluster (chief included); 1 outside a cluster.

    `distribute_datasets_from_function` builds one input pipeline in each of them.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(sum(len(cluster.get(job, [])) for job in ("chief", "worker")), 1)


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


def mirrored_over(replicas):
    """The default strategy for one replica, else MirroredStrategy over `replicas` devices.

    The first `replicas` GPUs when there are GPUs, else that many logical CPU devices; call
    this before any TensorFlow op runs (logical devices cannot be added later).

    Raises:
      ConfigError: the machine has GPUs, but fewer than `replicas`.
    """
    if replicas == 1:
        return tf.distribute.get_strategy()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if len(gpus) < replicas:
            raise ConfigError(f"--replicas={replicas} but this machine has {len(gpus)} GPU(s)")
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(replicas)])
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


def resolve_precision(precision):
    """Maps "auto" to the fastest policy this machine runs correctly."""
    if precision != "auto":
        return precision
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        if capability >= (8, 0):
            return "mixed_bfloat16"
        return "mixed_float16" if capability >= (7, 0) else "float32"
    # bfloat16 is only fast where the CPU multiplies it natively (AVX512_BF16, AMX) and oneDNN's
    # kernels run: TensorFlow's Eigen kernels emulate it, many times slower than float32.
    if hardware.cpu_has_native_bfloat16() and hardware.onednn_enabled():
        return "mixed_bfloat16"
    return "float32"


def check_precision(precision, variant):
    """Raises ConfigError for a resolved precision this machine cannot train `variant` in."""
    on_cpu = not tf.config.list_physical_devices("GPU")
    if precision == "mixed_float16" and variant != "one_weird_trick" and on_cpu:
        raise ConfigError(
            f"mixed_float16 needs a GPU for the {variant} variant: TensorFlow's CPU "
            "kernels have no float16 gradient of grouped convolutions; use mixed_bfloat16"
        )
