#!/usr/bin/env bash
# The whole GPU window in one call: a pre-flight of at most 30 s, then the heavy rows (rnn-spn-d1,
# ffn-spn-d1, conv-net; seed 0, paper profile) concurrently on the one GPU in bf16 autocast (channels_last,
# no CUDA graphs) until 30 s before the call's limit, the archive rewritten every 60 s. What it leaves in
# $OUT (README.md beside this file): window.log, sweep-<profile>.tar.gz, window.json, jobs.log, gpu.csv.
# The exit status is the sweep's (1 when no time was left to train, 2 for a bad CALL_S).
#   CALL_S=600 bash scripts/device/window.sh    # CALL_S: the run's timeout_s (README.md: how to choose it)
# The rest can be set in the environment: ROWS, SEEDS, PROFILE, DEVICE, PRECISION (auto: the pre-flight's
# verdict; bf16 | fp32), RESULTS_DIR, MARGIN_S, PREFLIGHT_S, PREFLIGHT_ARGS, MIN_TRAIN_S, PACK_EVERY,
# CHECKPOINT_EVERY, JOBS_DIR, OUT (the device tool sets OUT).
set -uo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
CALL_S=${CALL_S:-600}
[[ $CALL_S =~ ^[0-9]+$ ]] \
  || { echo "window: CALL_S must be whole seconds (the run's timeout_s), got '$CALL_S'"; exit 2; }
read -r -a rows <<< "${ROWS:-rnn-spn-d1 ffn-spn-d1 conv-net}"
read -r -a seeds <<< "${SEEDS:-0}"
read -r -a preflight_args <<< "${PREFLIGHT_ARGS:-}"
PROFILE=${PROFILE:-paper}
DEVICE=${DEVICE:-cuda}
PRECISION=${PRECISION:-auto}
[[ $PRECISION =~ ^(auto|bf16|fp32)$ ]] \
  || { echo "window: PRECISION must be auto, bf16 or fp32, got '$PRECISION'"; exit 2; }
RESULTS_DIR=${RESULTS_DIR:-results}
MARGIN_S=${MARGIN_S:-30}  # stopping the jobs at an epoch boundary, their last files, the last archive, the report
PREFLIGHT_S=${PREFLIGHT_S:-30}
MIN_TRAIN_S=${MIN_TRAIN_S:-60}
PACK_EVERY=${PACK_EVERY:-60s}
# a heavy row's checkpoint cannot come back (81-200 MiB) and costs seconds to write: one when a run stops
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-1000}
JOBS_DIR=${JOBS_DIR:-$(mktemp -d /tmp/rstn-window-jobs.XXXXXX)}  # submitit's folder: job logs, summaries
export OUT=${OUT:-/tmp/rstn-window}
mkdir -p "$OUT" "$JOBS_DIR"
say() { echo "== [$(( SECONDS - start ))s] $*"; }  # the call's clock: where its minutes went

# The pre-flight's verdict: bf16, or fp32 when a check failed. A pre-flight cut by its time limit without
# a failure keeps bf16 (it looks for a bf16 failure; a slow start is none) and says so.
preflight() {
  local log=$JOBS_DIR/preflight.log status
  say "pre-flight (at most ${PREFLIGHT_S}s)"
  timeout -k 5 "$PREFLIGHT_S" python3 scripts/device/preflight.py --device "$DEVICE" --rows "${rows[@]}" \
    "${preflight_args[@]}" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  if grep -q "FAILED" "$log" || (( status != 0 && status != 124 && status != 137 )); then
    say "pre-flight FAILED (exit $status): the rows train in float32, not bf16"
    precision=fp32
  elif (( status != 0 )); then
    say "the pre-flight was cut at ${PREFLIGHT_S}s with no check failed: the rows train in bf16 as planned"
    precision=bf16
  else
    precision=bf16
  fi
}

# submitit's job logs, whole, then the newest lines if they outgrow what one file may bring back
job_logs() {
  local f
  for f in "$JOBS_DIR"/*_log.out "$JOBS_DIR"/*_log.err; do
    [[ -f $f ]] && { echo "==> ${f##*/} <=="; cat "$f"; }
  done | tail -c 15000000 > "$OUT/jobs.log"
}

main() {
  source scripts/device/setup.sh
  preflight
  if [[ $PRECISION != auto ]]; then
    say "PRECISION=$PRECISION: the rows train in $PRECISION (the pre-flight said $precision)"
    precision=$PRECISION
  fi
  local left=$(( CALL_S - MARGIN_S - (SECONDS - start) ))
  if (( left < MIN_TRAIN_S )); then
    say "${left}s left before the call's limit less ${MARGIN_S}s: no time to train"
    return 1
  fi
  local bf16=()
  [[ $precision == bf16 ]] && bf16=(--set bf16=true)
  say "${rows[*]} (seeds ${seeds[*]}, $PROFILE profile, $precision) at once for ${left}s"
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,memory.total,power.draw,clocks.sm --format=csv \
    -l 10 > "$OUT/gpu.csv" 2> /dev/null &
  local sampler=$!
  # The jobs stop at an epoch boundary before the budget; should one overrun it (a step longer than the
  # margin), an interrupt half a margin later still leaves the sweep time to write the archive once more.
  timeout -s INT -k 5 $(( left + MARGIN_S / 2 )) \
    python3 -m rstn.cli sweep --row "${rows[@]}" --seeds "${seeds[@]}" --profile "$PROFILE" --device "$DEVICE" \
    --concurrency $(( ${#rows[@]} * ${#seeds[@]} )) --budget "${left}s" --pack-every "$PACK_EVERY" \
    --checkpoint-every "$CHECKPOINT_EVERY" --results-dir "$RESULTS_DIR" --out "$OUT" --log-dir "$JOBS_DIR" \
    --summary "$JOBS_DIR/summaries.json" "${bf16[@]}"
  local rc=$?
  (( rc == 124 || rc == 130 )) && say "the sweep overran its budget and was interrupted"
  kill "$sampler" 2> /dev/null
  job_logs
  python3 scripts/device/report.py --results-dir "$RESULTS_DIR" --profile "$PROFILE" --rows "${rows[@]}" \
    --seeds "${seeds[@]}" --summary "$JOBS_DIR/summaries.json" --json "$OUT/window.json"
  say "window done in $(( SECONDS - start ))s of CALL_S=${CALL_S}: the sweep's exit status $rc"
  return "$rc"
}

main 2>&1 | tee "$OUT/window.log"
exit "${PIPESTATUS[0]}"
