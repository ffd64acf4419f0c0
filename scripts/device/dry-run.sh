#!/usr/bin/env bash
# window.sh end to end on this CPU, touching none of this checkout's results or checkpoints: the smoke
# profile, a fake nvidia-smi, and $OUT, the results, the checkpoints, the job logs and the sequence cache in
# a temporary folder, with a short CALL_S. Then it checks what $OUT holds against what a device call gives
# back (check_out.py) and the tree a call would carry against its 64 MiB, binary results set aside as
# prepare.sh sets them (travel.py, read only). Exit status 0 when the window ran and both checks hold.
#   bash scripts/device/dry-run.sh          # KEEP=1 keeps the temporary folder and says where
# It trains cheap rows in float32 (this CPU has no bf16 arithmetic: an epoch of the smallest row takes 40 s
# in bf16 autocast, a step of a heavy row a minute) after a pre-flight of the same rows in bf16; the path
# through the scripts is the window's. ROWS, CALL_S, PREFLIGHT_S, MARGIN_S, PRECISION pass through.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
venv=$root/.venv/bin
[[ -x $venv/python3 ]] || { echo "dry-run: no $venv/python3 (make install)"; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rstn-dry-run.XXXXXX")
trap '[[ -n ${KEEP:-} ]] && echo "dry-run: kept $tmp" || rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/out"
cat > "$tmp/bin/nvidia-smi" << 'EOF'
#!/usr/bin/env bash
# the dry run's stand-in: one line where window.sh and setup.sh read the GPU's name and state
echo "dry run (fake nvidia-smi): no GPU, 0 MiB"
EOF
chmod +x "$tmp/bin/nvidia-smi"
mnist=$("$venv/python3" -m rstn.cli mnist) || { echo "dry-run: no MNIST file (rstn mnist failed)"; exit 2; }

echo "== dry run of window.sh in $tmp"
# python3 is the venv's, as the device machine's python3 is the one that holds torch
ROWS=${ROWS:-rnn-spn-d4 ffn-spn-d4 ffn-spn-d3}
env PATH="$tmp/bin:$venv:$PATH" OUT="$tmp/out" CALL_S="${CALL_S:-90}" MARGIN_S="${MARGIN_S:-20}" ROWS="$ROWS" \
  PREFLIGHT_S="${PREFLIGHT_S:-60}" PREFLIGHT_ARGS="--steps 1 --batch 1" MIN_TRAIN_S=20 PACK_EVERY=15s \
  PRECISION="${PRECISION:-fp32}" PROFILE=smoke DEVICE=cpu RESULTS_DIR="$tmp/results" JOBS_DIR="$tmp/jobs" \
  RSTN_CHECKPOINT_DIR="$tmp/checkpoints" RSTN_DATA_DIR="$(dirname "$mnist")" XDG_CACHE_HOME="$tmp/cache" \
  bash scripts/device/window.sh
window=$?
echo "== window.sh exit status: $window"

runs=()
for row in $ROWS; do runs+=("smoke/$row/seed0"); done
"$venv/python3" scripts/device/check_out.py "$tmp/out" --profile smoke --runs "${runs[@]}"
out=$?
also=()
[[ -f .carry/mnist.pkl.gz ]] || also=(--also "$mnist")  # what prepare.sh copies into .carry
"$venv/python3" scripts/device/travel.py size --without-aside --carry .carry .whl "${also[@]}"
travel=$?
if (( window == 0 && out == 0 && travel == 0 )); then
  echo "dry-run: passed"
else
  echo "dry-run: FAILED (window.sh $window, check_out $out, travel $travel)"
  exit 1
fi
