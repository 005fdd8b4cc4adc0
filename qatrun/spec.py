"""One spec, built once: the config turned into the plain objects a run is built from.

``build(cfg)`` reads every group of the resolved config and returns a ``RunSpec``: both estimators, the
twin spec (with its role), the optimizer (name, peak lr, options; built once over a stand-in parameter,
so torch's own range checks run), the data's shape (stated by the dataset without reading it), the model
(built on the meta device and fed one batch of that shape) and the trainer's lengths. Every check lives
in a builder; preflight calls ``build`` for every sweep point and ``train`` calls it for the run, so
preflight is exactly what training does, minus the training. Errors are ``ValueError`` in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from omegaconf import OmegaConf

from qatrun import checks, estimators, identity, optim, quantizers
from qatrun.metrics import select as select_metrics
from qatrun.data import DataShape, describe
from qatrun.models import check_model
from qatrun.pair import TwinSpec, autocast, resolve_twin

DEVICES = ("auto", "cpu", "cuda")
SEED_MAX = 2**32 - 1


def group(cfg_group) -> tuple[str, dict]:
    """A config group as (registry name, the other keys as plain values)."""
    values = OmegaConf.to_container(cfg_group, resolve=True)
    return values.pop("name"), values


def select_device(name: str) -> torch.device:
    checks.one_of("device", name, DEVICES)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(name)


def keyed(exc: ValueError, key: str, name: str, options: dict) -> ValueError:
    """A builder's message naming the full key: "estimator.bits must be ...", else "estimator=qnet: ..."."""
    msg, first = str(exc), str(exc).split(" ", 1)[0]
    if msg.startswith(f"{name}: "):
        msg = msg[len(name) + 2:]
    return ValueError(f"{key}.{msg}" if first in options else msg if msg.startswith(key) else f"{key}={name}: {msg}")


def build_estimators(cfg):
    """The run's estimator and the twin's own (None unless ``estimator@twin_estimator=...`` was chosen)."""
    def one(cfg_group, key):
        name, options = group(cfg_group)
        try:
            return estimators.create(name, **options)
        except ValueError as exc:
            raise keyed(exc, key, name, options) from None

    twin_cfg = OmegaConf.select(cfg, "twin_estimator")
    return one(cfg.estimator, "estimator"), (one(twin_cfg, "twin_estimator") if twin_cfg is not None else None)


@dataclass(frozen=True)
class TrainerSpec:
    """The loop's settings (``trainer.*``): lengths, when to log, evaluate and checkpoint, what to measure."""

    max_steps: int | None
    epochs: int
    warmup_frac: float
    log_every: int
    eval_every: int
    checkpoint_every: int
    checkpoint_minutes: float
    metrics: tuple  # the pair metrics measured (``qatrun.metrics``), by registry name
    progress: bool
    scatter_sample: int


@dataclass(frozen=True)
class RunSpec:
    """Everything a run is built from; ``train`` reads nothing else."""

    estimator: estimators.Estimator
    twin_estimator: estimators.Estimator | None
    twin: TwinSpec
    optimizer: str
    lr: float
    optimizer_options: dict
    model: str
    model_options: dict
    he_init: bool
    quantize_linear: bool
    quantized: list  # the names of the layers a run quantizes, in module order
    quantizer: str  # how each quantized layer's range is set (qatrun.quantizers)
    quantizer_options: dict
    activation: str | None  # the quantizer of every quantized layer's input but the first's (None: float)
    activation_options: dict
    data: str
    data_options: dict
    shape: DataShape
    device: torch.device
    trainer: TrainerSpec
    seed: int
    deterministic: bool
    precision: str
    channels_last: bool
    compile: bool
    run: identity.RunIdentity  # the resolved config, its provenance and fingerprint
    warnings: tuple = ()  # said once when the run starts

    def steps(self, steps_per_epoch: int) -> int:
        tr = self.trainer
        return tr.max_steps if tr.max_steps is not None else tr.epochs * steps_per_epoch


def build_quantizers(cfg, est) -> tuple[str, dict, str | None, dict]:
    """The weight quantizer and the activation quantizer (or None) with their options, each checked by
    building it once on a stand-in (an option out of range is refused here, in one line)."""
    q_name, q_options = group(cfg.quantizer)
    stand_in = torch.linspace(-1.0, 1.0, 16).reshape(4, 4)
    try:
        quantizers.create(q_name, est.grid, stand_in, **q_options)
    except ValueError as exc:
        raise keyed(exc, "quantizer", q_name, q_options) from None
    act = OmegaConf.select(cfg, "activation")
    if act is None:
        return q_name, q_options, None, {}
    a_name, a_options = group(act)
    try:
        quantizers.create_activation(a_name, **a_options)
    except ValueError as exc:
        raise keyed(exc, "activation", a_name, a_options) from None
    return q_name, q_options, a_name, a_options


