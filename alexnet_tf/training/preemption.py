"""SIGTERM as a flag the training loop polls between steps (Kubernetes, Slurm, cloud preemption)."""

import signal
import threading


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

    def _handle(self, signum, frame):  # pylint: disable=unused-argument
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
