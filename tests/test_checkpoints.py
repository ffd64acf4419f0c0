"""Resume packs: compact, committed beside run.json, and enough for a fresh clone to continue a run."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rstn.checkpoints import (
    BEST_IS_MODEL,
    PACK_FORMAT,
    PACK_NAME,
    CheckpointError,
    NewerPackError,
    from_pack,
    history_bytes,
    load_checkpoint,
    read_pack,
    reduce_precision,
    resume_point,
    save_checkpoint,
    to_pack,
    pack_bytes,
    pack_history_estimate,
    write_pack,
)
from rstn.experiments import run_config
from rstn.models import build_model
from rstn.results import HISTORY_FIELDS, read_run
from rstn.runs import checkpoint_path, load_trained, train_run
from rstn.weights import WEIGHTS_NAME
from test_runs import TINY, synthetic_data

torch.set_num_threads(1)


def fake_state(epoch: int) -> dict:
    torch.manual_seed(epoch)
    weights = {"w": torch.randn(4, 3), "b": torch.randn(3)}
    return {"model": weights, "best_state": {k: v + 1 for k, v in weights.items()}, "epoch": epoch,
            "optimizer": {"state": {0: {"acc": torch.rand(4, 3) * 1e-9}}, "param_groups": [{"lr": 5e-4}]},
            "extra": {"config": {"row": "x"}}, "history": [], "rng": {"torch": torch.get_rng_state()}}


def test_a_pack_keeps_the_weights_exact_and_the_rest_in_reduced_precision(tmp_path):
    state = fake_state(3)
    packed = to_pack(state)
    assert packed["model"]["w"]["dtype"] == "float32"
    assert packed["optimizer"]["state"][0]["acc"]["dtype"] == "bfloat16"  # 1e-9 is inside bf16's range
    assert packed["best_state"]["w"]["dtype"] == "float16"
    assert packed["rng"]["torch"].dtype == torch.uint8  # not a float: untouched
    assert torch.equal(from_pack(packed)["model"]["w"], state["model"]["w"])
    write_pack(tmp_path / PACK_NAME, state)
    back = read_pack(tmp_path / PACK_NAME)
    acc, acc_back = state["optimizer"]["state"][0]["acc"], back["optimizer"]["state"][0]["acc"]
    assert acc_back.dtype == torch.float32 and torch.allclose(acc_back, acc, rtol=1e-2, atol=0)
    assert torch.allclose(back["best_state"]["w"], state["best_state"]["w"], rtol=1e-3, atol=1e-3)
    assert "pack_format" not in back and back["epoch"] == 3


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor's bytes, so that -0.0 differs from 0.0 and a NaN equals itself."""
    return tensor.contiguous().reshape(-1).view(torch.uint8)


def test_byte_planes_give_back_every_tensor_bit_for_bit(tmp_path):
    """Float tensors of every dtype and of odd shapes and values, through a pack file."""
    odd = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-40, -3.25])  # 1e-40: subnormal
    model = {"w": torch.randn(5, 7) * 0.02, "odd": odd, "scalar": torch.tensor(-3.25), "empty": torch.zeros(0, 4),
             "transposed": torch.randn(3, 6).T, "half": torch.randn(9).half(), "double": torch.randn(2, 2).double(),
             "bf16": torch.randn(4).bfloat16(), "steps": torch.arange(6)}  # an integer tensor: stored as it is
    state = fake_state(2) | {"model": model, "best_state": None}
    state["optimizer"]["state"][0]["acc"] = torch.rand(3, 1, 2) * 1e-30  # far below float16's range
    write_pack(tmp_path / PACK_NAME, state)
    stored = load_checkpoint(tmp_path / PACK_NAME)
    assert stored["model"]["w"]["byte_planes"].shape == (4, 35) and stored["model"]["steps"].dtype == torch.int64
    back = read_pack(tmp_path / PACK_NAME)
    for key, tensor in model.items():
        got = back["model"][key]
        assert got.dtype == tensor.dtype and got.shape == tensor.shape and torch.equal(bits(got), bits(tensor)), key
    acc = state["optimizer"]["state"][0]["acc"]
    assert torch.equal(back["optimizer"]["state"][0]["acc"], acc.to(torch.bfloat16).float())
    assert back["best_state"] is None and back["optimizer"]["param_groups"] == [{"lr": 5e-4}]


