#!/usr/bin/env bash
# The paper's ImageNet comparisons for ResNet-50 (arXiv 2405.05171), then the report.
#   bash scripts/reproduce_imagenet.sh /path/to/imagenet [NGPU] [extra overrides...]
# (make reproduce-imagenet IMAGENET=/path/to/imagenet NGPU=8). Each comparison is one torchrun job
# over NGPU processes (dataset.batch_size is global); runs go to $OUT/runs/<name>/, the report to
# $OUT (default results/imagenet). Re-running resumes each run from its checkpoint.
#   sgd       warped SGD pair: STE twin from M(w0) at lr x alpha (experiment=imagenet)
#   control   the paper's control: SGD twin without the warped initialization (lr x alpha from w0)
#   adam      Adam pair: plain STE twin, same init, same lr (experiment=imagenet_adam)
#   jitter    noise floor: the estimator against itself at lr x 1.01
set -euo pipefail
root=${1:?usage: $0 /path/to/imagenet [NGPU] [overrides...]}
ngpu=${2:-1}; shift $(( $# >= 2 ? 2 : 1 ))
extra=("$@")
out=${OUT:-results/imagenet}
PY=${PY:-.venv/bin/python}
REPORT=${REPORT:-.venv/bin/qatrun-report}
[ -d "$root/train" ] && [ -d "$root/val" ] || { echo "$0: $root must hold train/ and val/ (ImageFolder layout)" >&2; exit 2; }

declare -A comparisons=(
  [sgd]="experiment=imagenet"
  [control]="experiment=imagenet pair.twin=warp_lr"
  [adam]="experiment=imagenet_adam"
  [jitter]="experiment=imagenet pair.twin=self pair.twin_lr_scale=1.01"
)
mkdir -p "$out/runs"
start=$(date +%s)
for name in sgd control adam jitter; do
  echo "== $name: ${comparisons[$name]}"
  # shellcheck disable=SC2086
  "$PY" -m torch.distributed.run --standalone --nproc_per_node="$ngpu" -m qatrun ${comparisons[$name]} \
    dataset.root="$root" experiment_name="imagenet_$name" "${extra[@]}" hydra.run.dir="$out/runs/$name" \
    > "$out/runs/$name.log" 2>&1 || { echo "comparison $name failed, see $out/runs/$name.log" >&2; tail -5 "$out/runs/$name.log" >&2; exit 1; }
done
wall=$(( $(date +%s) - start ))
"$REPORT" "$out/runs" --out "$out"
echo "imagenet suite: $wall s on $ngpu process(es); report in $out" | tee -a "$out/WALLTIME.txt"
