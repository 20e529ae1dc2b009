"""How every command reports a failure: one informative line, never a traceback.

TensorFlow's graph errors open with boilerplate ("Graph execution error", "Detected at node",
stack traces, op tags); `error_message` finds the line that says what went wrong.
"""

import os
import re
import uuid

import tensorflow as tf

from alexnet_tf.config import ConfigError


def error_message(error):
    """The informative line of an error: TensorFlow's graph errors start with boilerplate lines."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    for line in message.splitlines():
        line = line.strip()
        if line and not line.startswith(
            ("Graph execution error", "Detected at node", "<stack traces", "[[", "File ", "(most recent")
        ):
            line = re.sub(r"\s*\[Op:[^\]]*\]$", "", line)
            if "assertion failed: [" not in line:
                return line
            # tf.debugging.Assert prints its items as "[a] [b] [c]": one sentence of them.
            before, items = line.split("assertion failed: [", 1)
            return before + " ".join(items.rstrip("]").split("] ["))
    return type(error).__name__


def error_line(program, name, error):
    """The one stderr line for a failed file or server."""
    return f"{program}: {name}: {error_message(error)}"


def check_writable(directory, what=None, hint=""):
    """Creates `directory` if needed and proves it is writable, else raises ConfigError.

    The message names `what` ("model dir <directory> is not writable" by default) and ends
    with `hint`.
    """
    try:
        tf.io.gfile.makedirs(directory)
        probe = os.path.join(directory, f".write_test_{uuid.uuid4().hex}")
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("ok")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as e:
        reason = (getattr(e, "message", None) or getattr(e, "strerror", None) or str(e)).splitlines()[0]
        what = what or f"model dir {directory} is not writable"
        raise ConfigError(f"{what} ({reason}){hint}") from None
