"""Training throughput per Table 1 row: this trainer's step vs a plain PyTorch loop, on one device.

For each row, in one process on one device:
  (a) ours:  `rstn.train.train_epoch` over a device-resident split: batches gathered by index on the
             device, Lasagne RMSprop, the row's clipping, no host sync per step (plus the speed knobs given)
  (b) plain: a DataLoader over CPU tensors (shuffle, batch 100), float32, `.to(device)` per batch,
             torch.optim.RMSprop(lr 5e-4, alpha 0.9, eps 1e-6), cross-entropy, no clipping
and prints examples/s, achieved TFLOP/s and the ratio ours/plain (each the best of --repeats timings,
taken alternately). FLOPs per example are counted once
per row with torch.utils.flop_counter.FlopCounterMode over forward + backward of a batch (matmuls and
convolutions; the sampler's grid_sample is not counted, it is a small share). The last line sums the
FLOPs of one 60k-example epoch over the rows measured.

    python benchmarks/bench_train.py --device cpu --rows rnn-spn-d2 ffn-spn-d4 --steps 5
    python benchmarks/bench_train.py --flops-only --batch 20
    python benchmarks/bench_train.py --device cuda --steps 50 --bf16
    python benchmarks/bench_train.py --compare --rows rnn-spn-d4 rnn-spn-d2 --steps 10 --repeats 3

--compare times the trainer before and after the CPU speed-ups instead (see `compare`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from rstn.backends import configure_backends, tune_glibc_malloc
from rstn.experiments import ROWS
from rstn.models import build_model, count_parameters, relu_before_pool
from rstn.optim import LasagneRMSprop
from rstn.train import (
    DeviceSplit,
    TrainConfig,
    element_clip_for,
    evaluate,
    sequence_loss,
    train_epoch,
)

EPOCH_EXAMPLES = 60_000
EVAL_EXAMPLES = 20_000  # valid + test, evaluated after every epoch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def flops_per_example(row: str, batch: int, device: torch.device) -> float:
    """Forward + backward FLOPs of one training example (FlopCounterMode over one batch)."""
    torch.manual_seed(0)
    model = build_model(ROWS[row].model_config()).to(device).train()
    x = torch.rand(batch, 1, 100, 100, device=device)
    y = torch.randint(0, 10, (batch, 3), device=device)
    with FlopCounterMode(display=False) as counter:
        sequence_loss(model(x).logits, y).backward()
    return counter.get_total_flops() / batch


def make_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 257, (n, 100, 100), generator=generator).float() / 256  # the data's k/256 grid
    return images, torch.randint(0, 10, (n, 3), generator=generator)


def time_ours(row: str, images, labels, config: TrainConfig, device, warmup: int) -> float:
    """Seconds per example of `train_epoch` (after `warmup` batches)."""
    torch.manual_seed(0)
    model = build_model(ROWS[row].model_config()).to(device).train()
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if config.compile else model
    optimizer = LasagneRMSprop(model.parameters(), lr=config.lr, rho=config.rho, eps=config.eps)
    split = DeviceSplit.from_split(SimpleNamespace(images=images, labels=labels), device)
    clip = element_clip_for(config, model)
    order = torch.arange(len(split), device=device)
    n_warm = warmup * config.batch_size
    train_epoch(step_model, optimizer, split, order[:n_warm], config, clip)
    synchronize(device)
    t0 = time.perf_counter()
    loss_sum, _, _ = train_epoch(step_model, optimizer, split, order[n_warm:], config, clip)
    loss_sum.item()  # the epoch's one sync
    synchronize(device)
    return (time.perf_counter() - t0) / (len(order) - n_warm)


def time_epoch_parts(row: str, images, labels, config: TrainConfig, device, warmup: int,
                     authors_layer_order: bool = False) -> tuple[float, float]:
    """Seconds per example of training (`train_epoch`) and of evaluation (`evaluate`), for --compare.

    authors_layer_order: the model in the code's conv-ReLU-pool order (`rstn.models.relu_before_pool`),
    the trainer before the CPU speed-ups; otherwise the package's model (ReLU after the pool).
    """
    torch.manual_seed(0)
    model = build_model(ROWS[row].model_config())
    if authors_layer_order:
        model = relu_before_pool(model)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = LasagneRMSprop(model.parameters(), lr=config.lr, rho=config.rho, eps=config.eps)
    split = DeviceSplit.from_split(SimpleNamespace(images=images, labels=labels), device)
    clip = element_clip_for(config, model)
    order = torch.arange(len(split), device=device)
    n_warm = warmup * config.batch_size
    model.train()
    train_epoch(model, optimizer, split, order[:n_warm], config, clip)
    synchronize(device)
    t0 = time.perf_counter()
    train_epoch(model, optimizer, split, order[n_warm:], config, clip)[0].item()
    synchronize(device)
    train_s = (time.perf_counter() - t0) / (len(order) - n_warm)
    model.eval()
    t0 = time.perf_counter()
    evaluate(model, split, config)[0].item()
    synchronize(device)
    return train_s, (time.perf_counter() - t0) / len(split)


def compare(rows: list[str], images, labels, batch: int, device, warmup: int, repeats: int) -> None:
    """The trainer before and after the CPU speed-ups, alternately in this process: per-epoch seconds.

    before: the authors' conv-ReLU-pool layer order in channels-first memory; after: the package's
    defaults (ReLU after each max-pool, channels_last). An epoch = 60,000 training + 20,000 evaluated
    examples (valid and test), as in the paper profile.
    """
    configs = {"before": (TrainConfig(batch_size=batch, channels_last=False), True),
               "after": (TrainConfig(batch_size=batch), False)}
    print(f"{'row':<11} {'':>6} {'train ex/s':>10} {'eval ex/s':>10} {'epoch s':>8}")
    for row in rows:
        best = {name: (float("inf"), float("inf")) for name in configs}
        for _ in range(repeats):  # alternate, keep the best: robust to a shared, noisy machine
            for name, (config, authors) in configs.items():
                train_s, eval_s = time_epoch_parts(row, images, labels, config, device, warmup, authors)
                best[name] = (min(best[name][0], train_s), min(best[name][1], eval_s))
        epoch = {name: EPOCH_EXAMPLES * t + EVAL_EXAMPLES * e for name, (t, e) in best.items()}
        for name, (t, e) in best.items():
            print(f"{row:<11} {name:>6} {1 / t:>10.1f} {1 / e:>10.1f} {epoch[name]:>8.1f}")
        print(f"{row:<11} {'ratio':>6} {best['before'][0] / best['after'][0]:>10.2f} "
              f"{best['before'][1] / best['after'][1]:>10.2f} {epoch['before'] / epoch['after']:>8.2f}",
              flush=True)


def time_plain(row: str, images, labels, batch: int, device, warmup: int) -> float:
    """Seconds per example of a textbook loop: DataLoader over CPU tensors, torch RMSprop."""
    torch.manual_seed(0)
    model = build_model(ROWS[row].model_config()).to(device).train()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=5e-4, alpha=0.9, eps=1e-6)

    def run(loader) -> int:
        seen = 0
        for x, y in loader:
            x, y = x.unsqueeze(1).to(device), y.to(device)
            loss = F.cross_entropy(model(x).logits.reshape(-1, 10), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(x)
        return seen

    n_warm = warmup * batch
    run(DataLoader(TensorDataset(images[:n_warm], labels[:n_warm]), batch_size=batch))
    synchronize(device)
    t0 = time.perf_counter()
    seen = run(DataLoader(TensorDataset(images[n_warm:], labels[n_warm:]), batch_size=batch, shuffle=True,
                          drop_last=True))
    synchronize(device)
    return (time.perf_counter() - t0) / seen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="ROW")
    parser.add_argument("--steps", type=int, default=None, help="timed batches per row (default 50 cuda, 5 cpu)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed batches first (default 10 cuda, 1 cpu)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2,
                        help="time ours and plain alternately this many times and keep each one's best (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--bf16", action="store_true", help="ours: bf16 autocast")
    parser.add_argument("--channels-last", action="store_true", help="ours: channels_last")
    parser.add_argument("--compile", action="store_true", help="ours: torch.compile")
    parser.add_argument("--tf32", action="store_true", help="both: TF32 matmuls/convolutions (CUDA)")
    parser.add_argument("--flops-only", action="store_true", help="only count FLOPs per example (no timing)")
    parser.add_argument("--compare", action="store_true",
                        help="the trainer before/after the CPU speed-ups (layer order, channels_last), train + eval")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="CPU: keep glibc's default malloc (the trainer tunes it; here it applies to both loops)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    steps = args.steps or (50 if cuda else 5)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig(batch_size=args.batch, bf16=args.bf16, channels_last=args.channels_last,
                         compile=args.compile, tf32=args.tf32)
    if not cuda and not args.no_malloc_tuning:
        tune_glibc_malloc()
    backends = configure_backends(config.tf32, config.cudnn_benchmark)
    name = torch.cuda.get_device_name(device) if cuda else cpu_name()
    print(f"# {dt.date.today()}  device {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, batch {args.batch}, {steps} timed steps after {warmup}, "
          f"best of {args.repeats}")
    if not args.compare:
        print(f"# ours: bf16={args.bf16} channels_last={args.channels_last} compile={args.compile}; "
              f"backends {backends}")
    if args.flops_only:
        total = 0.0
        for row in args.rows:
            flops = flops_per_example(row, args.batch, device)
            total += flops
            print(f"{row:<11} {flops / 1e9:>7.3f} GFLOP/example  {flops * EPOCH_EXAMPLES / 1e12:>6.1f} TFLOP/epoch")
        print(f"# one {EPOCH_EXAMPLES}-example epoch of the {len(args.rows)} row(s), forward + backward: "
              f"{total * EPOCH_EXAMPLES / 1e12:.1f} TFLOP")
        return
    images, labels = make_data((steps + warmup) * args.batch)
    if args.compare:
        compare(args.rows, images, labels, args.batch, device, warmup, args.repeats)
        return
    header = (f"{'row':<11} {'params':>7} {'GFLOP/ex':>9} {'ours ex/s':>10} {'TFLOP/s':>8} "
              f"{'plain ex/s':>11} {'TFLOP/s':>8} {'ours/plain':>10}")
    print(header)
    total_flops = 0.0
    for row in args.rows:
        flops = flops_per_example(row, args.batch, device)
        total_flops += flops
        params = count_parameters(build_model(ROWS[row].model_config()))
        ours, plain = float("inf"), float("inf")
        for _ in range(args.repeats):  # alternate, keep the best: robust to a shared, noisy machine
            ours = min(ours, time_ours(row, images, labels, config, device, warmup))
            plain = min(plain, time_plain(row, images, labels, args.batch, device, warmup))
        print(f"{row:<11} {params / 1e6:>6.2f}M {flops / 1e9:>9.3f} {1 / ours:>10.1f} {flops / ours / 1e12:>8.4f} "
              f"{1 / plain:>11.1f} {flops / plain / 1e12:>8.4f} {plain / ours:>10.2f}", flush=True)
    print(f"# one {EPOCH_EXAMPLES}-example epoch of the {len(args.rows)} row(s) above, forward + backward: "
          f"{total_flops * EPOCH_EXAMPLES / 1e12:.1f} TFLOP")


if __name__ == "__main__":
    main()
