"""Watches a train step waiting for tf.data service batches: a dead dispatcher or SIGTERM ends the wait.

With `--data_service`, a train step waits inside the compiled train function for the
service's next batch. When the dispatcher dies, the trainer goes on with the batches already
on their way, then waits with no end: TensorFlow's client retries the dispatcher (a warning a
second in its own log) and the main thread, blocked in C++, runs no Python signal handler, so
SIGTERM (preemption) goes unheeded too. `InputWatchdog` runs a thread beside the loop that

- gives up once a step has waited `--data_service_timeout_s` while the dispatcher does not
  accept connections (a dispatcher restarted in time, with `--work_dir`, lets the run go on);
- notices SIGTERM through `signal.set_wakeup_fd` (written by the C-level handler even while
  the main thread is blocked);

and in either case cancels the step (a CancellationManager around the train function: the
blocked `IteratorGetNext` returns CancelledError to the main thread at once). A step
cancelled in that wait has not touched the weights or the momentum, which need its batch,
but it has already advanced what needs none: the optimizer's iteration counter and the
dropout generators (measured, TF 2.21). The wrapped train function copies those at its start,
and they are put back before the loop's own save writes a checkpoint of the last completed
step. That holds for a call of one step (--steps_per_execution=1, the default) in a single
trainer process; a cancelled chunk of several steps stopped at a step nobody knows, and a
checkpoint of several trainer processes needs all of them, so those end naming the last
checkpoint instead of writing one. Without --data_service the watchdog does nothing.
"""

import contextlib
import dataclasses
import os
import re
import select
import signal
import socket
import threading
import time

from absl import logging
import tensorflow as tf
from tensorflow.python.eager import cancellation  # no public API gives this

from alexnet_tf.cli import ExitStatus, fail
from alexnet_tf.config import parse_service_address
from alexnet_tf.data.service import wait_for_dispatcher
from alexnet_tf.training.devices import num_workers
from alexnet_tf.weights.checkpointing import CHECKPOINT_SUBDIR, random_state

POLL_S = 0.5
# A step counts as waiting for its batch once it has run WAIT_FACTOR times longer than the
# previous call took per step, and at least MIN_WAIT_S. SIGTERM earlier is left to the loop,
# which saves after the step: cancelling a step still computing gains nothing, and with
# several replicas may interrupt it in its all-reduce, after which no checkpoint is correct.
WAIT_FACTOR = 2.0
MIN_WAIT_S = 2.0
PROBE_TIMEOUT_S = 1.0  # one TCP connect to the dispatcher
# After the cancellation, how long the main thread may take to come back before this thread
# ends the process itself (no checkpoint then: the state of a step that did not stop is unknown).
RETURN_WAIT_S = 10.0
PROGRAM = "alexnet_tf.train"
# The op a step blocked on its input was cancelled in (IteratorGetNext, or the per-device
# get-next of a multi-device iterator): nothing that needs the batch has run.
_INPUT_WAIT_NODE = re.compile(r"\{\{node [^}]*GetNext[^}]*\}\}")


class DataServiceLost(RuntimeError):
    """A step waited --data_service_timeout_s for batches while the dispatcher did not answer."""


@dataclasses.dataclass
class _Call:
    """One guarded call of the train function: `steps` steps after `step`."""

    step: int
    steps: int
    started: float
    cancelled: str = ""  # "timeout" or "SIGTERM" once the watchdog cancelled it
    returned: bool = False
    warned: bool = False

    @property
    def name(self):
        first, last = self.step + 1, self.step + self.steps
        return f"step {first}" if first == last else f"steps {first}-{last}"


