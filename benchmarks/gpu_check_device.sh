#!/usr/bin/env bash
# The GPU check in one call, on a machine with a GPU and no network (the project's GPU machine:
# Python 3.12, torch, transformers, accelerate, peft, ... in its image, not this project):
#
#   bash benchmarks/gpu_check_device.sh [--tiny]
#
# from a copy of the working tree with .gpu-wheels/ in it (make gpu-wheels, on a machine with the
# package registries). Steps, each announced; a failing one is named, and what was measured is kept:
#   1. the wheels were built from this tree (benchmarks/gpu_carry.py verify)
#   2. installs .gpu-wheels/*.whl into a private folder, no index, no network; PYTHONPATH puts it first
#   3. prints the versions the check runs with (a missing package: one line names it)
#   4. benchmarks/gpu_check.py for Base and Large, the whole call within GPU_CHECK_LIMIT_S (360 s):
#      the check gets what is left as its --budget-s and decides how many timed steps fit
#   5. gpu_check_<device>.json and gpu_check_<device>.log to benchmarks/results/ and to $OUT when set
# --tiny: the same path at tiny shapes on the CPU (make gpu-device-test runs it in an image-like venv).
# Exit status: gpu_check's (0 complete, 1 a measurement failed, 2 refused, 3 out of time), 124 when
# the time limit killed it, 2 when a step before the check failed.
set -uo pipefail
cd "$(dirname "$0")/.."

TINY=()
case "${1:-}" in
  "") ;;
  --tiny) TINY=(--tiny) ;;
  *) echo "usage: bash benchmarks/gpu_check_device.sh [--tiny]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}                   # the image's python3 holds torch
WHEELS=${GPU_WHEELS:-.gpu-wheels}
LIMIT_S=${GPU_CHECK_LIMIT_S:-360}
START=$(date +%s)
SITE=$(mktemp -d "${TMPDIR:-/tmp}/aresnb-gpu-site.XXXXXX")
LOG=$(mktemp "${TMPDIR:-/tmp}/aresnb-gpu-check.XXXXXX")

say() { echo "[gpu_check_device $(( $(date +%s) - START ))s] $*"; }

run_steps() {  # runs in the pipeline's subshell: `exit` ends the steps, not the script
  local step="" rc
  next() { step="$1"; say "step $1"; }
  fail() { say "FAILED at step $step (exit $1)"; exit "$1"; }

  next "1/5: the carried wheels match this tree ($WHEELS)"
  "$PY" benchmarks/gpu_carry.py verify "$WHEELS" || fail 2

  next "2/5: install $(ls "$WHEELS"/*.whl 2>/dev/null | wc -l) wheels into $SITE (no index, no network)"
  "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --root-user-action=ignore --upgrade --target "$SITE" "$WHEELS"/*.whl || fail 2
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

  next "3/5: the versions the check runs with"
  "$PY" benchmarks/gpu_carry.py versions "$WHEELS" --site "$SITE" || fail 2
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi

  local left=$(( LIMIT_S - ($(date +%s) - START) ))
  local budget=$(( left - 30 ))  # 30 s for the last measurement's overrun, the JSON and the copies
  next "4/5: benchmarks/gpu_check.py ${TINY[*]} --budget-s $budget (stopped ${left} s from now at the latest)"
  [ "$budget" -gt 0 ] || { say "no time left for the check (GPU_CHECK_LIMIT_S=$LIMIT_S)"; fail 2; }
  timeout --kill-after=10 "$left" "$PY" benchmarks/gpu_check.py "${TINY[@]}" --budget-s "$budget"
  rc=$?
  [ "$rc" -eq 0 ] || fail "$rc"  # gpu_check printed the failing measurement above; its JSON is kept
  next "5/5: keep the JSON and the log"
}

run_steps 2>&1 | tee "$LOG"
RC=${PIPESTATUS[0]}

# Whatever step the run ended in: the JSON (whole or partial) and its log go beside each other in
# benchmarks/results/, and to $OUT; a run that never reached the check leaves its log in $OUT only.
JSON=$(sed -n 's/^gpu_check: writing \(.*\)$/\1/p' "$LOG" | head -n 1)
NAME=gpu_check_not-started
if [ -n "$JSON" ]; then NAME=$(basename "${JSON%.json}"); cp "$LOG" "${JSON%.json}.log"; fi
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  if [ -n "$JSON" ] && [ -f "$JSON" ]; then cp "$JSON" "$OUT/"; fi
  cp "$LOG" "$OUT/$NAME.log"
fi
say "exit $RC: ${JSON:-no JSON was written}${JSON:+ and its .log}${OUT:+; $OUT/ holds them}"
rm -rf "$SITE" "$LOG"
exit "$RC"
