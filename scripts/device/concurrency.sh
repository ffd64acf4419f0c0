#!/usr/bin/env bash
# Throughput of N training processes sharing one GPU: N copies of bench_train.py on one row at once,
# their examples/s summed. Usage: concurrency.sh ROW N [N ...]
set -uo pipefail
row=$1; shift
for n in "$@"; do
  dir=$(mktemp -d)
  for i in $(seq "$n"); do
    python3 benchmarks/bench_train.py --device cuda --rows "$row" --steps 50 --warmup 10 --repeats 1 \
      > "$dir/$i.txt" 2>&1 &
  done
  wait
  awk -v n="$n" -v row="$row" '$1 == row {ours += $4; plain += $6}
    END {printf "concurrency %d  %s  ours %.0f ex/s in total  plain %.0f ex/s in total\n", n, row, ours, plain}' \
    "$dir"/*.txt
done
