#!/usr/bin/env bash
# Seeds of the CPU-scale Fashion-MNIST protocol (configs/paper-fashion-mnist.yaml) on this machine's CPU,
# appended to results/fashion-mnist one seed at a time, under nice, stopping cleanly before a deadline.
#
#   bash scripts/cpu-evidence.sh SECONDS SEED [SEED ...]     e.g. bash scripts/cpu-evidence.sh 5400 5 6 7 8 9
#
# Trained weights go to results/fashion-mnist/weights/ (published beside the store, keyed by train key), so
# a later session, on any machine, resumes from the committed store and weights: the same command skips
# every stored cell, reuses every stored model and continues a half-trained one from its epoch checkpoint.
# `timeout` is a backstop only: rbleak stops itself at the limit (exit 75, the run stored as interrupted).
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 SECONDS SEED [SEED ...]" >&2; exit 2; }
end=$(( $(date +%s) + $1 )); shift
RBLEAK="${RBLEAK:-rbleak}"
for seed in "$@"; do
  left=$(( end - $(date +%s) ))
  [ "$left" -gt 300 ] || { echo "$(date -u +%FT%TZ) stop before seed $seed: $left s left"; break; }
  echo "$(date -u +%FT%TZ) seed $seed: up to $left s"
  timeout --signal=INT --kill-after=120 $(( left + 240 )) \
    nice -n 19 "$RBLEAK" run configs/paper-fashion-mnist.yaml --out results/fashion-mnist --seeds "$seed" \
      --publish-weights --time-limit "$left" --quiet
  rc=$?
  echo "$(date -u +%FT%TZ) seed $seed: exit $rc"
  [ "$rc" -eq 75 ] && break  # time limit: the same command resumes
done
