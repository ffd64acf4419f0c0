"""Where a run executes: the device, its numeric settings (TF32, cuDNN autotuning) and CPU memory tuning.

Everything here is process-wide state that changes speed, and sometimes float rounding, but not the
protocol; `backend_settings()` is what a run records of it in run.json.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path

import torch

_GLIBC_MALLOC_TUNED = False
_THREAD_SHARE: Callable[[], tuple[int, int]] | None = None  # see share_threads


def _new_precision_api() -> bool:
    """torch >= 2.9 has per-backend `fp32_precision`; mixing it with the legacy flags raises."""
    return hasattr(torch.backends.cuda.matmul, "fp32_precision")


def configure_backends(tf32: bool = False, cudnn_benchmark: bool = True) -> dict:
    """Set TF32 and cuDNN autotuning explicitly and return `backend_settings()`.

    PyTorch's own default enables TF32 for cuDNN convolutions; Theano computed in float32, so the
    default here is off.
    """
    precision = "tf32" if tf32 else "ieee"
    backends = torch.backends
    if _new_precision_api():
        backends.cuda.matmul.fp32_precision = precision
        backends.cudnn.conv.fp32_precision = precision
        backends.cudnn.rnn.fp32_precision = precision
    else:
        backends.cuda.matmul.allow_tf32 = tf32
        backends.cudnn.allow_tf32 = tf32
    backends.cudnn.benchmark = cudnn_benchmark
    return backend_settings()


def backend_settings() -> dict:
    """The numeric settings in effect, for run.json.

    Under the new API only the new getters are read: `torch.get_float32_matmul_precision()` raises
    once a per-backend `fp32_precision` has been set ("mix of the legacy and new APIs").
    """
    backends = torch.backends
    if _new_precision_api():
        precision = {"cuda_matmul_fp32_precision": backends.cuda.matmul.fp32_precision,
                     "cudnn_conv_fp32_precision": backends.cudnn.conv.fp32_precision,
                     "cudnn_rnn_fp32_precision": backends.cudnn.rnn.fp32_precision}
    else:
        precision = {"cuda_matmul_allow_tf32": backends.cuda.matmul.allow_tf32,
                     "cudnn_allow_tf32": backends.cudnn.allow_tf32,
                     "float32_matmul_precision": torch.get_float32_matmul_precision()}
    return precision | {"cudnn_benchmark": backends.cudnn.benchmark, "num_threads": torch.get_num_threads(),
                        "glibc_malloc_tuned": _GLIBC_MALLOC_TUNED}


def tune_glibc_malloc() -> bool:
    """Let glibc keep freed memory instead of returning it to the OS after every step (CPU speed only).

    A CPU training step allocates and frees activation buffers of up to hundreds of MB. glibc serves
    blocks above its mmap threshold with fresh mmaps and trims the heap top on free, so every step faults
    the same memory back in: on the 2-core development VM half the time was spent in the kernel. Raising
    the mmap and trim thresholds and the top pad (mallopt, once per process) made a conv-net CPU epoch
    1.8x faster with identical results; the process keeps its peak memory. No-op off glibc.
    """
    global _GLIBC_MALLOC_TUNED
    if _GLIBC_MALLOC_TUNED:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # <malloc.h>
        ok = all([libc.mallopt(m_mmap_threshold, 1 << 30), libc.mallopt(m_trim_threshold, 2**31 - 1),
                  libc.mallopt(m_top_pad, 1 << 30)])
    except (OSError, AttributeError):
        return False
    _GLIBC_MALLOC_TUNED = bool(ok)
    return _GLIBC_MALLOC_TUNED


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device`, or CUDA when available and None was given; a clear error when CUDA is asked for but absent."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch.cuda.is_available() is False; use --device cpu")
    return device


def share_threads(share: Callable[[], tuple[int, int]] | None) -> None:
    """Have `fit` take its CPU thread count before every epoch from `share()`, which gives (threads for this
    process, runs training side by side now); None: keep the count.

    The CPU queue's lanes use it: a lane that has no more work hands its threads to the lanes still
    training. Like torch's thread count itself, the policy is the whole process's."""
    global _THREAD_SHARE
    _THREAD_SHARE = share


def follow_thread_share() -> int | None:
    """Set torch's thread count to the `share_threads` policy's: the runs side by side now where the count
    changed; None where it did not, or there is no policy."""
    if _THREAD_SHARE is None:
        return None
    threads, side_by_side = _THREAD_SHARE()
    threads = max(1, int(threads))
    if threads == torch.get_num_threads():
        return None
    torch.set_num_threads(threads)  # between epochs, from the training thread: OpenMP's count is per thread
    return side_by_side


def device_name(device: torch.device) -> str:
    """A readable name for run.json: the GPU's model, or the CPU with its core and thread counts."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def processor_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The host CPU's model, e.g. "Intel(R) Xeon(R) Processor"; "unknown" where it cannot be read.

    Recorded per session: float rounding on the CPU depends on the processor's kernels, so a run started
    over on another processor follows a trajectory of its own.
    """
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# Flags that change which kernels a CPU runs, and so its speed and its float rounding.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def processor_id(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The host CPU told apart by what sets its speed and rounding: vendor, family, model and the flags in
    KERNEL_FLAGS, e.g. "AuthenticAMD family 26 model 2 (avx2 avx512f avx512_bf16)". "model name" alone
    reads "AMD EPYC" on machines that train 1.7x apart. `processor_name()` where cpuinfo is unreadable.
    """
    try:
        fields: dict[str, str] = {}
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip() and fields:  # the first processor's block has ended
                break
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return processor_name(cpuinfo)
    if "vendor_id" not in fields:
        return processor_name(cpuinfo)
    flags = set(fields.get("flags", "").split())
    kernel_flags = " ".join(f for f in KERNEL_FLAGS if f in flags) or "no avx2"
    return (f"{fields['vendor_id']} family {fields.get('cpu family', '?')} model {fields.get('model', '?')} "
            f"({kernel_flags})")


def has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Does this CPU compute bfloat16 in hardware (avx512_bf16 or amx_bf16)? Without it PyTorch emulates
    bf16 autocast on a CPU, far slower than float32: rnn-spn-d4 took 682 s an epoch in bf16 against 83 s in
    float32 on a 2-core AVX2 EPYC (timed steps of `rstn train --cpu-queue`)."""
    flags = processor_id(cpuinfo).rpartition("(")[2].rstrip(")").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags
