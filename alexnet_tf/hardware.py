"""Owns what the code must know about the machine it runs on: oneDNN kernels, native bfloat16, GPUs.

TensorFlow's x86 CPU build carries two kernel families. oneDNN's is on by default only on CPUs
with AVX512_VNNI, AVX512_BF16 or AMX; everywhere else (AMD Zen 2/3, most Intel CPUs before
Cascade Lake, many laptops and cloud VMs, and TF Serving's CPU build as far as we can tell) the
Eigen kernels run, and they lack some ops this project needs in their grouped form
(BUILD.md, "Portability"). `TF_ENABLE_ONEDNN_OPTS=0|1`, read when TensorFlow is imported,
overrides the default.
"""

import functools

# CPU flags (as /proc/cpuinfo spells them) with native bfloat16 dot products.
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


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


def cpu_has_native_bfloat16():
    """True where the CPU multiplies bfloat16 natively; elsewhere TensorFlow emulates it (slow)."""
    return bool(cpu_flags() & set(NATIVE_BFLOAT16_FLAGS))


@functools.cache
def onednn_enabled():
    """Whether this TensorFlow process runs oneDNN's CPU kernels (fixed when TensorFlow was imported)."""
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top

    return bool(_pywrap_util_port.IsMklEnabled())


def has_gpu():
    """Whether TensorFlow sees a GPU."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    return bool(tf.config.list_physical_devices("GPU"))
