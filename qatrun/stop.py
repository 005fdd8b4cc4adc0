"""Interrupts and preemption: a signal stops the loop at the next step boundary, never mid-step.

``StopSignals`` catches SIGINT (Ctrl-C) and SIGTERM (what a scheduler sends before it kills a job) while
training: the loop finishes its step, writes a checkpoint and raises ``Interrupted``, which the command
line turns into one line and exit code 128 + the signal (130, 143). While the run is still starting
(``deferred`` false: nothing computed yet) and on a second Ctrl-C it stops at once (``StopNow``), its last
checkpoint as it was. Handlers someone else installed (submitit's SIGTERM bypass under Slurm) are left
alone; a callable handler of the preemption signal (submitit's requeue on SIGUSR2) is chained: the
checkpoint is written first, then the job is requeued and, started again in the same directory, resumes
from it. qatrun's own process-wide handlers (``takes_over``: a sweep's, ``qatrun.sweep``) are taken
over and told of the signal.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading


def takes_over(handler, notify: bool = True):
    """Mark a handler of qatrun's own that ``StopSignals`` replaces while training and, with ``notify``,
    calls on a signal."""
    handler.qatrun_takes_over = "notify" if notify else "replace"
    return handler


class StopNow(BaseException):
    """A signal while the run was starting, or a second Ctrl-C: stop without another checkpoint. A
    BaseException, as KeyboardInterrupt is, so that no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Interrupted(Exception):
    """The run stopped on a signal. ``step``: the step its checkpoint holds (None: unknown, the one it had);
    ``how``: how it stopped when not at a step boundary ("while starting", "a second time: at once");
    ``checkpoint``: whether it has one to continue from."""

    def __init__(self, signum: int, step: int | None, steps: int | None, run_dir, how: str = "",
                 checkpoint: bool = True):
        self.signum, self.step, self.steps, self.run_dir = signum, step, steps, run_dir
        self.exit_code = 128 + signum
        super().__init__(interrupted_line(signal.Signals(signum).name, step, steps, run_dir, how, checkpoint))


def interrupted_line(name: str, step: int | None, steps: int | None, run_dir, how: str = "",
                     checkpoint: bool = True) -> str:
    """One line: the signal, where the run stopped and the command that continues it, quoted for a shell."""
    what = f"interrupted ({name}{', ' + how if how else ''})"
    if not checkpoint:
        return f"{what} before its first checkpoint; nothing to continue: run the command again"
    if step is None:
        at = "; its last checkpoint is as it was"
    elif how:
        at = f" with its last checkpoint at step {step} of {steps}"
    else:
        at = f" at step {step} of {steps}"
    return f"{what}{at}; continue with: qatrun resume={shlex.quote(str(run_dir))}"


class StopSignals:
    """``with StopSignals() as stop:`` ... ``if stop.signum: ...`` at each step boundary. Until ``deferred`` is
    set, a signal raises ``StopNow`` at once (the run is starting: there is no step to finish)."""

    CATCH = (signal.SIGINT, signal.SIGTERM)
    CHAIN = (getattr(signal, "SIGUSR2", None),)  # submitit's requeue signal on Slurm

    def __init__(self, deferred: bool = True):
        self.signum, self._prev, self.chained, self.deferred = None, {}, None, deferred
        self._depth = 0  # re-entered by the loop inside the run's own ``with``: the outermost one restores

    def _handler(self, signum, frame):
        prev = self._prev.get(signum)
        if getattr(prev, "qatrun_takes_over", None) == "notify":
            prev(signum, frame)  # a sweep learns of the signal (it stops its other points)
        if not self.deferred or (self.signum == signal.SIGINT and signum == signal.SIGINT):
            raise StopNow(signum)  # starting, or a second Ctrl-C: the user does not want to wait for the step
        if self.signum is None:  # the first signal names the stop (a sweep's SIGTERM after a Ctrl-C does not)
            self.signum = signum
        if signum in self.CHAIN:
            self.chained = self._prev.get(signum)

    def __enter__(self):
        self._depth += 1
        if self._depth > 1 or threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only
        for sig in self.CATCH + self.CHAIN:
            if sig is None:
                continue
            prev = signal.getsignal(sig)
            ours = getattr(prev, "qatrun_takes_over", False) or (
                (prev in (signal.SIG_DFL, signal.default_int_handler)) if sig in self.CATCH else callable(prev))
            if ours:
                self._prev[sig] = prev
                signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth:
            return False
        for sig, prev in self._prev.items():
            signal.signal(sig, prev)
        self._prev.clear()
        return False

    def after_checkpoint(self) -> None:
        """Hand a chained signal on (submitit requeues the job and exits); otherwise return."""
        if self.chained is not None:
            handler, self.chained = self.chained, None
            handler(self.signum, None)


def is_command_line() -> bool:
    """Whether this process is the ``qatrun`` command (or ``python -m qatrun``), not a program importing it."""
    arg0 = os.path.normpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return os.path.basename(arg0) == "qatrun" or arg0.endswith(os.path.join("qatrun", "__main__.py"))


def catch_early() -> None:
    """At the command line, before torch and Hydra load (seconds in which nothing is written yet): SIGINT and
    SIGTERM end the process with one line and 128 + the signal, not a traceback from inside an import.
    A signal the caller ignores (a background job's SIGINT) stays ignored."""
    for sig in StopSignals.CATCH:
        if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(sig, _early)


# what the early handler says; the command line changes it once the run has ended
early_words = ["while starting, before any step; nothing was computed: run the command again"]


def _early(signum, frame):
    # os.write, not print: the signal may have come in the middle of a print to stderr
    os.write(2, f"qatrun: interrupted ({signal.Signals(signum).name}) {early_words[0]}\n".encode())
    os._exit(128 + signum)


takes_over(_early, notify=False)
