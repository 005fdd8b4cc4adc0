#!/usr/bin/env bash
# GPU check, one H100/H200, with no network: every row of the issue "On a lent GPU", one table.
#
#   bash scripts/gpu_check.sh            # on the GPU machine, from anywhere (at most 8 minutes: BUDGET)
#   bash scripts/gpu_check.sh --dry-run  # on a CPU: the same rows, tiny (2 steps, a CPU bench, gloo)
#   ROWS="torchrun r50-compiled" bash scripts/gpu_check.sh   # only those rows (a second try)
#
# Rows, in this order (the cheap ones first): tests (every test with cuda in its name), mnist (the
# MNIST pair on the GPU, 100 steps, its quantized agreement within 0.002 of the same config on this
# machine's CPU, run beside it), mnist-quant (the same with quantizer=lsq and 4-bit fixed activation
# quantization), determinism (deterministic=true twice: byte-identical summary.json),
# torchrun (torchrun --nproc_per_node=1: one paired step in an NCCL group of one), small128 (the
# bench's small-CNN cases: batch 128, pair against ONE eager plain float step, target 0.8x, which
# needs CUDA graphs; and batch 600), r50-eager and r50-compiled (the bench's ResNet-50 bf16
# channels_last batch-256 pair, eager and compile=true: ms/step, images/s and peak memory; compiled
# against the compiled plain float step, target 2.1x), loader (qatrun-bench --cases loader: images/s of
# the PIL path and of the device-decode path on a generated JPEG tree, with every CPU core less one as
# workers, against what the ResNet-50 bf16 pair consumes, taken from the r50 rows' JSON when they ran,
# else measured: PASS at 1.5x). Two files come back in $OUT: table.md (kept as
# results/gpu/<gpu-name>.md), each row's figures and verdict (scripts/gpu_rows.py), and
# gpu_check_files.tar.gz, every log, summary.json and bench JSON (no checkpoints) of the working
# folder $GPU_WORK (default /tmp/gpu_check_work; the device tool brings back 8 files). Every row has a time limit, and the rows together stay under $BUDGET
# seconds (default 480: room in a 15-minute lease for a second try); a row that would start too late
# is SKIPPED. Exit 0: every row PASS or measured; 1: some row not; 2: the setup failed.
#
# What the GPU machine lacks travels in the ignored folder .gpu/ of the checkout (carry it);
# `make gpu-carry` (WHEELS=../shared/device-wheels) fills it, after the last commit:
#
#   mkdir -p .gpu/mnist
#   cp ../shared/device-wheels/*.whl .gpu/           # hydra-core, omegaconf, antlr4, setuptools, wheel
#   cp ../shared/device-wheels/mnist/*.gz .gpu/mnist/  # MNIST, 11 MB (see below)
#   git rev-parse --short HEAD > .gpu/commit          # the table names the commit (no .git travels)
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
dest=${OUT:-/tmp/gpu_check}; mkdir -p "$dest" && dest=$(cd "$dest" && pwd) || exit 2
out=${GPU_WORK:-/tmp/gpu_check_work}; rm -rf "$out" && mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 2
pack() {  # at exit, also after a failed setup: the table and one archive of the working folder in $dest
  [ -f "$out/table.md" ] && cp "$out/table.md" "$dest/table.md"
  tar -czf "$dest/gpu_check_files.tar.gz" -C "$out" --exclude=checkpoint.pt --exclude=weights_sample.pt \
    --exclude='*.lock' . 2>/dev/null
}
trap pack EXIT
t_start=$(date +%s)
line() { printf '%-28s %s\n' "$1" "$2"; }
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

commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || cat "$GPU_DIR/commit" 2>/dev/null || echo unknown)
ROWS=${ROWS:-tests mnist mnist-quant determinism torchrun small128 r50-eager r50-compiled loader}
BUDGET=${BUDGET:-480}
table="$out/table.md"
rm -f "$table"
if [ $dry = 1 ]; then
  DEV=cpu BACKEND=gloo STEPS=2 device="CPU (dry run)"
  SHORT=(trainer.log_every=1 trainer.eval_every=2 trainer.checkpoint_every=2)
  BENCH=(--compiled off --batch 8 --warmup 0 --steps 1 --rounds 1 --no-profile)
  LOADER=(--batch 8 --steps 1 --rounds 1 --workers 1)
