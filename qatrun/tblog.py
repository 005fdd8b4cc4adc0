"""The one place that talks to TensorBoard: scalars with ``group/name`` tags, histograms,
the resolved config as text, the Custom Scalars layout, and the final figures through the HParams plugin.

TensorBoard writes events from a background thread. When that write fails (a full disk, a run directory
removed or made read-only), the thread keeps the error and TensorBoard raises it at the next write; here it
is raised in the training thread, with the event file named, also at ``flush`` and ``close``, and the thread's
own traceback is not printed (``quiet_writer_threads``): the run ends in its one line (``qatrun.train.run``).
"""

from __future__ import annotations

import functools
import math
import os
import threading
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary


def quiet_writer_threads() -> None:
    """Let an ``OSError`` end TensorBoard's writer threads without ``Exception in thread ...``: the writer keeps it
    and ``TBLogger`` raises it in the training thread. Every other thread's exception is printed as before."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    prev = threading.excepthook
    if getattr(prev, "qatrun_tb", False):
        return

    def hook(args):
        if not (isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError)):
            prev(args)

    hook.qatrun_tb = True
    threading.excepthook = hook


def _raises_writer_failure(method):
    """A TBLogger method that raises the writer thread's failure as an ``OSError`` naming the event file."""
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        try:
            out = method(self, *args, **kwargs)
        except OSError as exc:
            raise self._named(exc) from None
        failure = self._failure()
        if failure is not None:
            raise failure from None
        return out
    return wrapped


class TBLogger:
    def __init__(self, log_dir: str, purge_step: int | None = None):
        quiet_writer_threads()
        # purge_step hides events at or after that step left by a run that died before resuming.
        self.writer = SummaryWriter(log_dir, purge_step=purge_step)
        self.tags: set[str] = set()  # scalar tags written by this process
        self._writers: list = []  # the event file writers, kept to read their threads' failure after close

    def _file_writers(self) -> list:
        for fw in (self.writer.all_writers or {}).values():
            if fw not in self._writers:
                self._writers.append(fw)
        return self._writers

    def _named(self, exc: OSError) -> OSError:
        if exc.filename is None and self._writers:
            exc.filename = os.fsdecode(self._writers[0].event_writer._file_name)
        return exc

    def _failure(self) -> OSError | None:
        """The first write error of a writer thread (TensorBoard's own attribute), or None."""
        for fw in self._file_writers():
            exc = getattr(getattr(fw.event_writer, "_async_writer", None), "_worker", None)
            exc = getattr(exc, "exception", None)
            if isinstance(exc, OSError):
                return self._named(exc)
        return None

    @_raises_writer_failure
    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, v in values.items():
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                self.writer.add_scalar(tag, v, step)
                self.tags.add(tag)

    @_raises_writer_failure
    def histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        self.writer.add_histogram(tag, values.detach().float().cpu(), step)

    @_raises_writer_failure
    def text(self, tag: str, text: str) -> None:
        self.writer.add_text(tag, text)

    @_raises_writer_failure
    def layout(self, layout: dict) -> None:
        """The Custom Scalars tab: charts that overlay several tags (``record.LAYOUT``)."""
        self.writer.add_custom_scalars(layout)

    @_raises_writer_failure
    def hparams(self, params: dict, metrics: dict[str, float], step: int) -> None:
        """Final figures in the HParams dashboard (same event file, so sweeps line up by run dir).

        The run writes its session only: with no experiment in the logdir TensorBoard builds one from the
        sessions, marking the keys whose values differ (``differs``) and listing them first; a sweep adds
        its own (``write_experiment``). A metric's value is the last point of the scalar with the same tag; figures never logged as a
        scalar (change points, correlations) are written once at ``step``, nothing is written twice: a
        process that logged no scalar (a re-run of a finished run) leaves the earlier points alone."""
        metrics = {k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}
        _, ssi, sei = hparams_summary(clean(params), metrics)
        fw = self.writer._get_file_writer()
        for s in (ssi, sei):  # no experiment here: TensorBoard reads one experiment per logdir (write_experiment)
            fw.add_summary(s)
        for k, v in metrics.items():
            if self.tags and k not in self.tags:
                self.writer.add_scalar(k, v, step)

    @_raises_writer_failure
    def flush(self) -> None:
        self.writer.flush()

    @_raises_writer_failure
    def close(self) -> None:
        self._file_writers()  # SummaryWriter forgets them on close
        self.writer.close()


def clean(params: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in params.items()}


def write_experiment(log_dir, runs: list[dict], metrics: list[str]) -> None:
    """One HParams experiment for a set of runs (a sweep: each run's ``hparams`` from its summary.json) in
    ``log_dir``: every key, those whose value differs between the runs marked ``differs`` (TensorBoard lists
    and checks them first), the metrics in the given order (the headline first). The folder holds only it: an
    earlier experiment there (the sweep before it was run again) is replaced."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    keys = list(dict.fromkeys(k for r in runs for k in r))
    differs = {k: len({repr(r.get(k)) for r in runs}) > 1 for k in keys}
    rep = {k: next(r[k] for r in runs if k in r) for k in sorted(keys, key=lambda k: not differs[k])}
    exp, _, _ = hparams_summary(clean(rep), {m: 0.0 for m in metrics})
    data = plugin_data_pb2.HParamsPluginData.FromString(exp.value[0].metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = differs.get(info.name, False)
    exp.value[0].metadata.plugin_data.content = data.SerializeToString()
    for old in Path(log_dir).glob("events.out.tfevents.*"):  # a sweep run again: its experiment replaces the last
        old.unlink()
    with SummaryWriter(str(log_dir)) as w:
        w._get_file_writer().add_summary(exp)
