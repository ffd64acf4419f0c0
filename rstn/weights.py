"""Trained weights as a safetensors file: the format, written and read with torch alone.

A finished run leaves `weights.safetensors` beside its run.json: the best-validation weights in float16
(a few MB for the d >= 2 rows), which `rstn.runs.load_trained` loads into its model. The format
(https://huggingface.co/docs/safetensors) is an 8-byte little-endian header length, a JSON header
{name: {dtype, shape, data_offsets}, "__metadata__": {str: str}} padded with spaces to 8 bytes, then the
tensors' bytes in order. It is written here without the `safetensors` package so that the bare GPU
machine (torch only) writes the same files; tests/test_weights.py checks it against that package.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import torch

WEIGHTS_NAME = "weights.safetensors"
_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
           torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}
_BY_NAME = {name: dtype for dtype, name in _DTYPES.items()}


class WeightsError(ValueError):
    """A weights file that cannot be read as safetensors."""


def save_weights(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
                 dtype: torch.dtype | None = torch.float16) -> int:
    """Write `tensors` (floating ones cast to `dtype`, None: as they are) atomically; returns the file size."""
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    blobs, offset = [], 0
    for name, tensor in tensors.items():
        t = tensor.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        if t.dtype not in _DTYPES:
            raise WeightsError(f"{name}: dtype {t.dtype} has no safetensors name")
        data = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")  # git-ignored: results/**/.*.tmp*
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for data in blobs:
            f.write(data)
    os.replace(tmp, path)
    return path.stat().st_size


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file. Raises WeightsError naming the file."""
    raw = Path(path).read_bytes()
    try:
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        body = raw[8 + n:]
        metadata = header.pop("__metadata__", {}) or {}
        tensors = {}
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            flat = torch.frombuffer(bytearray(body[begin:end]), dtype=torch.uint8) if end > begin else \
                torch.empty(0, dtype=torch.uint8)
            tensors[name] = flat.view(_BY_NAME[entry["dtype"]]).reshape(entry["shape"])
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError,
            RuntimeError) as err:
        raise WeightsError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err})") from None
    return tensors, metadata
