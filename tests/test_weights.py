"""rstn.weights writes and reads the safetensors format as the safetensors package does."""

from __future__ import annotations

import pytest
import torch

from rstn.weights import WeightsError, load_weights, save_weights

safetensors_torch = pytest.importorskip("safetensors.torch", reason="the reference implementation (dev extra)")


def tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"conv.weight": torch.randn(20, 1, 3, 3), "gru.h0": torch.zeros(1, 256), "bias": torch.randn(7),
            "empty": torch.zeros(0, 3), "count": torch.arange(5)}


def test_our_file_reads_in_safetensors_with_float16_floats_and_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    size = save_weights(path, tensors(), {"row": "rnn-spn-d3", "epoch": "120"})
    assert size == path.stat().st_size
    theirs = safetensors_torch.load_file(path)
    for name, t in tensors().items():
        expected = t.half() if t.is_floating_point() else t
        assert theirs[name].dtype == expected.dtype and torch.equal(theirs[name], expected), name
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        assert f.metadata() == {"row": "rnn-spn-d3", "epoch": "120"}


def test_their_file_reads_here(tmp_path):
    path = tmp_path / "theirs.safetensors"
    safetensors_torch.save_file({k: v for k, v in tensors().items() if v.numel()}, path, {"a": "b"})
    ours, meta = load_weights(path)
    assert meta == {"a": "b"}
    for name, t in tensors().items():
        if t.numel():
            assert torch.equal(ours[name], t), name


def test_a_broken_file_names_itself(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{nonsense")
    with pytest.raises(WeightsError, match="bad.safetensors is not a readable safetensors file"):
        load_weights(path)
