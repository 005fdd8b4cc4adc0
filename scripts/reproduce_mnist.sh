#!/usr/bin/env bash
# Reproduce the paper's MNIST comparisons (and the variations past it), then draw the report.
#   bash scripts/reproduce_mnist.sh full|quick [extra overrides, e.g. device=cuda]
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
  *) echo "usage: $0 full|quick [overrides]" >&2; exit 2 ;;
esac
all_blocks="sgd adam jitter adam_jitter sgd_nowarp warp_lr ablation outside bits scaledown long any_pair_tanh25 any_pair_cosine any_pair_pwl any_pair_adam any_pair_literature lr_sgd lr_sgd_nowarp lr_adam lr_jitter lr_adam_jitter lr_seeds"
BLOCKS=${BLOCKS:-$all_blocks}

runs=$out/runs
mkdir -p "$runs"
start=$(date +%s)
block() {  # block NAME OVERRIDES...: one multirun into runs/NAME (re-running resumes finished jobs)
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

wall=$(( $(date +%s) - start ))
"$REPORT" "$runs" --out "$out" --drift experiment_name=long
echo "$mode suite ($BLOCKS): $wall s of training on $(nproc) cores; report in $out" | tee -a "$out/WALLTIME.txt"
