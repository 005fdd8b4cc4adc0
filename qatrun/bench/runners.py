"""The configurations ``qatrun-bench`` times, each one iteration at a time on a fixed batch.

Every runner has ``iteration()``, ``zero_grads()`` and ``resident_tensors()``:

* ``PlainStep`` (a): the float model trained with plain PyTorch (no qatrun code in the step);
* ``QatLoop`` (b)/(c): one quantized qatrun run or the pair, built by ``train.build_pair`` and
  stepped exactly as ``train.train`` steps it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from qatrun.bench.timing import Sections
from qatrun.compose import compose_config
from qatrun.models import build_model
from qatrun.optim import build_optimizer
from qatrun.record import Recorder
from qatrun.train import build_pair, log_figures

if TYPE_CHECKING:
    from qatrun.bench.cases import Case

# Steps the schedulers are built for: with no warm-up the lr stays ~lr (cosine ~1) while we time,
# so the weights move (and change level) as in the middle of a real run.
SCHEDULE_STEPS = 1_000_000


def make_cfg(case: Case, log_every: int | None = None, overrides=()):
    """The default qatrun config (``configs/config.yaml``) set up for ``case``, warm-up off."""
    ov = [f"model={case.model}", f"device={case.device}", f"precision={case.precision}",
          f"channels_last={str(case.channels_last).lower()}", f"compile={str(case.qat_compile).lower()}",
          "trainer.warmup_frac=0.0", "trainer.progress=false", *overrides]
    if log_every is not None:
        ov.append(f"trainer.log_every={log_every}")
    return compose_config(ov)


def without_compile(cfg):
    """``cfg`` with ``compile=false`` (the eager fallback when ``torch.compile`` fails)."""
    return OmegaConf.merge(cfg, {"compile": False})


def make_batch(case: Case, device: torch.device, seed: int = 0):
    """One synthetic batch of the case's shape, generated on ``device``."""
    from qatrun.data.synthetic import SyntheticImages

    data = SyntheticImages(case.num_classes, case.image_size, case.channels, length=case.batch, device=device,
                           seed=seed)
    return data.get_batch(0, case.batch)


def _optimizer_tensors(opt) -> list[torch.Tensor]:
    return [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]


class PlainStep:
    """(a) The baseline: plain PyTorch, no qatrun code in the step (the model is a plain nn.Module).

    ``optimizer``: the config's optimizer as (registry name, options with ``lr``), one parameter
    group (``torch.optim.SGD`` with the config's momentum for the default config)."""

    def __init__(self, case: Case, x, y, optimizer: tuple[str, dict], compiled: bool = False, seed: int = 0,
                 model_kwargs=None):
        torch.manual_seed(seed)
        model = build_model(case.model, case.num_classes, tuple(x.shape[1:]), **(model_kwargs or {})).to(x.device)
        self.fmt = torch.channels_last if case.channels_last else torch.contiguous_format
        model = model.to(memory_format=self.fmt)
        self.model = model
        self.fwd = torch.compile(model) if compiled else model
        name, options = optimizer
        options = dict(options)
        self.opt = build_optimizer(name, model.parameters(), options.pop("lr"), **options)
        self.x, self.y = x, y
        self.amp = dict(device_type=x.device.type, dtype=torch.bfloat16, enabled=case.precision == "bf16")

    def iteration(self):
        # the batch arrives NCHW, as from a loader (and as the qatrun step gets it), and is
        # converted here, as a channels_last training loop would
        with torch.autocast(**self.amp):
            loss = F.cross_entropy(self.fwd(self.x.contiguous(memory_format=self.fmt)).float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def zero_grads(self):
        self.opt.zero_grad(set_to_none=True)

    def resident_tensors(self):
        return [*self.model.parameters(), *self.model.buffers(), *_optimizer_tensors(self.opt)]


class QatLoop:
    """(b)/(c) One iteration of ``train.train``'s loop, for one quantized run or for the pair:
    ``Pair.step`` on a fixed batch and, every ``trainer.log_every`` steps, the trainer's logging
    step (NaN check, ``Pair.mean_losses``, ``train.log_figures`` kept by a ``Recorder`` without
    TensorBoard). ``sec`` times the sections of each iteration."""

    def __init__(self, cfg, x, y, num_classes: int, pair: bool, sections: Sections | None = None):
        if not pair:
            cfg = OmegaConf.merge(cfg, {"pair": {"twin": "none"}})
        self.cfg, self.x, self.y = cfg, x, y
        self.pair = build_pair(cfg, num_classes, x.device, SCHEDULE_STEPS, input_shape=tuple(x.shape[1:]))
        self.rec = Recorder()
        self.step = 0
        self.log_every = cfg.trainer.log_every
        self.sec = sections or Sections(x.device)

    def iteration(self):
        self.pair.step(self.step, self.x, self.y, timer=self.sec)
        self.step += 1
        if self.step % self.log_every == 0:
            self.log()

    def log(self):
        with self.sec("log"):
            bad = self.pair.first_nonfinite()
            if bad is not None:
                raise RuntimeError(f"qatrun-bench: the {bad[0]} run's loss became NaN or Inf at step {bad[1]}")
            means = self.pair.mean_losses()
            self.rec.record("log", self.step, log_figures(self.pair, self.step, means))

    def zero_grads(self):
        for o in self.pair.optims:
            o.zero_grad(set_to_none=True)

    def resident_tensors(self):
        return self.pair.resident_tensors()
