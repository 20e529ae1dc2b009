"""SIGTERM as a flag the training loop polls between steps (Kubernetes, Slurm, cloud preemption)."""

import os
import signal
import threading

# For tests only (tests/scenarios/test_resume.py): "SIGKILL@3" makes the trainer send itself SIGKILL
# right after the chunk of steps that ends at step 3, before a checkpoint due there is
# written, so that a test interrupts a real run, with a real signal, at a step it chooses.
# Any signal name works ("SIGTERM@5": a preemption there). Never set it outside tests.
TEST_SELF_SIGNAL_ENV = "ALEXNET_TF_TEST_SELF_SIGNAL"


def send_test_signal(step):
    """Sends this process the signal that TEST_SELF_SIGNAL_ENV names for `step`, if any."""
    name, _, at = os.environ.get(TEST_SELF_SIGNAL_ENV, "").partition("@")
    if name and int(at) == step:
        os.kill(os.getpid(), getattr(signal, name))


class PreemptionSignal:
    """Turns SIGTERM into a flag that the training loop polls between steps.

    Kubernetes, Slurm and cloud preemption send SIGTERM and wait a grace period before
    SIGKILL; the loop then writes a checkpoint and exits. Outside the main thread (where
    Python cannot install handlers) it does nothing.
    """

    def __init__(self, signals=(signal.SIGTERM,)):
        self._signals = signals
        self._previous = {}
        self.received = None

    def _handle(self, signum, frame):
        self.received = signum

    @property
    def requested(self):
        return self.received is not None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self._signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