else
  DEV=cuda BACKEND=nccl STEPS=100
  device=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
  SHORT=()
  BENCH=(--skip single --warmup 3 --steps 10 --rounds 3)
  LOADER=(--batch 256 --steps 8 --rounds 2)
fi
MNIST=(trainer.progress=false dataset.download=false trainer.max_steps=$STEPS "${SHORT[@]}")
ONE=(trainer.progress=false dataset.download=false trainer.max_steps=1 trainer.log_every=1 trainer.eval_every=1
     trainer.checkpoint_every=1)
# Every test with cuda in its name, slow or not (they are quick on a GPU); from outside the checkout.
CUDA_TESTS=(-m pytest -q -p no:cacheprovider --import-mode=append --rootdir "$repo" -c "$repo/pyproject.toml"
            --continue-on-collection-errors -k cuda "$repo/tests")
versions=$($PY -c "import torch; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}')")
{
  echo "# GPU check: ${device:-unknown device}"
  echo
  echo "\`bash scripts/gpu_check.sh$([ $dry = 1 ] && echo ' --dry-run')\` on commit $commit, $(date -u +%Y-%m-%dT%H:%MZ);"
  echo "$versions, Python $($PY -c 'import platform; print(platform.python_version())'), $(nproc) CPU threads."
  echo "Rows: $ROWS."
  echo
} > "$table"
echo "gpu: ${device:-unknown}; $versions"

want() { [[ " $ROWS " == *" $1 "* ]]; }
timed() {  # timed LIMIT LOG CMD...: CMD under a time limit cut to what the budget has left; sets rc and secs
  local limit=$1 log=$2 left=$(( BUDGET - $(date +%s) + t_start )); shift 2
  [ $left -lt $limit ] && limit=$left
  local t0=$(date +%s)
  if [ $limit -lt 15 ]; then
    echo "not started: ${left} s of the ${BUDGET} s budget left" > "$log"; rc=125
  else
    timeout -k 15 "$limit" "$@" > "$log" 2>&1; rc=$?  # qatrun stops at a step's end; KILL 15 s later
  fi
  secs=$(( $(date +%s) - t0 ))
  return $rc
}
row() { $PY "$repo/scripts/gpu_rows.py" "$table" "$@"; }  # row KIND NAME RC SECONDS LOG [ARGS...]

# The CPU references of the MNIST rows train beside the GPU rows, on a quarter of the cores each, in half the
# budget at most: the plain pair (mnist) and the pair with learned ranges and quantized inputs (mnist-quant).
QUANT=(quantizer=lsq activation=fixed activation.bits=4)
cpu_ref() {  # cpu_ref NAME OVERRIDES...: the CPU run of a row, in the background; its pid in cpu_pid[NAME]
  local name=$1; shift
  ( OMP_NUM_THREADS=$(( $(nproc) > 3 ? $(nproc) / 4 : 1 )) timeout -k 15 $(( BUDGET / 2 )) $PY -m qatrun device=cpu \
      "${MNIST[@]}" "$@" hydra.run.dir="$out/${name}_cpu" > "$out/${name}_cpu.log" 2>&1; echo $? > "$out/${name}_cpu.rc" ) &
  cpu_pid[$name]=$!
}
declare -A cpu_pid
want mnist && cpu_ref mnist
want mnist-quant && cpu_ref mnist_quant "${QUANT[@]}"

if want tests; then
  # The checkout after the install on the path: its tests/ is the package "tests" (not one an image may ship).
  timed 180 "$out/cuda_tests.log" env PYTHONPATH="$PYTHONPATH:$repo" $PY "${CUDA_TESTS[@]}"
  row tests "cuda tests" $rc $secs "$out/cuda_tests.log"
fi

