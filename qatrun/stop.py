"""Interrupts and preemption: a signal stops the loop at the next step boundary, never mid-step.

``StopSignals`` catches SIGINT (Ctrl-C) and SIGTERM (what a scheduler sends before it kills a job) while
training: the loop finishes its step, writes a checkpoint and raises ``Interrupted``, which the command
line turns into one line and exit code 128 + the signal (130, 143). A second Ctrl-C stops at once.
Handlers someone else installed (submitit's SIGTERM bypass under Slurm) are left alone; a callable
handler of the preemption signal (submitit's requeue on SIGUSR2) is chained: the checkpoint is written
first, then the job is requeued and, started again in the same directory, resumes from it.
"""

from __future__ import annotations

import signal
import threading


class Interrupted(Exception):
    """The run stopped on a signal after writing a checkpoint at ``step``."""

    def __init__(self, signum: int, step: int, steps: int, run_dir):
        self.signum, self.step, self.steps, self.run_dir = signum, step, steps, run_dir
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"interrupted ({name}) at step {step} of {steps}; continue with: qatrun resume={run_dir}")


class StopSignals:
    """``with StopSignals() as stop:`` ... ``if stop.signum: ...`` at each step boundary."""

    CATCH = (signal.SIGINT, signal.SIGTERM)
    CHAIN = (getattr(signal, "SIGUSR2", None),)  # submitit's requeue signal on Slurm

    def __init__(self):
        self.signum, self._prev, self.chained = None, {}, None

    def _handler(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait for the step
        self.signum = signum
        if signum in self.CHAIN:
            self.chained = self._prev.get(signum)

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only
        for sig in self.CATCH + self.CHAIN:
            if sig is None:
                continue
            prev = signal.getsignal(sig)
            ours = (prev in (signal.SIG_DFL, signal.default_int_handler)) if sig in self.CATCH else callable(prev)
            if ours:
                self._prev[sig] = prev
                signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, prev in self._prev.items():
            signal.signal(sig, prev)
        self._prev.clear()
        return False

    def after_checkpoint(self) -> None:
        """Hand a chained signal on (submitit requeues the job and exits); otherwise return."""
        if self.chained is not None:
            handler, self.chained = self.chained, None
            handler(self.signum, None)
