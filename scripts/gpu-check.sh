#!/usr/bin/env bash
# GPU check: the quickstart on CUDA, `rbleak bench --device cuda` (native vs ART speed and agreement, the
# spatial bound, the training row), and a paper-scale training epoch (tomen_cnn 6 layers x width 128,
# batch 32, 3x3 and Hamming 7x7) timed on a measured fraction of Fashion-MNIST's 60k training images.
# Needs one NVIDIA GPU, the project's dependencies and Fashion-MNIST on disk; no network. Under 6 minutes
# on an H100 (the quickstart alone took 27 s there).
#
#   scripts/gpu-check.sh [--out DIR]          GPU form; writes DIR/bench-gpu.json (default results/bench)
#   scripts/gpu-check.sh --cpu [--out DIR]    reduced form on the CPU: synthetic data, tiny sizes, < 60 s on
#                                             2 cores; writes DIR/gpu-check-cpu.json (default: a temp folder)
# PYTHON selects the interpreter (default: python3).
set -euo pipefail

mode=gpu
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) mode=cpu; shift ;;
    --out) [ $# -ge 2 ] || { echo "gpu-check.sh: --out: expected a folder" >&2; exit 2; }; out="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "gpu-check.sh: $1: unknown argument; allowed: --cpu, --out DIR" >&2; exit 2 ;;
  esac
done

repo="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
if [ -z "$out" ]; then
  if [ "$mode" = gpu ]; then out="$repo/results/bench"; else out="$(mktemp -d)"; fi
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$repo"
export RBLEAK_CACHE_DIR="$work/checkpoints"  # trained fresh: the quickstart's time includes training
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
rbleak() { "$py" -m robustbench_leak.cli "$@"; }
start=$(date +%s.%N)  # GNU date

if [ "$mode" = gpu ]; then
  "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || { echo "gpu-check.sh: no CUDA device visible to torch; run with --cpu for the reduced CPU form" >&2; exit 2; }
  config=configs/quickstart.yaml
  model=cnn-7x7-hamming
  bench_args=(--device cuda --n-images 300 --n-spatial 100)
else
  config="$work/tiny.yaml"
  model=small-7x7-hamming
  bench_args=(--device cpu --n-images 8 --n-spatial 4)
  cat > "$config" <<'YAML'
name: gpu-check-cpu
description: the GPU check's reduced CPU form (synthetic data, tiny sizes)
device: cpu
seeds: [0]
datasets:
  - name: synthetic
    n_train: 128
    n_test: 48
training: {optimizer: sgd, lr: 0.1, epochs: 1, batch_size: 32, schedule: cosine}
models:
  - name: small-3x3
    arch: tomen_cnn
    options: {n_layers: 2, width: 8, kernel_size: 3, window: none}
  - name: small-7x7-hamming
    arch: tomen_cnn
    options: {n_layers: 2, width: 8, kernel_size: 7, window: hamming}
attacks:
  - clean
  - preset: deepfool
    n_samples: 8
    params: {max_iter: 10}
  - preset: spatial
    n_samples: 8
    fit_samples: 8
    params: {num_translations: 3, num_rotations: 3}
YAML
fi

echo "== quickstart ($config) on $mode"
t0=$(date +%s.%N)
rbleak run "$config" --out "$work/run" --quiet
t1=$(date +%s.%N)

echo "== rbleak bench ${bench_args[*]}"
rbleak bench --config "$config" --model "$model" "${bench_args[@]}" --out "$work/bench.json"

echo "== paper-scale training epoch"
"$py" "$repo/scripts/gpu_check.py" --mode "$mode" --run "$work/run" --bench "$work/bench.json" \
  --quickstart-seconds "$("$py" -c "print($t1 - $t0)")" --started "$start" --out "$out"
