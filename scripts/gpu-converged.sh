#!/usr/bin/env bash
# The converged-scale protocol (configs/paper-fashion-mnist-gpu-scale.yaml) on one time-boxed GPU machine, in
# one call: the training bench, the config seed by seed with --time-limit, the finished seeds merged, and
# everything that must come back compressed into one folder (scripts/gpu_converged.py says what).
#
#   scripts/gpu-converged.sh --prepare
#       here, before the GPU call: downloads the Python 3.12 wheels the GPU machine lacks (pydantic and its
#       needs) and copies Fashion-MNIST's gz files into .gpu-carry/ (git-ignored through .git/info/exclude),
#       checks that the tree that travels fits 64 MiB, and prints COMMIT, DIFF_SHA and the command to run.
#   scripts/gpu-converged.sh --detach-results | --attach-results
#       here, around the GPU call when --prepare says the tree is too large: take results/ (published runs, which
#       the GPU run does not read) out of git's index and into info/exclude, so the call does not send it; and
#       put it back afterwards. The files themselves are never touched; refused while the index holds staged work.
#   scripts/gpu-converged.sh COMMIT DIFF_SHA [--time-limit 540] [--out DIR] [--no-bench]
#       on the GPU machine (carry .gpu-carry): installs the carried wheels, points RBLEAK_FASHION_MNIST at
#       the carried files, runs. DIR defaults to $OUT, else results/gpu-converged. Exit 0: every seed
#       finished; 75: the time limit came first (the shard stores that come back resume it).
#   scripts/gpu-converged.sh COMMIT DIFF_SHA --cpu [--out DIR]
#       the same stages on a tiny synthetic config on the CPU, in well under a minute (tests/test_gpu_converged.py).
# COMMIT and DIFF_SHA name what ran: the copy on the GPU machine may carry stale git metadata.
# PYTHON selects the interpreter (default: python3).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
carry="$repo/.gpu-carry"
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }

if [ "${1:-}" = "--detach-results" ] || [ "${1:-}" = "--attach-results" ]; then
  cd "$repo"
  exclude="$(git rev-parse --git-common-dir)/info/exclude"
  if [ "$1" = "--detach-results" ]; then
    if grep -qx '/results/' "$exclude" 2>/dev/null; then echo "gpu-converged.sh: results/ is detached already" >&2; exit 2; fi
    if ! git diff --cached --quiet; then
      echo "gpu-converged.sh: --detach-results: the index holds staged changes; commit or unstage them first" >&2; exit 2
    fi
    git rm -r -q --cached results
    echo '/results/' >> "$exclude"
    echo "results/ detached from the index (files untouched); after the GPU call: $0 --attach-results"
  else
    git reset -q -- results
    sed -i '\|^/results/$|d' "$exclude"
    git diff --cached --quiet -- results || { echo "gpu-converged.sh: results/ is still staged differently" >&2; exit 2; }
    echo "results/ attached again"
  fi
  exit 0
fi

if [ "${1:-}" = "--prepare" ]; then
  cd "$repo"
  exclude="$(git rev-parse --git-common-dir)/info/exclude"
  mkdir -p "$(dirname "$exclude")" "$carry/wheels" "$carry/fashion-mnist"
  grep -qx '/.gpu-carry/' "$exclude" 2>/dev/null || echo '/.gpu-carry/' >> "$exclude"
  # the versions this machine's environment uses, for CPython 3.12 on x86-64 (the GPU machine's)
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$carry/wheels" $("$py" - <<'PY'
from importlib import metadata
print(" ".join(f"{n}=={metadata.version(n)}" for n in
               ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions")))
PY
)
  src="${RBLEAK_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [ -f "$src/$f.gz" ] || { echo "gpu-converged.sh: --prepare: $src/$f.gz missing (set RBLEAK_FASHION_MNIST)" >&2; exit 2; }
    cp "$src/$f.gz" "$carry/fashion-mnist/"
  done
  "$py" - "$repo" <<'PY'
import subprocess, sys
from pathlib import Path
repo = Path(sys.argv[1])
names = subprocess.run(["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True,
                       check=True).stdout.decode().split("\0")
sizes = [(p.stat().st_size, str(p.relative_to(repo))) for n in names if n and (p := repo / n).is_file()]
sizes += [(p.stat().st_size, str(p.relative_to(repo))) for p in (repo / ".gpu-carry").rglob("*") if p.is_file()]
total = sum(s for s, _ in sizes)
print(f"what travels: {total / 2**20:.1f} MiB (limit 64 MiB), .gpu-carry included")
if total > 64 * 2**20:
    print("TOO LARGE for the GPU call; the largest files:")
    for s, n in sorted(sizes, reverse=True)[:8]:
        print(f"  {s / 2**20:8.1f} MiB  {n}")
    print("The run needs nothing under results/. To send the tree without it (index only, files untouched; do it "
          "only while nothing else commits in this checkout): before the call\n"
          "  bash scripts/gpu-converged.sh --detach-results\n"
          "and after it:\n"
          "  bash scripts/gpu-converged.sh --attach-results")
    sys.exit(3)
PY
  commit="$(git rev-parse HEAD)"
  diff_sha="$(git diff HEAD --binary | sha256sum | cut -d' ' -f1)"
  echo "COMMIT=$commit DIFF_SHA=$diff_sha (git diff HEAD; untracked files are not in it)"
  echo "GPU call: carry [\".gpu-carry\"], command: bash scripts/gpu-converged.sh $commit $diff_sha --time-limit 540"
  exit 0
fi

[ $# -ge 2 ] && [ "${1#-}" = "$1" ] && [ "${2#-}" = "$2" ] || { usage >&2; exit 2; }
commit="$1"; diff_sha="$2"; shift 2
mode=gpu; out="${OUT:-}"; limit=540; extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) mode=cpu; shift ;;
    --no-bench) extra+=(--no-bench); shift ;;
    --out) [ $# -ge 2 ] || { echo "gpu-converged.sh: --out: expected a folder" >&2; exit 2; }; out="$2"; shift 2 ;;
    --time-limit)
      [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -gt 0 ] \
        || { echo "gpu-converged.sh: --time-limit: expected a whole number of seconds > 0" >&2; exit 2; }
      limit="$2"; shift 2 ;;
    *) echo "gpu-converged.sh: $1: unknown argument; allowed: --time-limit SECONDS, --out DIR, --cpu, --no-bench" >&2
       exit 2 ;;
  esac
done
[ -n "$out" ] || out="$repo/results/gpu-converged"
if [ "$mode" = gpu ]; then
  if compgen -G "$carry/wheels/*.whl" > /dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$carry"/wheels/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  [ -d "$carry/fashion-mnist" ] && export RBLEAK_FASHION_MNIST="$carry/fashion-mnist"
  "$py" -c 'import pydantic, torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || { echo "gpu-converged.sh: needs pydantic (carried in .gpu-carry: run --prepare first) and a CUDA device" >&2
         exit 2; }
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$py" "$repo/scripts/gpu_converged.py" --commit "$commit" --diff-sha "$diff_sha" --out "$out" \
  --time-limit "$limit" --mode "$mode" "${extra[@]}"