class InputWatchdog:
    """Guards the train function's calls of a run reading from the tf.data service (see module doc).

    Use as a context manager around the run, then call the train function that `guard` yields:

        with InputWatchdog(config, strategy, state, train_fn, save, Preempted) as watchdog:
            ...
            with watchdog.guard(step, steps) as train:
                sums = train(iterator, tf.constant(steps), tf.constant(stop)).numpy()

    `save()` writes a checkpoint of the last completed step and returns its path; `preempted`
    is the exception class the loop raises after a preemption's checkpoint.
    """

    def __init__(self, config, strategy, state, train_fn, save, preempted):
        self.active = bool(config.data_service)
        self._train_fn, self._save, self._preempted = train_fn, save, preempted
        if not self.active:
            return
        self.service, self.timeout_s = config.data_service, config.data_service_timeout_s
        self._host, self._port = parse_service_address(config.data_service)
        self._checkpoint_dir = os.path.join(config.model_dir, CHECKPOINT_SUBDIR)
        self._steps_per_execution = config.steps_per_execution
        self._single_process = num_workers(strategy) == 1
        self._lock = threading.Lock()
        self._call = None
        self._seconds_per_step = None  # of the previous completed call, the first (tracing) one excepted
        self._calls = 0
        self._sigterm = False
        self._manager = cancellation.CancellationManager()
        self._closing = threading.Event()
        self._thread = self._wakeup = self._previous_wakeup_fd = None
        self._guarded = train_fn
        if self._single_process:
            self._guarded, self._restore = _with_rollback(train_fn, strategy, state)

    # -- the loop's side ------------------------------------------------------------------

    def __enter__(self):
        if not self.active:
            return self
        if threading.current_thread() is threading.main_thread():
            # The C-level handler writes each caught signal's number here, while the main
            # thread, blocked in the train function, cannot run the Python handler yet.
            reader, writer = socket.socketpair()
            reader.setblocking(False)
            writer.setblocking(False)
            self._wakeup = (reader, writer)
            self._previous_wakeup_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="input-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if not self.active:
            return
        self._closing.set()
        self._thread.join(timeout=POLL_S + PROBE_TIMEOUT_S + 1.0)
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            for end in self._wakeup:
                end.close()
            self._wakeup = None

    @contextlib.contextmanager
    def guard(self, step, steps):
        """Yields the train function for a call of `steps` steps after `step`, watched while it runs.

        Raises `preempted` or DataServiceLost (after a checkpoint of `step` where one is
        correct) when the watchdog cancelled the call while it waited for its batch.
        """
        if not self.active:
            yield self._train_fn
            return
        call = _Call(step, steps, time.monotonic())
        with self._lock:
            self._call = call
        try:
            with cancellation.CancellationManagerContext(self._manager):
                yield self._guarded
        except tf.errors.CancelledError as e:
            self._returned(call, completed=False)
            if not call.cancelled:
                raise
            raise self._stop(call, e) from None
        finally:
            self._returned(call, completed=True)
        if call.cancelled:  # the batch came just before the cancellation: carry on
            logging.info("%s: %s got its batches as it was cancelled; carrying on.", PROGRAM, call.name)
            self._manager = cancellation.CancellationManager()
            call.cancelled = ""

    def _returned(self, call, completed):
        with self._lock:
            if call.returned:
                return
            call.returned = True
            self._call = None
            self._calls += 1
            if completed and self._calls > 1:
                self._seconds_per_step = (time.monotonic() - call.started) / call.steps

    def _stop(self, call, error):
        """Writes the checkpoint of `call.step` where that is correct; returns the exception to raise."""
        why_not = self._why_no_checkpoint(call, error)
        if why_not:
            last = tf.train.latest_checkpoint(self._checkpoint_dir)
            outcome = f"no checkpoint written ({why_not}); the last is {last or 'none'}"
        else:
            self._restore()
            outcome = f"checkpoint {self._save()} at step {call.step}"
        return self._exception(call, outcome)

    def _why_no_checkpoint(self, call, error):
        if not self._single_process:
            return "a checkpoint of several trainer processes needs them all"
        if call.steps > 1:
            return (
                f"the call of {call.steps} steps (--steps_per_execution={self._steps_per_execution}) "
                "stopped at a step inside it that is not known"
            )
        if not _INPUT_WAIT_NODE.search(str(error)):
            return "the step was interrupted while computing, not while waiting for its batch"
        return ""

    def _exception(self, call, outcome):
        if call.cancelled == "SIGTERM":
            return self._preempted(
                f"preempted (signal {int(signal.SIGTERM)}) while {call.name} waited for training "
                f"batches from the tf.data service: {outcome}; re-run the same command to resume"
            )
        return DataServiceLost(
            f"--data_service={self.service}: {call.name} waited more than {self.timeout_s:g} s "
            "(--data_service_timeout_s) for training batches and the dispatcher does not answer: "
            f"{outcome}. Start the dispatcher again (with --work_dir a restarted dispatcher recovers "
            "its jobs while trainers wait) and re-run the same command to resume"
        )

    # -- the watchdog thread ----------------------------------------------------------------

    def _watch(self):
        while not self._closing.is_set():
            self._read_signals()
            with self._lock:
                call = self._call
                seconds_per_step = self._seconds_per_step
            if call is None or call.cancelled or call.returned:
                continue
            waited = time.monotonic() - call.started
            if waited < max(MIN_WAIT_S, WAIT_FACTOR * call.steps * (seconds_per_step or 0.0)):
                continue  # still computing, most likely
            if self._sigterm:
                self._cancel(call, "SIGTERM")
                continue
            try:
                wait_for_dispatcher(self._host, self._port, PROBE_TIMEOUT_S, poll_s=PROBE_TIMEOUT_S)
                continue  # it answers: its workers may be slow or gone, and may come back
            except ConnectionError as e:
                reason = str(e)
            if waited >= self.timeout_s:
                self._cancel(call, "timeout")
            elif not call.warned:
                call.warned = True
                logging.warning(
                    "%s: %s has waited %.0f s for training batches and %s; giving up after "
                    "--data_service_timeout_s=%g s unless it answers again",
                    PROGRAM,
                    call.name,
                    waited,
                    reason,
                    self.timeout_s,
                )

    def _read_signals(self):
        if self._wakeup is None:
            self._closing.wait(POLL_S)
            return
        reader = self._wakeup[0]
        if select.select([reader], [], [], POLL_S)[0]:
            try:
                if int(signal.SIGTERM) in reader.recv(256):
                    self._sigterm = True
            except BlockingIOError:
                pass

    def _cancel(self, call, reason):
        with self._lock:
            if call.returned:
                return
            call.cancelled = reason
            self._manager.start_cancel()
        logging.warning(
            "%s: %s while %s waits for training batches: cancelling it",
            PROGRAM,
            "SIGTERM" if reason == "SIGTERM" else "no dispatcher",
            call.name,
        )
        deadline = time.monotonic() + RETURN_WAIT_S
        while time.monotonic() < deadline:
            with self._lock:
                if call.returned:
                    return
            time.sleep(0.05)
        # The step did not stop: end the process from here, without a checkpoint of a state
        # that may be half a step (the main thread cannot be interrupted otherwise).
        last = tf.train.latest_checkpoint(self._checkpoint_dir) or "none"
        outcome = f"no checkpoint written (the step did not stop when cancelled); the last is {last}"
        error = self._exception(call, outcome)
        status = ExitStatus.PREEMPTED if reason == "SIGTERM" else ExitStatus.FAILED
        fail(PROGRAM, error, status, now=True)


def _with_rollback(train_fn, strategy, state):
    """(train function that first copies the state a step changes before its batch, restore function).

    The copies are taken inside the same tf.function as the step (no extra call per step);
    automatic control dependencies order each copy before the step's own use of the variable.
    """
    # The optimizer's scalars: its iteration counters (a LossScaleOptimizer's include its inner
    # optimizer's) and the loss scale's state; the rest are momentum slots.
    counters = [v.value for v in state.optimizer.variables if len(v.shape) == 0]
    variables = counters + list(random_state(state.model).values())
    with strategy.scope():
        copies = [tf.Variable(v, trainable=False, name="rollback") for v in variables]
    pairs = list(zip(variables, copies))

    @tf.function
    def guarded(iterator, num_steps, stop):
        for variable, copy in pairs:
            copy.assign(variable)
        return train_fn(iterator, num_steps, stop)

    def restore():
        for variable, copy in pairs:
            variable.assign(copy)

    return guarded, restore