def test_best_weights_equal_to_the_weights_are_stored_once_and_come_back_exact(tmp_path):
    state = fake_state(4)
    state["best_state"] = {k: v.clone() for k, v in state["model"].items()}  # a pack written after a best epoch
    packed = to_pack(state)
    assert packed["best_state"] == BEST_IS_MODEL
    back = from_pack(packed)
    assert all(torch.equal(back["best_state"][k], v) for k, v in state["model"].items())
    back["best_state"]["w"] += 1  # a copy, not the weights themselves
    assert not torch.equal(back["best_state"]["w"], back["model"]["w"])
    older = fake_state(4)
    older["best_state"] = {k: v + 1e-6 for k, v in older["model"].items()}  # equal in float16, yet older
    assert isinstance(to_pack(older)["best_state"], dict)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_pack_of_weights_still_on_the_gpu_is_written(tmp_path):
    """During training the checkpoint's weights are the model's (on the GPU), its best weights a CPU copy."""
    state = fake_state(5)
    state["model"] = {k: v.cuda() for k, v in state["model"].items()}
    state["best_state"] = {k: v.cpu().clone() for k, v in state["model"].items()}
    write_pack(tmp_path / PACK_NAME, state)
    back = read_pack(tmp_path / PACK_NAME)
    assert load_checkpoint(tmp_path / PACK_NAME)["best_state"] == BEST_IS_MODEL
    assert torch.equal(back["best_state"]["w"], state["model"]["w"].cpu())


def test_a_pack_written_by_format_1_is_still_read():
    """tests/data/pack-format1.pt: written by the format 1 code (rstn.checkpoints at e60f26a) from the state
    rebuilt here: torch.manual_seed(6), then the weights and the optimizer's running mean drawn."""
    torch.manual_seed(6)
    w, b = torch.randn(4, 3), torch.randn(3)
    acc = torch.rand(4, 3) * 1e-9
    back = read_pack(Path(__file__).parent / "data" / "pack-format1.pt")
    assert torch.equal(back["model"]["w"], w) and torch.equal(back["model"]["b"], b) and back["epoch"] == 6
    assert torch.equal(back["best_state"]["w"], (w + 1).half().float())
    assert torch.equal(back["optimizer"]["state"][0]["acc"], acc.bfloat16().float())


def test_a_pack_of_a_newer_format_stops_the_resume_and_is_left_as_it_is(tmp_path):
    """Passed over, it would let the run start over and overwrite it."""
    torch.save(to_pack(fake_state(3)) | {"pack_format": PACK_FORMAT + 1}, tmp_path / PACK_NAME)
    before = (tmp_path / PACK_NAME).read_bytes()
    with pytest.raises(NewerPackError, match="update rstn"):
        resume_point(tmp_path / "checkpoint.pt", tmp_path / PACK_NAME, accepts=lambda config: True)
    assert (tmp_path / PACK_NAME).read_bytes() == before


def test_byte_planes_cost_the_history_less_than_the_tensors_as_they_are(tmp_path):
    """The sign-and-exponent bytes lie together, where zlib (git's compression) finds them."""
    torch.manual_seed(0)
    weights = torch.randn(400, 500) * 0.02
    state = fake_state(1) | {"model": {"w": weights}, "best_state": {"w": weights * 0.9}}
    state["optimizer"]["state"][0]["acc"] = torch.rand(400, 500) ** 4 * 1e-4
    write_pack(tmp_path / "planes.pt", state)
    torch.save(reduce_precision(state) | {"pack_format": 1}, tmp_path / "as_they_are.pt")  # format 1's layout
    planed, plain = history_bytes(tmp_path / "planes.pt"), history_bytes(tmp_path / "as_they_are.pt")
    assert planed < 0.95 * plain, (planed, plain)


def test_the_queues_estimate_of_a_packs_history_cost_is_within_a_tenth_of_it(tmp_path):
    """`pack_history_estimate` (the queue's history line) against the zlib size of a real pack of a paper
    model: after one RMSprop step, with best weights that are not the weights."""
    torch.manual_seed(0)
    model = build_model(run_config("ffn-spn-d4", "paper", 0).model)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=5e-4)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter) * 1e-2
    optimizer.step()
    weights = model.state_dict()
    best = {k: v + 1e-3 * torch.randn_like(v) if v.is_floating_point() else v for k, v in weights.items()}
    write_pack(tmp_path / PACK_NAME, fake_state(3) | {"model": weights, "best_state": best,
                                                     "optimizer": optimizer.state_dict()})
    estimate, cost = pack_history_estimate(model), history_bytes(tmp_path / PACK_NAME)
    assert 0.9 < cost / estimate < 1.1, (cost, estimate)
    assert estimate < 0.9 * pack_bytes(model)  # well below the pack's size on disk


