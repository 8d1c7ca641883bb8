#!/usr/bin/env bash
# Run a config seed by seed in parallel processes on one machine, then merge the shards into one store:
#   rbleak run CONFIG --seeds S --out OUT.shards/sS      (one process per seed, all at once)
#   rbleak run CONFIG --merge OUT.shards/s* --out OUT    (copies their finished cells; computes what is missing)
# For a machine where Ray is not installed (`--executor ray` is the way to use a cluster, or every core of one
# machine): on a GPU, the small CPU-scale models leave it mostly idle, and several processes fill it.
#
#   scripts/sharded-run.sh CONFIG OUT [SECONDS]
# SECONDS (optional) bounds the shards: each is interrupted (SIGINT: the run is stored as 'interrupted',
# the store stays consistent) when the time is up, and the merge then only copies what finished.
# PYTHON selects the interpreter (default: python3); THREADS the torch CPU threads per process (default 2).
set -uo pipefail
[ $# -ge 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
config="$1"; out="$2"; limit="${3:-0}"
py="${PYTHON:-python3}"
seeds=$("$py" -c 'import sys, yaml; print(" ".join(str(s) for s in yaml.safe_load(open(sys.argv[1]))["seeds"]))' \
  "$config") || { echo "sharded-run.sh: $config: cannot read its seeds" >&2; exit 2; }
export OMP_NUM_THREADS="${THREADS:-2}" PYTHONUNBUFFERED=1
mkdir -p "$out.shards"
pids=()
for s in $seeds; do
  if [ "$limit" -gt 0 ]; then bound=(timeout -s INT "$limit"); else bound=(); fi
  "${bound[@]}" "$py" -m robustbench_leak.cli run "$config" --seeds "$s" --out "$out.shards/s$s" --quiet \
    > "$out.shards/s$s.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
[ $status -eq 0 ] || echo "sharded-run.sh: a shard did not finish; see $out.shards/s*.log" >&2
merge=()
for s in $seeds; do [ -f "$out.shards/s$s/results.sqlite" ] && merge+=("$out.shards/s$s"); done
[ ${#merge[@]} -gt 0 ] || { echo "sharded-run.sh: no shard wrote a store" >&2; exit 1; }
if [ $status -eq 0 ]; then bound=(); else bound=(timeout -s INT 60); fi  # unfinished: merge, don't compute
"${bound[@]}" "$py" -m robustbench_leak.cli run "$config" --merge "${merge[@]}" --out "$out" --quiet \
  > "$out.shards/merge.log" 2>&1 || status=1
exit $status
