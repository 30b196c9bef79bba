#!/usr/bin/env bash
# make gpu-device-test: benchmarks/gpu_check_device.sh --tiny as the GPU machine would run it,
# on this CPU. Usage: bash benchmarks/gpu_device_test.sh PYTHON WHEEL_FOLDER
#
# PYTHON stands in for the image's python3 (a venv with torch and the image's packages, nothing of
# this project). What travels is copied to a scratch folder: the tracked and the untracked, not
# ignored files, and the wheel folder (its size is printed against the 64 MiB limit). The script
# then runs there with the network cut (a network namespace of its own, where unshare works) and
# pip's configuration and index off, and its JSON and log are checked: every measurement ran and
# fit, and the aresnb that ran is the carried wheel's, not the tree's.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")  # absolute, the venv link kept
WHEELS=$2
WORK=$(mktemp -d "${TMPDIR:-/tmp}/aresnb-gpu-device-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/tree" "$WORK/out"

git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf - | tar -xf - -C "$WORK/tree"
cp -r "$WHEELS" "$WORK/tree/"
echo "gpu-device-test: what travels: $(du -sm "$WORK/tree" | cut -f1) MiB (limit 64), of it $WHEELS: \
$(du -sk "$WHEELS" | awk '{printf "%.2f", $1 / 1024}') MiB (limit 40)"

NET=()
if unshare --net true 2>/dev/null; then
  NET=(unshare --net)
  echo "gpu-device-test: the device script runs in a network namespace of its own (no network)"
else
  echo "gpu-device-test: unshare --net is not permitted here: the network is not cut, only pip's index is off"
fi
started=$(date +%s)
set +e
(cd "$WORK/tree" && env -i PATH=/usr/bin:/bin HOME="$WORK" TMPDIR="$WORK" OUT="$WORK/out" PYTHON="$PY" \
  PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 OMP_NUM_THREADS=1 "${NET[@]}" bash benchmarks/gpu_check_device.sh --tiny)
rc=$?
set -e
echo "gpu-device-test: the device script exited $rc after $(( $(date +%s) - started )) s; \$OUT holds: $(ls "$WORK/out" | tr '\n' ' ')"

"$PY" - "$WORK/out" "$WORK/tree" "$rc" <<'EOF'
import json, sys
from pathlib import Path
out, tree, rc = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
json_file, log_file = out / "gpu_check_cpu-tiny.json", out / "gpu_check_cpu-tiny.log"
assert json_file.exists() and log_file.exists(), f"gpu-device-test: FAILED: $OUT holds {sorted(p.name for p in out.iterdir())}"
report = json.loads(json_file.read_text())
assert rc == 0 and report["status"] == "complete", (rc, report["status"])
ran = Path(report["code"]["aresnb"])
assert tree not in ran.parents, f"aresnb ran from the tree ({ran}), not from the carried wheel"
for name, model in report["models"].items():
    bad = [k for k, m in model["measurements"].items() if not m.get("fit")]
    assert not bad and model["projection"]["total_hours"] > 0, (name, bad)
print(f"gpu-device-test: passed: {report['status']}; aresnb from {ran}; packages {report['packages']}")
EOF