def check_own_ranges(model: str, shape: DataShape, est, seed: int, quantize_linear: bool, quantizer: str,
                     options: dict, model_options: dict) -> None:
    """Build the estimator run on the CPU as training will (its own init, ``model.he_init=false``), so that a
    range its weights cannot give (an all-zero output channel under ``channel``) is refused before anything is
    created, naming the layer. The global RNG is left as it was."""
    from qatrun.build import build_run

    with torch.random.fork_rng(devices=[]):
        build_run(model, shape.num_classes, est, seed, False, shape.input_shape, quantize_linear, quantizer=quantizer,
                  quantizer_options=options, **model_options)


def build_trainer(tr) -> TrainerSpec:
    if tr.max_steps is not None:
        checks.positive_int("trainer.max_steps", tr.max_steps)
    else:
        checks.positive_int("trainer.epochs", tr.epochs)
    for key in ("log_every", "eval_every", "checkpoint_every"):
        checks.positive_int(f"trainer.{key}", tr[key])
    checks.in_range("trainer.warmup_frac", tr.warmup_frac, 0, 1)
    checks.positive("trainer.checkpoint_minutes", tr.checkpoint_minutes)
    checks.positive_int("trainer.scatter_sample", tr.scatter_sample, minimum=0)
    names = OmegaConf.to_container(tr.metrics) if OmegaConf.is_config(tr.metrics) else tr.metrics
    try:
        metrics = select_metrics(names)
    except ValueError as exc:
        raise ValueError(f"trainer.metrics: {exc}") from None
    if not tr.changepoints:  # the older switch for one metric, kept so saved configs mean what they meant
        metrics = [m for m in metrics if m != "changepoints"]
    return TrainerSpec(tr.max_steps, tr.epochs, tr.warmup_frac, tr.log_every, tr.eval_every, tr.checkpoint_every,
                       tr.checkpoint_minutes, tuple(metrics), tr.progress, tr.scatter_sample)


def build(cfg, data_shape: DataShape | None = None) -> RunSpec:
    """The run described by ``cfg`` as plain objects, every option checked (``ValueError``: one line).
    ``data_shape``: the shape of a dataset already built (else the dataset states it from its options)."""
    device = select_device(cfg.device)
    autocast(cfg.precision, device)  # the pair's own check of the precision
    checks.positive_int("seed", cfg.seed, minimum=0)
    if cfg.seed > SEED_MAX:  # torch's CPU generator (mt19937) keeps the low 32 bits: 2^40 would be seed 0 again
        raise ValueError(f"seed must be an integer from 0 to {SEED_MAX}, got {cfg.seed}: torch's CPU generator keeps "
                         f"32 bits, so it would repeat seed {cfg.seed % (SEED_MAX + 1)}")
    trainer = build_trainer(cfg.trainer)
    data_name, data_options = group(cfg.dataset)
    shape = data_shape or describe(data_name, **data_options)
    est, twin_est = build_estimators(cfg)
    opt_name, opt_options = group(cfg.optimizer)
    lr = opt_options.pop("lr")
    optim.build_optimizer(opt_name, [torch.zeros(1, requires_grad=True)], lr, **opt_options)  # torch's checks too
    twin = resolve_twin(cfg.pair.twin, est, optim.twin_rule(opt_name), cfg.pair.twin_lr_scale, twin_est,
                        cfg.pair.mirror_extension)
    q_name, q_options, a_name, a_options = build_quantizers(cfg, est)
    twin = replace(twin, in_theorem=quantizers.facts(q_name)["in_theorem"]
                   and (a_name is None or quantizers.facts(a_name)["in_theorem"]))
    model_name, model_options = group(cfg.model)
    he_init, quantize_linear = model_options.pop("he_init"), model_options.pop("quantize_linear")
    quantized = check_model(model_name, model_options, shape.input_shape, shape.num_classes, quantize_linear)
    if not he_init:  # the ranges come from the model's own weights, which the meta build above has no values of
        check_own_ranges(model_name, shape, est, cfg.seed, quantize_linear, q_name, q_options, model_options)
    warnings = ()
    if optim.OPTIMIZERS.meta(opt_name).get("lr_at_first_step") and trainer.warmup_frac > 0:
        warnings = (f"optimizer={opt_name} reads its lr once, at the first step, where the warm-up (trainer.warmup_frac="
                    f"{trainer.warmup_frac:g}) has it at 0: optimizer.lr={lr:g} has no effect and every step size starts "
                    "at its minimum; set trainer.warmup_frac=0 to start from optimizer.lr",)
    return RunSpec(est, twin_est, twin, opt_name, lr, opt_options, model_name, model_options, he_init, quantize_linear,
                   quantized, q_name, q_options, a_name, a_options, data_name, data_options, shape, device, trainer, cfg.seed, cfg.deterministic,
                   cfg.precision, cfg.channels_last, cfg.compile, identity.of(cfg), warnings)

