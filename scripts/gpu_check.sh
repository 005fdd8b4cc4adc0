#!/usr/bin/env bash
# GPU check (about 5 minutes on one H100/H200): CUDA tests, a ResNet-50 bf16 pair on synthetic
# data, a small-CNN MNIST pair on the GPU, and the benchmark. One line of figures per check.
# On a machine without Hydra, carry the wheels first (see ../shared/device-wheels/README.md).
set -uo pipefail
PY=${PY:-python3}
export QATRUN_DATA=${QATRUN_DATA:-/tmp/qatrun-data}
out=${OUT:-/tmp/gpu_check}; mkdir -p "$out"
line() { printf '%-28s %s\n' "$1" "$2"; }

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1 | sed 's/^/gpu: /'

$PY -m pytest -q -m "not slow" tests -k "cuda" > "$out/cuda_tests.log" 2>&1
line "cuda tests" "$(tail -1 "$out/cuda_tests.log")"

t0=$(date +%s.%N)
$PY -m qatrun dataset=synthetic model=resnet50 precision=bf16 channels_last=true dataset.batch_size=256 \
  trainer.max_steps=300 trainer.log_every=50 trainer.eval_every=300 trainer.checkpoint_every=300 \
  trainer.progress=false device=cuda hydra.run.dir="$out/resnet50" > "$out/resnet50.log" 2>&1
t1=$(date +%s.%N)
line "resnet50 bf16 pair" "$($PY - "$out/resnet50/summary.json" "$t0" "$t1" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1])); wall = float(sys.argv[3]) - float(sys.argv[2])
print(f"{300 * 256 / wall:.0f} img/s per pair (incl. start-up), agreement {s['pair/quantized_agreement']:.4f}")
PYEOF
)"

$PY -m qatrun device=cuda trainer.progress=false hydra.run.dir="$out/mnist" > "$out/mnist.log" 2>&1
line "mnist small-cnn pair" "$(grep -E 'quantized_agreement|est/test_acc' "$out/mnist.log" | tr -s ' ' | tr '\n' ' ')"

$PY -m qatrun.bench --out "$out/bench.json" > "$out/bench.log" 2>&1
line "bench" "see $out/bench.log"; tail -20 "$out/bench.log"
