#!/usr/bin/env bash
# Calls 2, 3, ... of a GPU window: resume from the archive the last call gave back (copied to
# .carry/sweep-paper.tar.gz) and train the given seeds until about a minute before the call's limit.
#   CALL_S=600 bash scripts/device/call_next.sh 0 1      # call 2: finish seed 0, start seed 1
#   CALL_S=600 bash scripts/device/call_next.sh 0 1 2    # call 3
# CALL_S: the timeout_s given to the device tool's run.
set -uo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
CALL_S=${CALL_S:-600}
[[ $CALL_S =~ ^[0-9]+$ ]] || { echo "CALL_S must be whole seconds (the run's timeout_s), got '$CALL_S'"; exit 2; }
source scripts/device/setup.sh
left=$(( CALL_S - 60 - (SECONDS - start) ))  # a minute to stop the jobs and pack the archive
if (( left < 60 )); then echo "== ${left}s left: no time for the sweep"; exit 1; fi
python3 -m rstn.cli sweep --all --profile paper --seeds "$@" --concurrency 9 --budget "${left}s" \
  --resume-from .carry/sweep-paper.tar.gz --checkpoint-every 2 --out "$OUT" --log-dir /tmp/sweep-jobs \
  2>&1 | tee "$OUT/sweep.log"
tail -n 5 /tmp/sweep-jobs/*_log.out /tmp/sweep-jobs/*_log.err > "$OUT/jobs-tail.log" 2>/dev/null
