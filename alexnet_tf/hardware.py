"""Owns what the code must know about the machine it runs on: oneDNN kernels, native bfloat16, GPUs.

TensorFlow's x86 CPU build carries two kernel families. oneDNN's is on by default only on CPUs
with AVX512_VNNI, AVX512_BF16 or AMX; everywhere else (AMD Zen 2/3, most Intel CPUs before
Cascade Lake, many laptops and cloud VMs, and TF Serving's CPU build as far as we can tell) the
Eigen kernels run, and they lack some ops this project needs in their grouped form
(docs/design/portability.md). `TF_ENABLE_ONEDNN_OPTS=0|1`, read when TensorFlow is imported,
overrides the default. The commands that compute with TensorFlow on the CPU turn oneDNN on
where TensorFlow would leave it off (`command_onednn_default`): on a 2-core AVX2 AMD EPYC it
trained 1.46x (paper) and 1.35x (one_weird_trick) as fast as the Eigen kernels
(docs/design/portability.md). Exports stay portable: a SavedModel runs under either family.
"""

import functools
import os
import platform
import sys

# CPU flags (as /proc/cpuinfo spells them) with native bfloat16 dot products.
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
# `python -m alexnet_tf.<command>` whose processes turn oneDNN on unless ONEDNN_ENV is set: they
# train, evaluate or extract features with TensorFlow on the CPU, and are processes of their own.
ONEDNN_COMMANDS = ("alexnet_tf.train", "alexnet_tf.evaluate", "alexnet_tf.features", "alexnet_tf.benchmark")
# What command_onednn_default did in this process: "" (nothing), or why oneDNN's kernels are on.
onednn_default = ""


def command_onednn_default(argv=None, environ=None, machine=None):
    """Turns oneDNN's CPU kernels on in the process of a command of ONEDNN_COMMANDS; returns whether it did.

    Only on x86-64, only when the process was started as `python -m <command>` (`sys.orig_argv`),
    and never over a TF_ENABLE_ONEDNN_OPTS the user set or after TensorFlow was imported (it reads
    the variable once). `alexnet_tf/__init__.py` calls it before it imports Keras, which imports
    TensorFlow. Elsewhere, library users keep TensorFlow's own default.
    """
    global onednn_default
    argv = getattr(sys, "orig_argv", sys.argv) if argv is None else argv
    environ = os.environ if environ is None else environ
    machine = platform.machine() if machine is None else machine
    if ONEDNN_ENV in environ or (environ is os.environ and "tensorflow" in sys.modules):
        return False
    if machine.lower() not in ("x86_64", "amd64"):
        return False
    if _module_run(argv) not in ONEDNN_COMMANDS:
        return False
    environ[ONEDNN_ENV] = "1"
    if environ is os.environ:
        onednn_default = f"{ONEDNN_ENV}=1 set by python -m {_module_run(argv)}"
    return True


def _module_run(argv):
    """The module of `python [options] -m MODULE ...` in an interpreter's argv, else None."""
    words = iter(argv[1:])
    for word in words:
        if word == "-m":
            return next(words, None)
        if word in ("-X", "-W"):  # options that take the next word
            next(words, None)
        elif word == "-c" or not word.startswith("-"):  # a command string or a script
            return None
    return None


@functools.cache
def _cpuinfo_field(*keys):
    """The value of the first /proc/cpuinfo line whose key is one of `keys` ("" where unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_flags():
    """The first CPU's feature flags from /proc/cpuinfo (an empty set where it cannot be read)."""
    return frozenset(_cpuinfo_field("flags", "Features").split())


def cpu_model():
    """The CPU's model name from /proc/cpuinfo ("" where it cannot be read)."""
    return _cpuinfo_field("model name")


def cpu_has_avx512():
    """True where the CPU has AVX-512 (avx512f): oneDNN's brgemm kernels cover more ops there."""
    return "avx512f" in cpu_flags()


def cpu_has_native_bfloat16():
    """True where the CPU multiplies bfloat16 natively; elsewhere TensorFlow emulates it (slow)."""
    return bool(cpu_flags() & set(NATIVE_BFLOAT16_FLAGS))


@functools.cache
def onednn_enabled():
    """Whether this TensorFlow process runs oneDNN's CPU kernels (fixed when TensorFlow was imported)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def has_gpu():
    """Whether TensorFlow sees a GPU."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def describe():
    """What this process computes on, as a JSON-ready dict: what a model card says a run trained on.

    {"cpu": model name, "cpu_count": logical CPUs, "onednn": whether oneDNN's kernels run,
    "gpus": [device name of each GPU TensorFlow sees]}.
    """
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(device)
        except (ValueError, RuntimeError):
            details = {}
        gpus.append(str(details.get("device_name") or device.name))
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count() or 0, "onednn": onednn_enabled(), "gpus": gpus}
