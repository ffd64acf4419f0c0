#!/usr/bin/env bash
# The CUDA checks and benchmarks of call 1 (run by call1.sh after setup.sh, under a time cap).
set -uo pipefail
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
