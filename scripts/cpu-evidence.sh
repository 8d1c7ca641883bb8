#!/usr/bin/env bash
# Seeds of the CPU-scale Fashion-MNIST protocol (configs/paper-fashion-mnist.yaml) on this machine's CPU,
# appended to results/fashion-mnist one seed at a time, under nice, stopping cleanly before a deadline.
#
#   bash scripts/cpu-evidence.sh SECONDS SEED [SEED ...]     e.g. bash scripts/cpu-evidence.sh 5400 5 6 7 8 9
#   AUTOATTACK=1 bash scripts/cpu-evidence.sh SECONDS SEED ...
#
# Trained weights go to results/fashion-mnist/weights/ (published beside the store, keyed by train key), so
# a later session, on any machine, resumes from the committed store and weights: the same command skips
# every stored cell, reuses every stored model and continues a half-trained one from its epoch checkpoint.
# With AUTOATTACK=1, after each seed's protocol cells, that seed's AutoAttack cells
# (configs/paper-fashion-mnist-autoattack.yaml, the paper claim set's AutoAttack claim) go to
# results/fashion-mnist-autoattack, attacking the same published weights (same train keys; each cell records
# their SHA-256). `timeout` is a backstop only: rbleak stops itself at the limit (exit 75, the run stored as
# interrupted).
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: [AUTOATTACK=1] $0 SECONDS SEED [SEED ...]" >&2; exit 2; }
end=$(( $(date +%s) + $1 )); shift
RBLEAK="${RBLEAK:-rbleak}"
WEIGHTS=results/fashion-mnist/weights

run_until_end() {  # config out-folder seed [extra rbleak run flags]: exit status, 75 at the time limit
  local config=$1 out=$2 seed=$3; shift 3
  local left=$(( end - $(date +%s) ))
  [ "$left" -gt 300 ] || { echo "$(date -u +%FT%TZ) stop before $config seed $seed: $left s left"; return 75; }
  echo "$(date -u +%FT%TZ) $config seed $seed: up to $left s"
  timeout --signal=INT --kill-after=120 $(( left + 240 )) \
    nice -n 19 "$RBLEAK" run "$config" --out "$out" --seeds "$seed" --time-limit "$left" --quiet "$@"
  local rc=$?
  echo "$(date -u +%FT%TZ) $config seed $seed: exit $rc"
  return $rc
}

for seed in "$@"; do
  run_until_end configs/paper-fashion-mnist.yaml results/fashion-mnist "$seed" --publish-weights
  [ $? -eq 75 ] && break  # time limit: the same command resumes
  if [ "${AUTOATTACK:-0}" = 1 ]; then
    RBLEAK_CACHE_DIR="$WEIGHTS" run_until_end configs/paper-fashion-mnist-autoattack.yaml \
      results/fashion-mnist-autoattack "$seed"
    [ $? -eq 75 ] && break
  fi
done