def test_a_checkpoint_is_not_a_pack_and_a_broken_pack_names_itself(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", fake_state(1))
    with pytest.raises(CheckpointError, match="not a resume pack"):
        read_pack(tmp_path / "checkpoint.pt")
    (tmp_path / PACK_NAME).write_bytes(b"\x80 truncated")
    with pytest.raises(CheckpointError, match=PACK_NAME):
        read_pack(tmp_path / PACK_NAME)


@pytest.mark.parametrize("checkpoint_epoch, pack_epoch, chosen", [(5, 5, "checkpoint"), (6, 5, "checkpoint"),
                                                                    (4, 5, "pack"), (None, 5, "pack"),
                                                                    (5, None, "checkpoint")])
def test_resume_takes_the_checkpoint_when_at_least_as_far_else_the_pack(tmp_path, checkpoint_epoch, pack_epoch,
                                                                       chosen):
    ckpt, pack = tmp_path / "checkpoint.pt", tmp_path / PACK_NAME
    if checkpoint_epoch is not None:
        save_checkpoint(ckpt, fake_state(checkpoint_epoch))
    if pack_epoch is not None:
        write_pack(pack, fake_state(pack_epoch))
    point = resume_point(ckpt, pack, accepts=lambda config: True, say=lambda line: None)
    assert point.kind == chosen and point.epoch == (checkpoint_epoch if chosen == "checkpoint" else pack_epoch)
    assert (PACK_NAME in point.describe()) == (chosen == "pack")


def test_resume_passes_over_a_state_of_another_config_saying_so(tmp_path):
    ckpt, pack = tmp_path / "checkpoint.pt", tmp_path / PACK_NAME
    save_checkpoint(ckpt, fake_state(9))
    write_pack(pack, fake_state(2) | {"extra": {"config": {"row": "y"}}})
    said = []
    point = resume_point(ckpt, pack, accepts=lambda config: config == {"row": "y"}, say=said.append)
    assert point.kind == "pack" and point.epoch == 2
    assert said == [f"{ckpt} was written for another config: not resumed from it"]
    assert resume_point(tmp_path / "none.pt", tmp_path / "none2.pt", lambda c: True) is None


def test_a_fresh_clone_continues_a_paused_run_from_its_pack(tmp_path, monkeypatch, capsys):
    """A smoke run paused by its budget; its results folder (run.json, train.log, resume.pt) copied into
    another results folder with an empty checkpoint folder, as a fresh clone on a new machine has it."""
    import rstn.train

    data = synthetic_data(n=40)
    config = run_config("rnn-spn-d4", "smoke", seed=4, **(TINY | {"max_epochs": 4}))
    here, there = tmp_path / "here", tmp_path / "clone" / "results"
    straight = train_run(config, results_dir=tmp_path / "straight", checkpoint_root=tmp_path / "ckpt-straight",
                         progress="none", data=data)
    with monkeypatch.context() as patch:  # the budget stops the run after two epochs
        patch.setattr(rstn.train, "_epoch_estimate", lambda history: 1e9 if len(history) >= 2 else 0.0)
        paused = train_run(config, results_dir=here, checkpoint_root=tmp_path / "ckpt-here", progress="none",
                           data=data, deadline=time.monotonic() + 3600)
    folder = here / "smoke" / "rnn-spn-d4" / "seed4"
    assert paused.status == "running" and paused.record.epochs_run == 2 and (folder / PACK_NAME).exists()
    model_bytes = pack_bytes(build_model(config.model))  # the queue's estimate, within the few kB of history
    assert load_checkpoint(folder / PACK_NAME)["best_state"] == BEST_IS_MODEL  # epoch 1 was the best so far
    floats = sum(t.numel() for t in build_model(config.model).state_dict().values() if t.is_floating_point())
    model_bytes -= 2 * floats  # the float16 best weights, stored once as the weights
    assert model_bytes < (folder / PACK_NAME).stat().st_size < model_bytes + 64_000
    assert not (folder / WEIGHTS_NAME).exists()  # weights come with the finish
    assert load_checkpoint(checkpoint_path(config, tmp_path / "ckpt-here"))["epoch"] == 1

    shutil.copytree(folder, there / "smoke" / "rnn-spn-d4" / "seed4")
    capsys.readouterr()
    resumed = train_run(config, results_dir=there, checkpoint_root=tmp_path / "empty", progress="text",
                        data=data, resume=True)
    out = capsys.readouterr().out
    assert f"resuming from the resume pack {PACK_NAME}" in out and "after epoch 1" in out
    clone = there / "smoke" / "rnn-spn-d4" / "seed4"
    log = (clone / "train.log").read_text()
    assert f"resumed from the resume pack {PACK_NAME}" in log and log.count("epoch   2 ") == 1

    record, reference = resumed.record, straight.record
    assert record.status == "finished" and record.epochs_run == reference.epochs_run == 4
    assert [h["epoch"] for h in record.history] == [0, 1, 2, 3]
    assert [sorted(h) for h in record.history] == [sorted(HISTORY_FIELDS)] * 4
    assert sorted(vars(record)) == sorted(vars(reference)) and record.stop_reason == reference.stop_reason
    assert [s["first_epoch"] for s in record.sessions] == [0, 2]
    # the epochs before the pause are the paused run's own, exactly
    assert record.history[:2] == paused.record.history
    assert not (clone / PACK_NAME).exists()  # a finished run has no pack...
    assert (clone / WEIGHTS_NAME).exists()  # ...but its best weights
    assert read_run(clone / "run.json") == record


def test_load_trained_returns_the_best_weights_in_eval_mode(tmp_path):
    data = synthetic_data(n=40)
    config = run_config("rnn-spn-d4", "smoke", seed=5, **(TINY | {"max_epochs": 2}))
    train_run(config, results_dir=tmp_path, checkpoint_root=tmp_path / "ckpt", progress="none", data=data)
    model = load_trained("rnn-spn-d4", "smoke", seed=5, results_dir=tmp_path)
    assert not model.training
    best = load_checkpoint(checkpoint_path(config, tmp_path / "ckpt"))["best_state"]  # full precision

    reference = build_model(config.model).eval()
    reference.load_state_dict(best)
    x = torch.as_tensor(data["test"].images[:8]).unsqueeze(1)
    with torch.no_grad():
        ours, full = model(x), reference(x)
    assert torch.allclose(ours.logits, full.logits, atol=1e-2, rtol=1e-2)
    assert torch.allclose(ours.theta, full.theta, atol=1e-2)
    assert np.array_equal(ours.logits.argmax(-1).numpy(), full.logits.argmax(-1).numpy())
    with pytest.raises(FileNotFoundError, match="rnn-spn-d3/seed0: not run"):
        load_trained("rnn-spn-d3", "smoke", results_dir=tmp_path)


def test_trained_glimpses_come_from_the_saved_weights_on_the_runs_own_test_split(tmp_path, mnist_file):
    from rstn.attention import score_attention
    from rstn.data import load_sequences
    from rstn.runs import trained_glimpses

    config = run_config("rnn-spn-d4", "smoke", seed=6, **(TINY | {"max_epochs": 1}))
    train_run(config, results_dir=tmp_path, checkpoint_root=tmp_path / "ckpt", progress="none")
    theta, boxes = trained_glimpses("rnn-spn-d4", "smoke", 6, n=30, results_dir=tmp_path, batch=8)
    assert theta.shape == (30, 3, 2, 3) and boxes.shape == (30, 3, 4)
    assert np.array_equal(boxes, load_sequences(config.data, seed=0)["test"].boxes[:30])
    saved = np.load(tmp_path / "smoke" / "rnn-spn-d4" / "seed6" / "attention.npz")["theta"]  # fp32 weights
    assert np.allclose(theta[:4], saved, atol=1e-2)  # the fp16 weights glimpse where the fp32 ones did
    assert score_attention(theta, boxes, 100, 100).n == 30


def test_carry_writes_the_pack_of_a_paused_run_from_its_checkpoint(tmp_path, monkeypatch):
    """`rstn carry`: the pack of a run trained by code older than packs, from the local checkpoint."""
    import rstn.train
    from rstn.runs import carry_run

    data = synthetic_data(n=40)
    config = run_config("rnn-spn-d4", "smoke", seed=7, **(TINY | {"max_epochs": 4}))
    with monkeypatch.context() as patch:  # the budget stops the run after two epochs
        patch.setattr(rstn.train, "_epoch_estimate", lambda history: 1e9 if len(history) >= 2 else 0.0)
        train_run(config, results_dir=tmp_path, checkpoint_root=tmp_path / "ckpt", progress="none", data=data,
                  deadline=time.monotonic() + 3600)
    pack = tmp_path / "smoke" / "rnn-spn-d4" / "seed7" / PACK_NAME
    pack.unlink()  # as older code left it
    said = carry_run(config, tmp_path, tmp_path / "ckpt")
    assert said.startswith(f"smoke/rnn-spn-d4/seed7: in progress: wrote {pack} (") and "MiB of history" in said
    assert said.endswith("from the checkpoint after epoch 1")
    checkpoint = load_checkpoint(checkpoint_path(config, tmp_path / "ckpt"))
    assert torch.equal(read_pack(pack)["model"]["theta.weight"], checkpoint["model"]["theta.weight"])
    with pytest.raises(FileNotFoundError, match="no local checkpoint"):
        carry_run(config, tmp_path, tmp_path / "elsewhere")
