#!/usr/bin/env bash
# Call 1 of a GPU window (10 minutes): the CUDA checks, the benchmarks, then seed 0 of all nine rows
# until about a minute before the limit, packed into $OUT/sweep-paper.tar.gz with the logs.
set -uo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
source scripts/device/setup.sh
{
  echo "== CUDA checks: the sampler against the equations (forward, backward), the models, bf16"
  python3 -m pytest -q -p no:cacheprovider tests/test_sampler.py tests/test_models.py tests/test_speed_parity.py
  echo "== parity of the speed options (20 steps each)"
  python3 scripts/device/parity.py --device cuda --rows rnn-spn-d2 ffn-spn-d1 --steps 20
  echo "== throughput per row: ours against a plain loop, then each option"
  python3 benchmarks/bench_train.py --device cuda --steps 30 --warmup 5 --repeats 1
  python3 benchmarks/bench_train.py --device cuda --steps 30 --warmup 5 --repeats 1 --tf32
  python3 benchmarks/bench_train.py --device cuda --steps 30 --warmup 5 --repeats 1 --bf16
  echo "== concurrency: jobs sharing the GPU"
  bash scripts/device/concurrency.sh rnn-spn-d4 1 3 9
} 2>&1 | tee "$OUT/checks.log"
left=$(( 540 - (SECONDS - start) ))
echo "== seed 0 of every row for ${left}s"
python3 -m rstn.cli sweep --all --profile paper --seeds 0 --concurrency 9 --budget "${left}s" \
  --checkpoint-every 5 --out "$OUT" --log-dir /tmp/sweep-jobs 2>&1 | tee "$OUT/sweep.log"
tail -n 3 /tmp/sweep-jobs/*_log.out > "$OUT/jobs-tail.log" 2>/dev/null
