"""How every command ends: one table of exit statuses, one line on stderr, never a traceback.

Every `python -m alexnet_tf.<command>` exits with one of these statuses (README.md, "Exit
statuses", shows users the same table, and a test keeps the two equal):

    0    success
    1    the run failed, or some items were skipped (predict, client and features name each
         file that failed and go on with the others)
    2    bad input: a flag, file or value the user must fix (a corrupt or truncated TFRecord
         shard included); the line says what to fix
    130  interrupted (Ctrl-C, SIGINT); train: re-run the same command to resume
    143  preempted (SIGTERM, 128 + 15): train wrote a checkpoint first; job controllers (a
         TFJob's ExitCode restart policy) retry it

A failure ends with one line `<program>: error: <message>` (`fail`); a stop (statuses 130
and 143) with `<program>: <message>`, as it is no error: the same command picks up from it.
`run` starts a command: flag errors and `app.UsageError` become status 2 with one line, and
Ctrl-C status 130. TensorFlow's graph errors open with boilerplate ("Graph execution error",
"Detected at node", stack traces, op tags); `error_message` finds the line that says what went
wrong.

TensorFlow is imported only by the functions that need it, so that commands that must run
without it (benchmark.keras_backend under JAX) use this module too.
"""

import enum
import os
import re
import sys
import uuid

from alexnet_tf.config import ConfigError


class ExitStatus(enum.IntEnum):
    """The exit statuses of every command (the table above)."""

    SUCCESS = 0
    FAILED = 1
    BAD_INPUT = 2
    INTERRUPTED = 130  # 128 + SIGINT
    PREEMPTED = 143  # 128 + SIGTERM


STOPS = (ExitStatus.INTERRUPTED, ExitStatus.PREEMPTED)
# TensorFlow's error codes (tf.errors.*) that the user's input causes: a corrupt or truncated
# shard (INVALID_ARGUMENT names it, DATA_LOSS does not), a label out of range, a missing or
# unreadable file. The others (RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL, ...) fail the run.
BAD_INPUT_ERROR_CODES = frozenset({3, 5, 7, 15})  # INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, DATA_LOSS


def failure_line(program, message, status=ExitStatus.BAD_INPUT):
    """The one stderr line a command ends with: `<program>: error: <message>` (a stop: no "error:")."""
    return f"{program}: {'' if status in STOPS else 'error: '}{message}"


def fail(program, message, status=ExitStatus.BAD_INPUT, now=False):
    """Prints `failure_line` on stderr and ends the process with `status`; never returns.

    By default it raises SystemExit, so that `finally` blocks and Python's shutdown run. With
    `now` it flushes the logs and streams and ends the process at once (os._exit): from a
    thread other than the main one, or where Python's last garbage collection would wait on
    something dead (the tf.data service client retries a dead dispatcher for seconds).
    """
    print(failure_line(program, message, status), file=sys.stderr, flush=True)
    if now:
        from absl import logging

        logging.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(status))
    sys.exit(int(status))


def status_of(error):
    """The exit status an exception ends a command with: BAD_INPUT or FAILED.

    A ConfigError, and TensorFlow errors whose code is in BAD_INPUT_ERROR_CODES, are bad input;
    everything else failed the run.
    """
    if isinstance(error, ConfigError):
        return ExitStatus.BAD_INPUT
    if getattr(error, "error_code", None) in BAD_INPUT_ERROR_CODES:
        return ExitStatus.BAD_INPUT
    return ExitStatus.FAILED


def run(main, program):
    """`absl.app.run(main)`, with this module's statuses and one-line errors.

    A flag that does not parse and an `app.UsageError` raised by `main` end with one line and
    BAD_INPUT (absl prints the usage and exits 1); Ctrl-C ends with one line and INTERRUPTED.
    `--help`, `--helpshort` and `--helpfull` print absl's help and exit with SUCCESS (absl
    exits 1, which the table keeps for a failed run).
    """
    from absl import app, flags

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            fail(program, f"{_one_line(e)} (--helpshort lists the flags)")

    def guarded(argv):
        try:
            return main(argv)
        except app.UsageError as e:
            fail(program, f"{_one_line(e)} (--helpshort lists the flags)")
        except KeyboardInterrupt:
            fail(program, "interrupted", ExitStatus.INTERRUPTED)

    try:
        app.run(guarded, flags_parser=parse)
    except SystemExit as e:
        if e.code == 1 and any(arg.split("=")[0] in HELP_FLAGS for arg in sys.argv[1:]):
            sys.exit(ExitStatus.SUCCESS)
        raise


HELP_FLAGS = ("--help", "-help", "--helpshort", "-helpshort", "--helpfull", "-helpfull", "-?")


def _one_line(error):
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


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
    import tensorflow as tf

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
