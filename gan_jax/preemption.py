"""Stopping a run on SIGTERM/SIGINT where it is safe: `StopRequest` records the signal and the trainer acts on it
(saving the current step first while training); `Preempted` is what the run then ends with, its message saying
when the signal came and what is saved."""

from __future__ import annotations

import os
import signal

from jax.experimental import multihost_utils


class Preempted(BaseException):
    """SIGTERM/SIGINT ended the run; the message says when and what is saved.

    A BaseException like KeyboardInterrupt: raised from the signal handler during the final evaluation, it is
    not swallowed by an `except Exception` in the code it interrupts.
    """

    def __init__(self, signum: int, status: str):
        super().__init__(f"{signal.Signals(signum).name} received {status}")
        self.signum = signum


class StopRequest:
    """SIGTERM/SIGINT during a run: recorded and acted on where stopping is safe; restores the old handlers.

    `status` says when a signal would stop the run and what is saved then; the trainer updates it. The handler
    records the signal; `check()` raises Preempted with `status` (start-up calls it between its steps), and the
    loop saves the current step before raising (`requested()`). While `immediate` (the final evaluation, when
    the training is saved and nothing is being written) the handler raises Preempted at once. A signal that
    arrives after the last check is raised when the block ends without another error.

    One process: Python handlers record the signal. Several processes: SIGTERM is left to JAX's runtime,
    whose preemption service tells every process (`multihost_utils.reached_preemption_sync_point`), so all
    save the same step; SIGINT (Ctrl-C) is turned into a SIGTERM to this process to take the same path (so
    there, a signal outside the loop is not seen: start-up and the final evaluation run to their end).
    """

    def __init__(self, multi_process: bool):
        self.multi_process = multi_process
        self.signum = None
        self.status = "during start-up: nothing was trained or saved"
        self.immediate = False
        self._calls = 0  # fused calls so far: the sync point's step counter, the same on every process
        self._previous = {}

    def __enter__(self):
        handlers = {signal.SIGINT: self._forward_as_sigterm} if self.multi_process else {
            signal.SIGTERM: self._record, signal.SIGINT: self._record}
        for sig, handler in handlers.items():
            self._previous[sig] = signal.signal(sig, handler)
        return self

    def _record(self, signum, frame):
        del frame
        self.signum = signum
        if self.immediate:
            self.check()

    def check(self) -> None:
        """Raises Preempted (with `status`) if a signal has arrived."""
        if self.signum is not None:
            raise Preempted(self.signum, self.status)

    def _forward_as_sigterm(self, signum, frame):
        del signum, frame
        os.kill(os.getpid(), signal.SIGTERM)

    def requested(self) -> bool:
        """Whether to save and stop now; call once after every fused call, on every process."""
        self._calls += 1
        if self.multi_process and multihost_utils.reached_preemption_sync_point(self._calls):
            self.signum = signal.SIGTERM
        return self.signum is not None

    def __exit__(self, exc_type, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if exc_type is None:
            self.check()
