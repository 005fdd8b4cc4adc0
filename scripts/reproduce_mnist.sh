#!/usr/bin/env bash
# Reproduce the paper's MNIST comparisons (and the variations past it), then draw the report.
#   bash scripts/reproduce_mnist.sh full|quick [extra overrides, e.g. device=cuda]
#   bash scripts/reproduce_mnist.sh report      # no training: redraw the report from the runs
#   BLOCKS="sgd adam" bash scripts/reproduce_mnist.sh full     # only these blocks (then the report)
# Runs go to results/mnist[-quick]/runs/<block>/<job>/, the report to results/mnist[-quick]/.
#
# Which preset is which of the paper's comparisons (arXiv 2405.05171, MNIST):
#   sgd      the estimator under SGD against the adjusted STE twin (init M(w0), lr x alpha)
#   warp_lr  the paper's control: SGD twin WITHOUT the warped initialization (init w0, lr x alpha)
#   adam     the estimator under Adam against the plain STE twin (same init, same lr)
#   jitter   the noise floor: the estimator against itself at lr x 1.01 (adam_jitter: under Adam)
# Past the paper: sgd_nowarp (plain STE twin, no adjustment at all), warp_init (init only), long
# (5 epochs: how the pair drifts as training goes on), the lr law (with a jitter floor at every lr),
# bit widths, out-of-class shapes.
# Weight decay: 0 throughout (configs/optimizer/*.yaml). The authors' earlier variant used 1e-4,
# but L2 breaks the exact correspondence: the decay term lambda*w of the estimator run is not
# divided by g(w), so seen through M it is not the twin's decay lambda*M(w). With decay the suite
# would test the theorem outside its assumptions; qatrun leaves that to an explicit override.
set -euo pipefail
mode=${1:-quick}; shift || true
extra=("$@")
QATRUN=${QATRUN:-.venv/bin/qatrun}
REPORT=${REPORT:-.venv/bin/qatrun-report}
QATRUN_PY=${QATRUN_PY:-.venv/bin/python}

case "$mode" in
  full)
    # 1 epoch (100 steps at batch 600) per run, 3 for scaledown, 5 for long; all 10,000 test images.
    out=${OUT:-results/mnist}
    # compile=true: measured end to end (compilation included) on 2 CPU cores, a 100-step pair ran in 143 s
    # compiled against 157 s eager, side by side, figures equal within float tolerance (README "Results").
    size=(trainer.eval_every=25 trainer.log_every=5 trainer.progress=false compile=true)  # epochs from the config
    seeds=0,1,2
    sgd_lrs=0.001,0.00316,0.01,0.0316,0.1
    adam_lrs=0.0001,0.00032,0.001,0.0032,0.01
    long=(trainer.epochs=5)
    ;;
  quick)
    # 37 runs of 40 steps on 2,000 test images: about 35 minutes on 2 CPU cores (estimated).
    out=${OUT:-results/mnist-quick}
    size=(trainer.max_steps=40 trainer.eval_every=20 trainer.log_every=5 dataset.test_subset=2000 trainer.progress=false)
    seeds=0
    sgd_lrs=0.001,0.01,0.1
    adam_lrs=0.0001,0.001,0.01
    long=(trainer.max_steps=120)
    ;;
  report)  # no training: redraw results/mnist (or $OUT) from its runs
    out=${OUT:-results/mnist}
    "$REPORT" "$out/runs" --out "$out" --drift experiment_name=long --atlas experiment_name=optimizers \
      --quantizer-atlas experiment_name=quantizers
    exit ;;
  *) echo "usage: $0 full|quick|report [overrides]" >&2; exit 2 ;;
esac
all_blocks="sgd adam jitter adam_jitter sgd_nowarp warp_lr ablation outside bits scaledown long any_pair_tanh25 any_pair_cosine any_pair_pwl any_pair_adam any_pair_literature lr_sgd lr_sgd_nowarp lr_adam lr_jitter lr_adam_jitter lr_seeds optimizers resnet18 quantizers"
BLOCKS=${BLOCKS:-$all_blocks}

runs=$out/runs
mkdir -p "$runs"
start=$(date +%s)
block() {  # block NAME OVERRIDES...: one multirun into runs/NAME (re-running skips finished jobs, resumes the others)
  local name=$1; shift
  [[ " $BLOCKS " == *" $name "* ]] || return 0
  local t0; t0=$(date +%s)
  echo "== $name: $*"
  "$QATRUN" -m "$@" "${size[@]}" "${extra[@]}" hydra.sweep.dir="$runs/$name" > "$runs/$name.log" 2>&1 \
    || { echo "block $name failed, see $runs/$name.log" >&2; tail -5 "$runs/$name.log" >&2; }
  echo "$name $(( $(date +%s) - t0 ))" >> "$runs/block_seconds.txt"
}

