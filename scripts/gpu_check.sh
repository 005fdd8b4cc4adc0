#!/usr/bin/env bash
# GPU check, one H100/H200 in about 6 minutes, compilation included, with no network: the CUDA tests, a
# ResNet-50 bf16 pair on synthetic data, a small-CNN MNIST pair on the GPU, and the ResNet-50 bf16
# benchmark (compiled pair vs compiled plain float). One line of figures per check; logs in $OUT.
#
#   bash scripts/gpu_check.sh            # on the GPU machine, from anywhere
#   bash scripts/gpu_check.sh --dry-run  # on a CPU: the same install and data path, a 2-step CPU pair
#
# What the GPU machine lacks travels in the ignored folder .gpu/ of the checkout (carry it):
#
#   mkdir -p .gpu/mnist
#   cp ../shared/device-wheels/*.whl .gpu/           # hydra-core, omegaconf, antlr4, setuptools, wheel
#   cp ../shared/device-wheels/mnist/*.gz .gpu/mnist/  # MNIST, 11 MB (see below)
#
# MNIST: the four idx files train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
# t10k-labels-idx1-ubyte, gzip-compressed (NAME.gz, as torchvision and yann.lecun.com ship them) or
# not, flat in .gpu/mnist/. They are unpacked into $QATRUN_DATA/mnist/MNIST/raw, the raw layout
# qatrun/data/mnist.py reads, and every run here has dataset.download=false: nothing is fetched.
#
# The checkout is installed non-editable into $QATRUN_SITE (with the carried wheels, on PYTHONPATH):
# the YAML in configs/ exists as the package qatrun.configs only in an install. Everything runs from
# a folder outside the checkout, where the source tree's qatrun/ (which has no configs/) cannot shadow
# the install; pytest imports the tests with --import-mode=append for the same reason.
set -uo pipefail
dry=0
[ "${1:-}" = "--dry-run" ] && dry=1
repo=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-python3}
GPU_DIR=${GPU_DIR:-$repo/.gpu}
SITE=${QATRUN_SITE:-/tmp/qatrun-site}
export QATRUN_DATA=${QATRUN_DATA:-/tmp/qatrun-data}
out=${OUT:-/tmp/gpu_check}; mkdir -p "$out"; out=$(cd "$out" && pwd)
t_start=$(date +%s)
line() { printf '%-28s %s\n' "$1" "$2"; }
figures() {  # the figures KEY... of the summary.json $1, on one line
  $PY - "$@" <<'PYEOF'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except OSError:
    print("no summary.json: see the run's log")
    sys.exit(0)
print(", ".join(f"{k} {s[k]:.4f}" if isinstance(s.get(k), float) else f"{k} {s.get(k)}" for k in sys.argv[2:]))
PYEOF
}
die() { echo "gpu_check: $*" >&2; exit 2; }
elapsed() { echo "$(( $(date +%s) - t_start )) s"; }

