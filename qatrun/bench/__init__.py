"""``qatrun-bench`` (``make bench``): what does the pair cost next to plain PyTorch?

One process, one fixed batch (synthetic, generated on the device), several configurations of the
same architecture, measured after warm-up in interleaved rounds (median over rounds per config).
The qatrun config is the default one (``configs/config.yaml``, docs/configuration.md:
the tanh estimator, SGD with momentum, the adjusted-STE twin of arXiv 2405.05171, logging every
``trainer.log_every`` steps) with the case's model, precision and memory format, and
``trainer.warmup_frac=0`` so that the weights move from the first timed step on:

* ``plain`` (a): the float model trained with plain PyTorch only: ``build_model`` (plain
  ``nn.Module``\\ s), the config's optimizer (``torch.optim.SGD`` with its momentum) over one
  parameter group at the config's lr, cross-entropy, ``zero_grad(set_to_none)``, no lr scheduler,
  same precision (autocast) and memory format as the qatrun runs. Also ``plain_compiled`` (the
  same step with ``torch.compile(model)``) in cpu-small and the GPU cases.
* ``single`` (b): one quantized qatrun run (the default config with ``pair.twin=none``), a
  ``pair.Pair`` built by the trainer's own ``train.build_pair``.
* ``pair`` (c): the estimator run and its twin (``pair.twin=auto``) on the same batch, through the
  same ``Pair.step`` the loop in ``train.train`` calls: both steps, the loss sums and NaN watch,
  ``WeightComparer.accumulate`` and ``ChangePointTracker.update`` every step, and every
  ``trainer.log_every`` steps the trainer's logging step: ``Pair.first_nonfinite`` (NaN check),
  ``Pair.mean_losses`` (host sync) and ``train.log_figures`` (comparer metrics to floats, losses,
  lrs) kept by a ``record.Recorder`` without a TensorBoard writer. Evaluation and checkpoints are
  not part of the step and are not timed.
* ``single_compiled``, ``pair_compiled`` (cpu-small): (b) and (c) with ``compile=true``, beside the
  eager ones, so that ``pair_compiled / plain_compiled`` (target <= 2.10x, two float steps being
  2.00x) is measured on the CPU too. A compiled pair resets dynamo when it is built, so every
  compiled config runs one more iteration after the last build, before the timed rounds.

Timing: every round runs ``--steps`` iterations (default: the logging interval, so each pair
round holds exactly one logging step) of every config; ms/step is the median over rounds (the
fastest round is reported too). A ratio is the median of the per-round ratios (the configs of a round
share its load), printed with its per-round range; while a pair ratio spreads over 10% of its median,
one more round runs, up to 3x ``--rounds``. A pair ratio below its physical floor (two steps of the same
kind, 2.00x) is printed as noise, with no verdict against its target (``timing``). On the CPU the
configs alternate every iteration (``a b c a b c ...``, each iteration timed alone: a neighbour's load then hits all configs alike);
on the GPU each config runs its ``--steps`` iterations between two ``torch.cuda.synchronize`` (the
host runs ahead as in training), configs in rotating order (``--interleave`` picks either). Inside
the pair iteration, sections (``est_step``, ``twin_step``, ``accumulate``, ``tracker``, ``log``)
are timed with ``perf_counter`` on the CPU (ops are synchronous there) and with CUDA events on the
GPU (no host sync; stream time between events). ``tracker`` (level indices of both runs plus
``ChangePointTracker.update``) over the pair step is the change-point cost.

Cases: ``cpu-small`` (small CNN, batch 600, what ``make bench`` runs without CUDA); with CUDA also
``gpu-small128``, ``gpu-small600`` and ResNet-50 batch 256 channels_last in fp32 and bf16;
``--cases scaling``: ``cpu-scale-small`` (small CNN, batch 64) and ``cpu-scale-r18`` (ResNet-18 at
3x32x32, batch 64), eager, and a table (``scaling``) of ms/step and the change-point tracker's cost
and bytes per quantized weight, to predict a larger model. ``--skip single`` spares a case a build
(a ResNet-50 compile on the GPU); ``--compiled off`` drops the compiled configs. The GPU
cases run the qatrun configs with ``compile=true`` (``pair.compile_step``: ``torch.compile`` of each
model, default mode, so no CUDA graphs; a compile failure falls back to eager and is noted) and
add ``plain_compiled``. The ``gpu-small128`` target (pair below one eager plain step) needs the
whole pair iteration in CUDA graphs, which the trainer does not offer: expect FAIL there.

Peak memory, the same definition on both devices: ``resident`` (parameters, buffers, optimizer
state, metric state, loss accumulators: ``Pair.resident_tensors``, what lives between steps,
gradients excluded) plus ``transient`` (the largest amount allocated above that during one
iteration, gradients included; for the pair one iteration followed by a logging step).
``transient`` is measured, with the profiler's allocation events on the CPU (``Total Allocated``
since the start, frees of pre-existing blocks not credited, so an upper bound) and
``torch.cuda.max_memory_allocated`` on the GPU. ``resident`` is the sum of the distinct tensor
storages on the CPU and the measured ``memory_allocated`` growth from building and warming the
config up on the GPU (compiled graphs and CUDA-graph pools included).

Not unit tests: nothing here asserts a timing; the verdicts against the targets are printed and
written to the JSON.

Modules: ``cases`` (cases, targets, selection), ``runners`` (the configurations), ``timing``
(syncs, section timers, the interleaved rounds, ratios with their spread and floors), ``memory`` (the
memory pass, the profile), ``measure`` (build, timed rounds, figures: ``run_case``),
``report`` (the printed table, metadata), ``scaling`` (the scaling table), ``cli`` (options, ``run``,
``main``).
"""

from qatrun.bench.cases import CASES, Case, select_cases
from qatrun.bench.cli import main, parse_args, run
from qatrun.bench.measure import run_case
from qatrun.bench.report import format_case

__all__ = ["CASES", "Case", "format_case", "main", "parse_args", "run", "run_case", "select_cases"]
