"""The errors qatrun raises for a run that cannot start or go on; each message is one line saying why.

``ValueError`` (and its subclasses ``preflight.UserError``, ``checkpoint.CheckpointError``) means bad
input, found before work starts; ``TrainingError`` means a run that started and cannot go on. The command
line prints either as one line and exits 2; no module needs to tell them apart by anything else.
"""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A run that cannot go on (NaN loss, broken step-0 invariant, a failed write); the message says why."""
