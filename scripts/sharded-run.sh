#!/usr/bin/env bash
# Run a config seed by seed in parallel processes on one machine, then merge the shards into one store:
#   rbleak run CONFIG --seeds S --out OUT.shards/sS      (one process per seed, all at once)
#   rbleak run CONFIG --merge OUT.shards/s* --out OUT    (copies their finished cells; computes what is missing)
# For a machine where Ray is not installed (`--executor ray` is the way to use a cluster, or every core of one
# machine): on a GPU, the small CPU-scale models leave it mostly idle, and several processes fill it.
#
#   scripts/sharded-run.sh CONFIG OUT [SECONDS]
# SECONDS (optional) bounds the shards: each is interrupted (SIGINT: the run is stored as 'interrupted',
# the store stays consistent) when the time is up. If a shard did not finish, nothing is merged and the
# exit status is 1: run the same command again (on this machine, or on another with the OUT.shards folder
# carried over) and each shard resumes from its store.
# PYTHON selects the interpreter (default: python3); THREADS the torch CPU threads per process (default 2).
set -uo pipefail
[ $# -ge 2 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
config="$1"; out="$2"; limit="${3:-0}"
py="${PYTHON:-python3}"
case "$limit" in ''|*[!0-9]*) echo "sharded-run.sh: SECONDS: $limit: expected a whole number of seconds" >&2; exit 2 ;; esac
# before any work: the config must load, and OUT and OUT.shards must be folders a run may write
seeds=$("$py" - "$config" "$out" <<'PY'
import sys
from pathlib import Path
from robustbench_leak.config import load_config
from robustbench_leak.outputs import check_out_dir, mark_folder
try:
    config = load_config(sys.argv[1])
    check_out_dir(Path(sys.argv[2]), "OUT")
    shards = Path(sys.argv[2] + ".shards")
    check_out_dir(shards, "OUT.shards")
    shards.mkdir(parents=True, exist_ok=True)
    mark_folder(shards)  # ours: a rerun resumes its shards
except Exception as exc:  # one line, as rbleak prints it
    sys.exit(f"sharded-run.sh: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
print(" ".join(str(s) for s in config.run.seeds))
PY
) || exit 2
export OMP_NUM_THREADS="${THREADS:-2}" PYTHONUNBUFFERED=1
pids=()
for s in $seeds; do
  if [ "$limit" -gt 0 ]; then bound=(timeout -s INT "$limit"); else bound=(); fi
  "${bound[@]}" "$py" -m robustbench_leak.cli run "$config" --seeds "$s" --out "$out.shards/s$s" --quiet \
    > "$out.shards/s$s.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if [ $status -ne 0 ]; then
  echo "sharded-run.sh: a shard did not finish (see $out.shards/s*.log); nothing merged. Run the same command" \
    "again: each shard resumes from its store" >&2
  exit 1
fi
merge=()
for s in $seeds; do merge+=("$out.shards/s$s"); done
"$py" -m robustbench_leak.cli run "$config" --merge "${merge[@]}" --out "$out" --quiet > "$out.shards/merge.log" 2>&1 \
  || { echo "sharded-run.sh: the merge failed; see $out.shards/merge.log" >&2; exit 1; }
