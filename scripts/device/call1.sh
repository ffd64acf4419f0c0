#!/usr/bin/env bash
# Call 1 of a GPU window: the CUDA checks, the benchmarks, then seed 0 of all nine rows until about a
# minute before the call's limit, packed into $OUT/sweep-paper.tar.gz with the logs.
#   CALL_S=600 bash scripts/device/call1.sh    # CALL_S: the timeout_s given to the device tool's run
set -uo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
CALL_S=${CALL_S:-600}
[[ $CALL_S =~ ^[0-9]+$ ]] || { echo "CALL_S must be whole seconds (the run's timeout_s), got '$CALL_S'"; exit 2; }
source scripts/device/setup.sh
# the checks get at most half the call: what they leave unfinished is cut, and the training goes on
timeout -k 10 "$(( CALL_S / 2 ))" bash scripts/device/checks.sh 2>&1 | tee "$OUT/checks.log"
(( PIPESTATUS[0] == 124 )) && echo "== the checks were cut at $(( CALL_S / 2 ))s" | tee -a "$OUT/checks.log"
left=$(( CALL_S - 60 - (SECONDS - start) ))  # a minute to stop the jobs and pack the archive
if (( left < 60 )); then echo "== ${left}s left: no time for the sweep"; exit 1; fi
echo "== seed 0 of every row for ${left}s"
python3 -m rstn.cli sweep --all --profile paper --seeds 0 --concurrency 9 --budget "${left}s" \
  --checkpoint-every 2 --out "$OUT" --log-dir /tmp/sweep-jobs 2>&1 | tee "$OUT/sweep.log"
tail -n 5 /tmp/sweep-jobs/*_log.out /tmp/sweep-jobs/*_log.err > "$OUT/jobs-tail.log" 2>/dev/null
