"""Quantizers: how a weight's range ``m`` is set, and how activations are quantized.

Weight quantizers (registry ``QUANTIZERS``, family "quantizer"), one file each:

* ``tensor``  (``tensor.py``): one fixed range per tensor, the paper's grid (``Grid.init_range``), the default.
* ``channel`` (``channel.py``): one fixed range per output channel (max-abs or a percentile at init).
* ``lsq``     (``lsq.py``): a learned step size (Esser et al., ICLR 2020), per tensor or per channel,
  mapped onto both grids (``m = c * s``, ``c = n_bins / 2``; the module docstring derives the gradient).
* ``dynamic`` (``dynamic.py``): the range recomputed from the current weights every forward (max-abs or
  absmean, BitNet b1.58), per tensor or per channel, no gradient through it.

Activation quantizers (registry ``ACTIVATIONS``, family "activation quantizer"): ``fixed``
(``act_fixed.py``: calibrated once on the first batch) and ``pact`` (``act_pact.py``: a learned clip,
Choi et al. 2018); their shared math and the activation estimators (``ACT_ESTIMATORS``, ``ste``) are in
``act.py``. The per-channel range math (thresholds, level bounds, ``same_level``, ``warp``) is in
``ranges.py``. Members register where they are defined; this package imports every module in it
(``registry.discover``), so a new member is one new file. Pure torch: no I/O, no config.

    from qatrun import estimators, quantizers
    est = estimators.create("tanh", bits=2)
    q = quantizers.create("lsq", est.grid, layer.weight, scope="channel", init="fixed")
    w_q = q(layer.weight, est)              # Q(w); backward: g(w) to w, LSQ's gradient to q.step

Interface for the integration (layers / pair / spec)
----------------------------------------------------
* **Building.** ``create(name, grid, weight, **options)`` once per quantized layer, on the float weight
  after any re-init (the fixed and LSQ ranges are taken from it); options are the builder's keywords
  (``QUANTIZERS.options(name)``: ``tensor``: scale; ``channel``: percentile; ``lsq``: scope, init,
  grad_scale; ``dynamic``: stat, scope, c). Make it a child module of the layer (e.g. ``layer.wq``) so
  its state rides in the model's ``state_dict`` and moves with ``.to(device)``.
* **The current range.** ``q.range(weight)`` returns ``m``: a Python float (``tensor``), a 0-dim tensor
  (per-tensor ``lsq`` in fp64, ``dynamic``) or an ``(out, 1, ...)`` tensor in the weight's math dtype
  (per channel); detached. ``q.range()`` without the weight gives the stored one (``dynamic``: the last
  used). Pass it as ``m`` to everything in ``quant.Grid`` / ``estimators`` that is elementwise
  (``quantize``, ``level_index``, ``bin_index``, ``position``, ``estimator.grad``, ``mirror64``), and
  to ``ranges`` for the rest (``thresholds``, ``levels``, ``level_bounds``, ``same_level``, ``warp``:
  the twin's init ``M(w0)`` on a per-channel grid is ``ranges.warp(w0, m0, A, None)``).
* **The forward.** ``q(weight, estimator)`` replaces a fixed-range layer's ``RangeQuantize.apply(w, m, estimator)``; with
  ``tensor`` it runs the same arithmetic bit for bit (same float ``m``, same stride pin).
* **State.** ``tensor``: buffer ``qrange`` (fp64, the float exactly; restored on load). ``channel``:
  buffer ``qrange``. ``lsq``: parameter ``step`` (the optimizer must get it; the twin trains its own),
  buffers ``step_ref``, ``m_ref``. ``dynamic``: buffer ``qrange`` (last used; recomputed anyway).
  Activations: buffers ``signed``, ``calibrated`` and ``arange`` (``fixed``) or the parameter
  ``alpha`` (``pact``). The parameter shapes depend on the scope, so a checkpoint of one quantizer
  fails to load under another (name the key ``wq.step`` / ``wq.qrange`` in the resume rule).
* **Facts.** ``facts(name)`` (also class attributes): ``tensor`` and ``channel``: is_learned False,
  is_fixed True, in_theorem True. ``lsq``: True, False, False. ``dynamic``: False, False, False.
  Activations ``fixed``: False, True, True; ``pact``: True, False, True (a float parameter both
  runs train alike). A pair is inside the theorem only if its weight quantizer is.
* **Ranks.** Learned steps stay identical under DDP (gradients all-reduced). ``dynamic`` is a
  function of the weights. Activation calibration uses the first batch each rank sees: the
  integration must broadcast rank 0's ``arange`` / ``alpha`` / ``signed`` after the first forward
  (or calibrate on a batch every rank shares). The two runs of a pair must calibrate on the same batch.
"""

from __future__ import annotations

import torch

from qatrun.quant import Grid
from qatrun.quantizers.act import ACT_ESTIMATORS, ActivationQuantizer
from qatrun.quantizers.base import ACTIVATIONS, QUANTIZERS, WeightQuantizer
from qatrun.registry import discover

discover(__name__)  # every module here registers its own members: a new quantizer is one new file


def names() -> list[str]:
    return QUANTIZERS.names()


def activation_names() -> list[str]:
    return ACTIVATIONS.names()


def facts(name: str) -> dict:
    """``{"is_learned", "is_fixed", "in_theorem"}`` of a weight or activation quantizer by name."""
    return QUANTIZERS.meta(name) if name in QUANTIZERS else ACTIVATIONS.meta(name)


def create(name: str, grid: Grid, weight: torch.Tensor, **options) -> WeightQuantizer:
    """A weight quantizer for one weight tensor: ``create("channel", grid, layer.weight, percentile=99.9)``."""
    return QUANTIZERS.build(name, grid, weight, **options)


def create_activation(name: str, bits: int, **options) -> ActivationQuantizer:
    """An activation quantizer: ``create_activation("pact", bits=4, init_alpha=6.0)``."""
    return ACTIVATIONS.build(name, bits, **options)


__all__ = ["ACTIVATIONS", "ACT_ESTIMATORS", "QUANTIZERS", "ActivationQuantizer", "WeightQuantizer", "activation_names",
           "create", "create_activation", "facts", "names"]