# The authors' comparisons.
block sgd        experiment=sgd        seed=$seeds
block adam       experiment=adam       seed=$seeds
block jitter     experiment=jitter     seed=$seeds
block adam_jitter experiment=adam_jitter seed=0   # the noise floor under Adam: Adam gets a verdict
block warp_lr    experiment=warp_lr    seed=$seeds
# Past the paper: no adjustment at all, the init half alone, outside the class, other bit widths.
block sgd_nowarp experiment=sgd_nowarp seed=$seeds
block ablation   experiment=warp_init  seed=0
block outside    experiment=ewgs,zero_shape   seed=0
if [ "$mode" = full ]; then
  block bits      experiment=bits1,bits4 seed=0
  block scaledown experiment=scaledown   seed=0
fi
# Longer training: warped SGD, no-warp SGD and Adam side by side.
block long experiment=sgd,sgd_nowarp,adam seed=0 "${long[@]}" experiment_name=long
# Any two estimators (A against B, both STEs in disguise): each A-B pair warped (full) and unwarped (nowarp)
# under SGD, one Adam pair; then each literature estimator against its STE twin.
block any_pair_tanh25   estimator@twin_estimator=tanh twin_estimator.k=2.5 pair.twin=full,nowarp seed=0 experiment_name=any_pair
block any_pair_cosine   estimator@twin_estimator=custom twin_estimator.shape=qatrun.shapes.cosine pair.twin=full,nowarp seed=0 experiment_name=any_pair
block any_pair_pwl      estimator@twin_estimator=pwl pair.twin=full,nowarp seed=0 experiment_name=any_pair
block any_pair_adam     experiment=adam estimator@twin_estimator=tanh twin_estimator.k=2.5 seed=0 experiment_name=any_pair
block any_pair_literature experiment=qnet,approxsign,dsq_anneal seed=0
# The learning-rate law: warped SGD, unwarped SGD, Adam over two decades of lr.
block lr_sgd        experiment=sgd        optimizer.lr=$sgd_lrs  seed=0 experiment_name=lr_law
block lr_sgd_nowarp experiment=sgd_nowarp optimizer.lr=$sgd_lrs  seed=0 experiment_name=lr_law
block lr_adam       experiment=adam       optimizer.lr=$adam_lrs seed=0 experiment_name=lr_law
# The jitter floor at every lr of the law, so each lr gets its own verdict.
block lr_jitter      experiment=jitter      optimizer.lr=$sgd_lrs  seed=0 experiment_name=lr_law
block lr_adam_jitter experiment=adam_jitter optimizer.lr=$adam_lrs seed=0 experiment_name=lr_law
if [ "$mode" = full ]; then  # two more seeds where one seed said the claim breaks down (lr 0.0316)
  block lr_seeds     experiment=sgd,sgd_nowarp,jitter optimizer.lr=0.0316 seed=1,2 experiment_name=lr_law
fi

# The claim on a ResNet with batch norm, on real data: ResNet-18 (every convolution quantized, batch norm and the
# classifier float) on MNIST. Sized for 2 CPU cores: the ImageNet stem (a 28x28 image is 7x7 after it; the small
# stem keeps 28x28 and costs about 16x more), batch 64, 200 steps, 2,000 test images. Seeds outermost, so that a
# cut-short block still holds every comparison for its first seeds.
resnet=(model=resnet18 model.stem=imagenet dataset.batch_size=64 trainer.max_steps=200 trainer.eval_every=100
        trainer.log_every=10 dataset.test_subset=2000 trainer.progress=false)
if [[ " $BLOCKS " == *" resnet18 "* ]]; then
  saved=("${size[@]}"); size=("${resnet[@]}")
  block resnet18 seed="${RESNET_SEEDS:-0,1,2}" experiment=sgd,warp_lr,sgd_nowarp,jitter,adam experiment_name=resnet18
  BLOCKS="resnet18_adam_jitter" block resnet18_adam_jitter seed=0 experiment=adam_jitter experiment_name=resnet18
  # lr 0.01 gives no verdict (the jitter floor sits below the untrained twin); is the floor higher at a 10x smaller lr?
  BLOCKS="resnet18_lr" block resnet18_lr seed=0 optimizer.lr=0.001 experiment=sgd,warp_lr,sgd_nowarp,jitter \
    experiment_name=resnet18
  size=("${saved[@]}")
fi

