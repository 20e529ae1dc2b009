"""How every command reports a failure: one informative line, never a traceback.

TensorFlow's graph errors open with boilerplate ("Graph execution error", "Detected at node",
stack traces, op tags); `error_message` finds the line that says what went wrong.
"""

import re


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
