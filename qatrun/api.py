"""``qatrun.run``: the command line as a function, for notebooks and scripts.

    import qatrun
    summary = qatrun.run(["estimator=tanh", "optimizer=sgd"], trainer__max_steps=100)
    summary["pair/quantized_agreement"]

Overrides come as a list of ``key=value`` strings, as keyword arguments (``__`` stands for the dot:
``optimizer__lr=0.1``; ``**{"optimizer.lr": 0.1}`` works too) or both. They are composed and
checked exactly as on the command line (``qatrun.preflight``); a mistake raises
``qatrun.preflight.UserError`` (a ``ValueError``) with the same one-line message. The run goes
to ``run_dir`` or, by default, to the directory ``qatrun`` would use (``hydra.run.dir``); the summary
says where (``summary["run_dir"]``).

Your own model and data, as Python objects: ``model=`` takes a function returning an ``nn.Module``
(called like ``model.target``'s), ``dataset=`` an object with ``num_classes``, ``input_shape``,
``steps_per_epoch``, ``batch(step)`` and ``test_batches()`` (or a function returning one)::

    summary = qatrun.run(model=my_net, dataset=MyData(), trainer__max_steps=50)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from qatrun import preflight
from qatrun.train import train
from qatrun.userimport import live


def value(v) -> str:
    """A Python value as Hydra override text: None -> null, True -> true, lists as [a,b]."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(value(x) for x in v) + "]"
    return str(v)


def overrides_of(overrides=None, **options) -> list[str]:
    if isinstance(overrides, str):
        raise TypeError(f"qatrun.run takes a list of overrides, got the string {overrides!r}; wrap it in [...]")
    return [*(overrides or []), *(f"{k.replace('__', '.')}={value(v)}" for k, v in options.items())]


def objects_of(model, dataset) -> list[str]:
    """Overrides standing for a model factory / dataset object handed in from Python (a string is a group option)."""
    out = []
    if model is not None:
        out += [f"model={model}"] if isinstance(model, str) else ["model=custom", f"model.target={live(model, 'model')}"]
    if dataset is not None:
        out += [f"dataset={dataset}"] if isinstance(dataset, str) else \
            ["dataset=custom", f"dataset.target={live(dataset, 'dataset')}"]
    return out


def run(overrides: list[str] | None = None, *, run_dir: str | os.PathLike | None = None, model=None, dataset=None,
        **options) -> dict:
    """Train one pair; returns the summary (the figures of ``summary.json``, ``history``, ``config``, ``run_dir``)."""
    ovs = objects_of(model, dataset) + overrides_of(overrides, **options)
    try:
        if any(o.startswith("resume=") for o in ovs):
            where, cfg = preflight.resume(ovs)
            return train(cfg, where) | {"run_dir": str(where)}
        cfg = preflight.compose(ovs, hydra_cfg=True)
        out = Path(run_dir) if run_dir is not None else Path(cfg.hydra.run.dir)
        with open_dict(cfg):
            del cfg["hydra"]
        preflight.check(cfg)
    except preflight.UserError:
        raise
    except ValueError as exc:  # a builder's check: the same one line as on the command line
        raise preflight.UserError(str(exc)) from None
    summary = train(cfg, out)
    (out / ".hydra").mkdir(exist_ok=True)  # as a qatrun run directory: the config and the overrides
    (out / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (out / ".hydra" / "overrides.yaml").write_text(json.dumps(ovs))
    summary["run_dir"] = str(out)
    return summary
