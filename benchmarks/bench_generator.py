"""Time the vectorised sequence generator against a straightforward per-image loop, side by side.

The loop is the reference implementation: it follows the authors' ``create_mnist_sequence.py`` line by
line (one image at a time, slices, the same clamping ``if``s), fed with the same pre-drawn random arrays
as ``rstn.data.render``, so the two must agree bit for bit (``tests/test_data.py`` checks that).

    RSTN_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_generator.py
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from rstn.data import (SPLITS, SequenceConfig, SequenceSplit, boxes_from_positions, build_pool,
                       digit_positions, draw_pool, draw_split, generate_sequences, render, seed_streams)
from rstn.mnist import load_mnist


def reference_pool(config: SequenceConfig, source_digits: np.ndarray, draws) -> np.ndarray:
    """The code's pool loop: ``digit[rand_y:rand_y + 9, rand_x:rand_x + 9]`` per patch. (P, k, k)."""
    k = config.clutter_size
    patches = []
    for src, x, y in zip(draws.source, draws.x, draws.y):
        patches.append(source_digits[src][y:y + k, x:x + k])
    return np.stack(patches) if patches else np.zeros((0, k, k), np.float32)


def reference_image(config: SequenceConfig, digits: np.ndarray, pool: np.ndarray, draws,
                    n: int) -> np.ndarray:
    """Image ``n`` of ``draws``, as the code's ``create_sample`` and ``add_distortions`` make it. (S, S)."""
    s, a = config.canvas_size, 28
    output = np.zeros((s, s), np.float32)
    for i in range(config.n_digits):
        digit = digits[draws.digit_index[n, i]]
        x_start = i * a + draws.x_offset[n, i]
        y_start = draws.y0[n] + i * draws.slope[n]
        y_end = y_start + a
        if y_end > s - 1:
            m = s - y_end
            y_end += m
            y_start += m
        if y_start < 0:
            m = y_start
            y_end -= m
            y_start -= m
        output[y_start:y_end, x_start:x_start + a] = digit
    if config.n_clutter > 0:
        k = config.clutter_size
        canvas = np.zeros_like(output)
        for j in range(config.n_clutter):
            x, y = draws.clutter_x[n, j], draws.clutter_y[n, j]
            canvas[y:y + k, x:x + k] = pool[draws.clutter_index[n, j]]
        canvas += output
        output = np.clip(canvas, 0, 1)
    return output


def reference_generate(config: SequenceConfig = SequenceConfig(), seed: int = 0,
                       data_dir=None) -> dict[str, SequenceSplit]:
    """``rstn.data.generate_sequences`` with the pool and every image made by the loops above."""
    mnist = load_mnist(data_dir)
    rngs = seed_streams(seed)
    sources = np.concatenate([mnist[name][0] for name in config.clutter_sources])
    pool = reference_pool(config, sources, draw_pool(config, len(sources), rngs["pool"]))
    out = {}
    for split in SPLITS:
        digits, labels = mnist[split]
        n = config.split_size(split)
        draws = draw_split(config, n, len(digits), rngs[split])
        images = np.zeros((n, config.canvas_size, config.canvas_size), np.float32)
        for i in range(n):
            images[i] = reference_image(config, digits, pool, draws, i)
        x, y = digit_positions(config, draws)
        out[split] = SequenceSplit(images, labels[draws.digit_index], boxes_from_positions(x, y),
                                   draws.digit_index)
    return out


def _cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def _time(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        del result  # free the 3.2 GB before the next run
    return times


def _render_all(config: SequenceConfig, seed: int):
    """The pool and every split's draws, made once, for timing the rendering alone."""
    mnist = load_mnist()
    rngs = seed_streams(seed)
    sources = np.concatenate([mnist[name][0] for name in config.clutter_sources])
    pool = build_pool(config, sources, draw_pool(config, len(sources), rngs["pool"]))
    jobs = [(mnist[s][0], draw_split(config, config.split_size(s), len(mnist[s][0]), rngs[s]))
            for s in SPLITS]
    return pool, jobs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = SequenceConfig()
    load_mnist()  # read and verify once, outside the timings
    n = config.n_train + config.n_valid + config.n_test
    shape = (n, config.canvas_size, config.canvas_size)
    rows = {}
    # The floor under both: the output alone is 3.2 GB of float32 that must be faulted in and written.
    rows["allocate + fill output"] = _time(lambda: np.zeros(shape, np.float32).fill(0.5), args.repeat)
    rows["vectorised, end to end"] = _time(lambda: generate_sequences(config, args.seed), args.repeat)
    rows["loop, end to end"] = _time(lambda: reference_generate(config, args.seed), args.repeat)

    # The rendering alone, into an output buffer that is already faulted in.
    pool, jobs = _render_all(config, args.seed)
    buffer = np.ones(shape, np.float32)

    def vectorised() -> None:
        start = 0
        for digits, draws in jobs:
            render(config, digits, pool, draws, out=buffer[start:start + len(draws)])
            start += len(draws)

    def loop() -> None:
        start = 0
        for digits, draws in jobs:
            for i in range(len(draws)):
                buffer[start + i] = reference_image(config, digits, pool, draws, i)
            start += len(draws)

    rows["vectorised, render only"] = _time(vectorised, args.repeat)
    rows["loop, render only"] = _time(loop, args.repeat)
    del buffer

    small = dataclasses.replace(config, n_train=200, n_valid=50, n_test=50)
    a, b = generate_sequences(small, args.seed), reference_generate(small, args.seed)
    same = all(np.array_equal(a[s].images, b[s].images) for s in SPLITS)
    print(f"machine: {_cpu()}; numpy {np.__version__}")
    print(f"{n} images of {config.canvas_size}x{config.canvas_size} (train/valid/test "
          f"{config.n_train}/{config.n_valid}/{config.n_test}), seed {args.seed}, {args.repeat} runs each")
    print(f"{'what':<26}{'median s':>10}   runs (s)")
    median = {name: statistics.median(times) for name, times in rows.items()}
    for name, times in rows.items():
        print(f"{name:<26}{median[name]:>10.2f}   " + " ".join(f"{t:.2f}" for t in times))
    print(f"speed-up of the vectorised generator: end to end "
          f"{median['loop, end to end'] / median['vectorised, end to end']:.1f}x, render only "
          f"{median['loop, render only'] / median['vectorised, render only']:.1f}x; "
          f"identical output on a 300-image check: {same}")


if __name__ == "__main__":
    main()