# The optimizer atlas: every registered optimizer at a learning rate typical for it (its YAML's lr) and at 3x
# that, against the twin its rule predicts, the other rule's twin (plain STE for the linear updates, the warped
# STE for the adaptive and sign-based ones), the jitter floor; the untrained twin comes with every run.
# 3 seeds at the typical lr, 1 at 3x. Sized for 2 CPU cores: 40 steps, 2,000 test images, in both modes.
atlas=(trainer.max_steps=40 trainer.eval_every=40 trainer.log_every=5 dataset.test_subset=2000 trainer.progress=false)
atlas_seeds=${ATLAS_SEEDS:-0,1,2}
atlas_block() {  # atlas_block NAME OPTIMIZER RULE LR [OVERRIDES...]: the typical lr (all seeds) and 3x (seed 0)
  local name=$1 opt=$2 rule=$3 lr=$4; shift 4
  local other=warped; [ "$rule" = warp ] && other=sgd_nowarp
  local lr3; lr3=$(python3 -c "print(f'{3 * $lr:g}')")
  local saved=("${size[@]}"); size=("${atlas[@]}")
  block "$name" optimizer="$opt" optimizer.lr="$lr" experiment=predicted,$other,jitter \
    seed="$atlas_seeds" experiment_name=optimizers "$@"
  block "${name}_3x" optimizer="$opt" optimizer.lr="$lr3" experiment=predicted,$other,jitter \
    seed=0 experiment_name=optimizers "$@"
  size=("${saved[@]}")
}
yaml_lr() { python3 -c "import re,sys; print(re.search(r'^lr: *([0-9.e+-]+)', open(sys.argv[1]).read(), re.M)[1])" "configs/optimizer/$1.yaml"; }
if [[ " $BLOCKS " == *" optimizers "* ]]; then
  blocks_asked=$BLOCKS
  # every registered optimizer with its twin rule (qatrun/optim.py), at its YAML's lr
  while read -r opt rule; do
    BLOCKS="opt_$opt opt_${opt}_3x" atlas_block "opt_$opt" "$opt" "$rule" "$(yaml_lr "$opt")"
  done < <("$QATRUN_PY" -c "from qatrun.optim import OPTIMIZERS as O; [print(n, O.meta(n)['twin_rule']) for n in O.names()]")
  # SGD's relatives (one seed, warp rule): Nesterov at SGD's lr; no momentum at 10x it (the same step size).
  BLOCKS="opt_nesterov opt_nesterov_3x" atlas_seeds=0 atlas_block opt_nesterov sgd warp "$(yaml_lr sgd)" optimizer.nesterov=true
  BLOCKS="opt_sgd_m0 opt_sgd_m0_3x" atlas_seeds=0 atlas_block opt_sgd_m0 sgd warp 0.1 optimizer.momentum=0
  # Broken on purpose: SGD with L2 weight decay, outside the theorem: the warped twin, the plain one, the floor.
  saved=("${size[@]}"); size=("${atlas[@]}")
  BLOCKS="opt_sgd_l2" block opt_sgd_l2 optimizer=sgd optimizer.weight_decay=0.0005,0.05 \
    experiment=predicted,sgd_nowarp,jitter seed=0 experiment_name=optimizers
  size=("${saved[@]}")
  BLOCKS=$blocks_asked
fi

# The quantizer atlas: the quantizers researchers train with, each against the twin its optimizer's rule predicts,
# the other rule's twin and the jitter floor, under SGD (warp rule) and Adam (identity rule), 3 seeds at each
# optimizer's typical lr (its YAML's), sized like the optimizer atlas (40 steps, 2,000 test images). The tensor
# row is the paper's grid, run again beside the others; fixed per-channel ranges and quantized activations are
# inside the theorem, learned (lsq) and recomputed (dynamic) ranges outside it (the twin is the natural one).
QUANTIZER_SETTINGS=(
  "tensor:quantizer=tensor"
  "channel:quantizer=channel"
  "lsq:quantizer=lsq"
  "lsq_channel:quantizer=lsq quantizer.scope=channel"
  "dynamic_absmean:quantizer=dynamic quantizer.stat=absmean"
  "dynamic_maxabs:quantizer=dynamic quantizer.stat=max_abs"
  "a4_fixed:activation=fixed activation.bits=4"
  "a4_pact:activation=pact activation.bits=4"
  "a2_fixed:activation=fixed activation.bits=2"
  "a2_pact:activation=pact activation.bits=2"
  "lsq_a2:quantizer=lsq activation=fixed activation.bits=2"
)
if [[ " $BLOCKS " == *" quantizers "* ]]; then
  blocks_asked=$BLOCKS
  saved=("${size[@]}"); size=("${atlas[@]}")
  for setting in "${QUANTIZER_SETTINGS[@]}"; do
    name=${setting%%:*}; read -r -a ovs <<< "${setting#*:}"
    for opt in sgd adam; do
      other=warped; [ "$opt" = sgd ] && other=sgd_nowarp
      BLOCKS="q_${name}_$opt" block "q_${name}_$opt" optimizer=$opt experiment=predicted,$other,jitter \
        seed="${QUANTIZER_SEEDS:-0,1,2}" experiment_name=quantizers "${ovs[@]}"
    done
  done
  size=("${saved[@]}")
  BLOCKS=$blocks_asked
fi

wall=$(( $(date +%s) - start ))
OUT="$out" REPORT="$REPORT" bash "$0" report
echo "$mode suite ($BLOCKS): $wall s of training on $(nproc --all) cores ($(nproc) threads); report in $out" | tee -a "$out/WALLTIME.txt"