mnist_row() {  # mnist_row NAME LABEL OVERRIDES...: the pair on $DEV against its CPU reference, agreement within 0.002
  local name=$1 label=$2; shift 2
  timed 120 "$out/$name.log" $PY -m qatrun device=$DEV "${MNIST[@]}" "$@" hydra.run.dir="$out/$name"
  local t0=$(date +%s) gpu_rc=$rc gpu_secs=$secs
  wait "${cpu_pid[$name]}"; local cpu_rc; cpu_rc=$(cat "$out/${name}_cpu.rc" 2>/dev/null || echo 1)
  local log="$out/$name.log"; [ $gpu_rc = 0 ] && [ $cpu_rc != 0 ] && log="$out/${name}_cpu.log" rc=$cpu_rc
  row agreement "$label $DEV vs cpu" $rc $(( gpu_secs + $(date +%s) - t0 )) "$log" \
    "$out/$name/summary.json" "$out/${name}_cpu/summary.json" 0.002
}
want mnist && mnist_row mnist "mnist pair"
want mnist-quant && mnist_row mnist_quant "mnist pair, lsq + 4-bit inputs" "${QUANT[@]}"

if want determinism; then  # the two runs side by side on one device: deterministic all the same
  t0=$(date +%s)
  timed 120 "$out/determinism_b.log" $PY -m qatrun device=$DEV deterministic=true "${MNIST[@]}" \
    hydra.run.dir="$out/determinism_b" &
  timed 120 "$out/determinism_a.log" $PY -m qatrun device=$DEV deterministic=true "${MNIST[@]}" \
    hydra.run.dir="$out/determinism_a"
  rc_a=$rc; wait $!; rc=$?; [ $rc_a != 0 ] && rc=$rc_a
  row identical "deterministic=true twice" $rc $(( $(date +%s) - t0 )) "$out/determinism_a.log" \
    "$out/determinism_a/summary.json" "$out/determinism_b/summary.json"
fi

if want torchrun; then
  timed 90 "$out/torchrun.log" $PY -m torch.distributed.run --nproc_per_node=1 --master_port=29533 \
    -m qatrun device=$DEV "${ONE[@]}" hydra.run.dir="$out/torchrun"
  row distributed "torchrun, 1 process" $rc $secs "$out/torchrun.log" "$out/torchrun/summary.json" $BACKEND
fi

if [ $dry = 1 ]; then  # the bench rows' code on the CPU case, eager, tiny
  if want small128; then
    timed 300 "$out/bench_dry.log" $PY -m qatrun.bench --cases cpu-small "${BENCH[@]}" --out "$out/bench_dry.json"
    row bench "bench cpu-small (dry run)" $rc $secs "$out/bench_dry.log" "$out/bench_dry.json" cpu-small
  fi
else
  if want small128; then
    timed 180 "$out/bench_small.log" $PY -m qatrun.bench --cases gpu-small128,gpu-small600 "${BENCH[@]}" \
      --out "$out/bench_small.json"
    for b in 128 600; do
      row bench "small-cnn b$b pair, compiled" $rc $secs "$out/bench_small.log" "$out/bench_small.json" gpu-small$b
    done
  fi
  if want r50-eager; then
    timed 150 "$out/bench_r50_eager.log" $PY -m qatrun.bench --cases gpu-r50-bf16 --qat-compile off --compiled off \
      "${BENCH[@]}" --out "$out/bench_r50_eager.json"
    row bench "resnet50 bf16 pair, eager" $rc $secs "$out/bench_r50_eager.log" "$out/bench_r50_eager.json" gpu-r50-bf16
  fi
  if want r50-compiled; then  # three compiles: plain, the run, its twin
    timed 300 "$out/bench_r50.log" $PY -m qatrun.bench --cases gpu-r50-bf16 "${BENCH[@]}" --out "$out/bench_r50.json"
    row bench "resnet50 bf16 pair, compile=true" $rc $secs "$out/bench_r50.log" "$out/bench_r50.json" gpu-r50-bf16
  fi
fi

if want loader; then  # the consumption from the r50 rows' JSON when one ran (compiled first), else measured
  eat=()
  for j in "$out/bench_r50.json" "$out/bench_r50_eager.json"; do
    [ -s "$j" ] && grep -q '"gpu-r50-bf16"' "$j" && { eat=(--consumption-from "$j"); break; }
  done
  timed 240 "$out/bench_loader.log" $PY -m qatrun.bench --cases loader "${LOADER[@]}" "${eat[@]}" \
    --out "$out/bench_loader.json"
  row loader "loader$([ $dry = 1 ] && echo ' (dry run)')" $rc $secs "$out/bench_loader.log" "$out/bench_loader.json"
fi

line "done" "$(elapsed); $dest/table.md and $dest/gpu_check_files.tar.gz"
$PY "$repo/scripts/gpu_rows.py" --verdicts "$table"