# --- the checkout and the wheels, installed (no index: nothing is downloaded) -----------------------
rm -rf "$SITE" && mkdir -p "$SITE" || die "cannot create $SITE"
shopt -s nullglob
wheels=("$GPU_DIR"/*.whl)
shopt -u nullglob
if [ ${#wheels[@]} -gt 0 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$SITE" \
    "${wheels[@]}" > "$out/install.log" 2>&1 || die "installing the wheels of $GPU_DIR failed: see $out/install.log"
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import hydra, omegaconf, setuptools" 2>/dev/null \
  || die "hydra-core, omegaconf or setuptools is missing: copy the wheels into $GPU_DIR (see the header)"
$PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --disable-pip-version-check \
  --target "$SITE" "$repo" >> "$out/install.log" 2>&1 || die "installing the checkout failed: see $out/install.log"

work=$(mktemp -d) && cd "$work" || die "no temporary folder"
where=$($PY -c "import qatrun, importlib.resources as r; print(qatrun.__file__, r.files('qatrun.configs'))") \
  || die "the installed qatrun does not import"
case "$where" in "$SITE"/*) ;; *) die "qatrun imports from ${where%% *}, not from the install in $SITE" ;; esac
$PY -m qatrun --cfg job > "$out/compose.log" 2>&1 || die "the installed qatrun cannot compose its config: $out/compose.log"
line "install" "qatrun and $((${#wheels[@]})) wheels into $SITE; config composes ($(elapsed))"

# --- MNIST from the carried files -----------------------------------------------------------------
raw="$QATRUN_DATA/mnist/MNIST/raw"
mkdir -p "$raw" || die "cannot create $raw"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [ -s "$raw/$f" ]; then continue; fi
  if [ -f "$GPU_DIR/mnist/$f.gz" ]; then
    gunzip -c "$GPU_DIR/mnist/$f.gz" > "$raw/$f.tmp" && mv "$raw/$f.tmp" "$raw/$f" || die "cannot unpack $f.gz"
  elif [ -f "$GPU_DIR/mnist/$f" ]; then
    cp "$GPU_DIR/mnist/$f" "$raw/$f" || die "cannot copy $f"
  else
    die "MNIST file $f is neither in $raw nor in $GPU_DIR/mnist (as $f or $f.gz): see the header"
  fi
done
line "mnist files" "$raw"

R50=(dataset=synthetic model=resnet50 precision=bf16 channels_last=true dataset.batch_size=256
     trainer.max_steps=100 trainer.log_every=50 trainer.eval_every=100 trainer.checkpoint_every=100
     trainer.progress=false device=cuda)
MNIST=(device=cuda trainer.progress=false dataset.download=false)
BENCH=(--cases gpu-r50-bf16 --skip single --warmup 3 --steps 10 --rounds 3)
# Every test with cuda in its name, slow or not (they are quick on a GPU); from outside the checkout.
CUDA_TESTS=(-m pytest -q -p no:cacheprovider --import-mode=append --rootdir "$repo" -c "$repo/pyproject.toml"
            --continue-on-collection-errors -k cuda "$repo/tests")

if [ $dry = 1 ]; then  # the GPU runs' configs compose; a 2-step CPU pair on the carried MNIST; the bench
  for name in R50 MNIST; do
    declare -n ov=$name
    $PY -m qatrun "${ov[@]}" --cfg job > "$out/compose_$name.log" 2>&1 || die "$name overrides do not compose: $out/compose_$name.log"
  done
  $PY -m qatrun device=cpu trainer.progress=false dataset.download=false trainer.max_steps=2 trainer.log_every=1 \
    trainer.eval_every=2 trainer.checkpoint_every=2 hydra.run.dir="$out/mnist_dry" > "$out/mnist_dry.log" 2>&1 \
    || die "the CPU pair on the carried MNIST failed: $out/mnist_dry.log"
  line "mnist cpu pair (dry run)" "$(figures "$out/mnist_dry/summary.json" steps pair/quantized_agreement)"
  $PY -m qatrun.bench --cases cpu-small --compiled off --batch 8 --warmup 0 --steps 1 --rounds 1 --no-profile --quiet \
    --out "$out/bench_dry.json" > "$out/bench_dry.log" 2>&1 || die "the bench failed: $out/bench_dry.log"
  line "bench (dry run)" "$out/bench_dry.json"
  $PY "${CUDA_TESTS[@]}" > "$out/cuda_tests_dry.log" 2>&1 || die "the cuda tests do not collect: $out/cuda_tests_dry.log"
  line "cuda tests (dry run)" "$(tail -1 "$out/cuda_tests_dry.log")"
  line "dry run done" "$(elapsed)"
  exit 0
fi

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1 | sed 's/^/gpu: /'

# Each check has a time limit, so that one that hangs cannot eat the others' minutes.
timeout 120 $PY "${CUDA_TESTS[@]}" > "$out/cuda_tests.log" 2>&1
line "cuda tests" "$(tail -1 "$out/cuda_tests.log") ($(elapsed))"

t0=$(date +%s.%N)
timeout 120 $PY -m qatrun "${R50[@]}" hydra.run.dir="$out/resnet50" > "$out/resnet50.log" 2>&1
t1=$(date +%s.%N)
line "resnet50 bf16 pair" "$($PY - "$out/resnet50/summary.json" "$t0" "$t1" <<'PYEOF'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except OSError:
    sys.exit("no summary.json: see resnet50.log")
wall = float(sys.argv[3]) - float(sys.argv[2])
print(f"{100 * 256 / wall:.0f} img/s per pair (incl. start-up), agreement {s['pair/quantized_agreement']:.4f}")
PYEOF
) ($(elapsed))"

timeout 90 $PY -m qatrun "${MNIST[@]}" hydra.run.dir="$out/mnist" > "$out/mnist.log" 2>&1
line "mnist small-cnn pair" "$(figures "$out/mnist/summary.json" pair/quantized_agreement est/test_acc) ($(elapsed))"

# One ResNet-50 case, single skipped: three compiles (plain, the run, its twin) and one cached recompile.
timeout 260 $PY -m qatrun.bench "${BENCH[@]}" --out "$out/bench.json" > "$out/bench.log" 2>&1
line "bench" "see $out/bench.log ($(elapsed))"; grep -E "PASS|FAIL|n/a |ms/step|plain|pair" "$out/bench.log" | tail -16
