#!/usr/bin/env bash
# Regenerate every experiment's CSV, PNG and markdown table.
#
#   bash experiments/run_all.sh small [OUT_DIR]   # this 2-core CPU: about 30 minutes in all
#   bash experiments/run_all.sh full  [OUT_DIR]   # preset budgets, real devices: meant for a GPU/TPU host
#
# OUT_DIR defaults to experiments/results. PYTHON overrides the interpreter (default .venv/bin/python).
# Each script can also be run on its own; see its --help and docs/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."

budget="${1:-small}"
out="${2:-experiments/results}"
py="${PYTHON:-.venv/bin/python}"
case "$budget" in
  small)
    bench=(--total-timesteps 200000 --repeats 2)
    scaling=(--budget-scale 1)
    ;;
  full)
    bench=(--total-timesteps 5000000 --repeats 3)
    scaling=(--budget-scale 10 --fake-cpu-devices 0 --envs 4 16 64 256 1024 4096 16384)
    ;;
  *)
    echo "usage: bash experiments/run_all.sh small|full [OUT_DIR]" >&2
    exit 2
    ;;
esac
mkdir -p "$out"

run() {
  echo "== $*" >&2
  local start=$SECONDS
  "$py" "$@"
  echo "== done in $((SECONDS - start)) s: $1" >&2
}

run experiments/benchmark.py "${bench[@]}" --out "$out/benchmark.csv"          # training speed
run experiments/convergence.py --budget "$budget" --out-dir "$out"             # convergence speed
run experiments/stability.py --budget "$budget" --out-dir "$out"               # stability over 16 seeds
run experiments/scaling.py "${scaling[@]}" --out-dir "$out"                    # steps/s vs envs and devices
run experiments/scaling_runs.py --budget "$budget" --out-dir "$out"            # vs seeds; time to target vs envs
run experiments/returns_table.py --budget "$budget" --out "$out"               # final returns vs gymnax references
run experiments/pendulum_ceiling.py --out "$out"                               # best expected Pendulum return (DP)
echo "all results in $out" >&2
