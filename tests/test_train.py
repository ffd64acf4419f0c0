"""The trainer: the authors' optimiser, clipping, schedule and early stopping; metrics; exact resume; NaN.

The loop tests use a tiny stand-in model on 12x12 random images so that they run in a second; the real
models go through the same `fit` in tests/test_runs.py (the smoke CLI run).
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rstn.optim import LasagneRMSprop, clip_gradients, learning_rate
from rstn.train import (
    CHECKPOINT_NAME,
    CheckpointError,
    EarlyStopping,
    NonFiniteLossError,
    TrainConfig,
    digit_error,
    epoch_permutation,
    fit,
    load_checkpoint,
    sequence_error,
    sequence_loss,
)
from rstn.progress import format_duration, parse_duration
from rstn.results import without_timing

torch.set_num_threads(1)




def test_rmsprop_step_matches_hand_computation():
    p = nn.Parameter(torch.tensor([0.5, -1.0], dtype=torch.float64))
    opt = LasagneRMSprop([p], lr=0.01, rho=0.9, eps=1e-6)
    p.grad = torch.tensor([0.002, -1.0], dtype=torch.float64)
    opt.step()
    # By hand: acc = 0.1 g^2; p - lr g / sqrt(acc + 1e-6).
    #   g = 0.002: acc = 4e-7, sqrt(1.4e-6) = 1.18321596e-3, step = 0.01 * 1.69030851 -> 0.48309691491
    #   g = -1:    acc = 0.1,  sqrt(0.100001) = 0.31622935,   step = -0.01 * 3.16226185 -> -0.96837738151
    assert p.detach().tolist() == pytest.approx([0.48309691491, -0.96837738151], abs=1e-10)
    assert opt.state[p]["acc"].tolist() == pytest.approx([4e-7, 0.1], rel=1e-12)


def test_rmsprop_two_steps_follow_the_lasagne_recursion():
    torch.manual_seed(0)
    p0, g1, g2 = (torch.randn(5, dtype=torch.float64) for _ in range(3))
    p = nn.Parameter(p0.clone())
    opt = LasagneRMSprop([p], lr=1e-3, rho=0.9, eps=1e-6)
    acc, ref = torch.zeros(5, dtype=torch.float64), p0.clone()
    for g in (g1, g2):
        p.grad = g.clone()
        opt.step()
        acc = 0.9 * acc + 0.1 * g**2
        ref = ref - 1e-3 * g / torch.sqrt(acc + 1e-6)
    torch.testing.assert_close(p.detach(), ref, rtol=0, atol=1e-14)


def test_rmsprop_differs_from_torch_for_small_gradients():
    """torch.optim.RMSprop adds eps after the root: a gradient of 0.002 moves twice as far there."""
    ours = nn.Parameter(torch.tensor([0.5, -1.0], dtype=torch.float64))
    theirs = nn.Parameter(ours.detach().clone())
    for param, opt in ((ours, LasagneRMSprop([ours], lr=0.01, rho=0.9, eps=1e-6)),
                       (theirs, torch.optim.RMSprop([theirs], lr=0.01, alpha=0.9, eps=1e-6))):
        param.grad = torch.tensor([0.002, -1.0], dtype=torch.float64)
        opt.step()
    step_ours, step_theirs = 0.5 - ours[0].item(), 0.5 - theirs[0].item()
    assert step_theirs == pytest.approx(0.01 * 0.002 / (math.sqrt(4e-7) + 1e-6), rel=1e-12)
    assert step_theirs / step_ours == pytest.approx(1.868, abs=1e-3)
    # for |g| >> sqrt(eps / (1 - rho)) the two agree
    assert ours[1].item() == pytest.approx(theirs[1].item(), rel=1e-5)




def _with_grads(*grads: list[float]) -> list[nn.Parameter]:
    params = []
    for g in grads:
        p = nn.Parameter(torch.zeros(len(g), dtype=torch.float64))
        p.grad = torch.tensor(g, dtype=torch.float64)
        params.append(p)
    return params


def test_element_clipping_comes_before_the_norm_constraint():
    params = _with_grads([100.0, 1.0], [0.5])
    norm = clip_gradients(params, max_norm=5.0, element_clip=1.0)
    # clip first: (1, 1, 0.5), norm 1.5 < 5, so only Lasagne's norm / (norm + 1e-7) factor applies
    assert norm.item() == pytest.approx(1.5)
    factor = 1.5 / (1.5 + 1e-7)
    assert params[0].grad.tolist() == pytest.approx([factor, factor], rel=1e-12)
    assert params[1].grad.tolist() == pytest.approx([0.5 * factor], rel=1e-12)
    # the other order (norm, then clip) would have given (1, 0.05, 0.025): check that it differs
    other = _with_grads([100.0, 1.0], [0.5])
    clip_gradients(other, max_norm=5.0)
    clip_gradients(other, max_norm=None, element_clip=1.0)
    assert other[0].grad[1].item() == pytest.approx(0.05, rel=1e-3)


def test_norm_constraint_alone_rescales_to_max_norm():
    params = _with_grads([30.0, 40.0], [0.0])  # norm 50
    norm = clip_gradients(params, max_norm=5.0)
    assert norm.item() == pytest.approx(50.0)
    assert params[0].grad.tolist() == pytest.approx([3.0, 4.0], rel=1e-7)
    total = torch.cat([p.grad for p in params]).norm().item()
    assert total == pytest.approx(5.0 * 50 / (50 + 1e-7), rel=1e-12)


def test_trainer_clips_elements_only_where_the_model_asks():
    from rstn.train import element_clip_for

    config = TrainConfig()
    assert element_clip_for(config, SimpleNamespace(uses_element_clipping=True)) == 1.0
    assert element_clip_for(config, SimpleNamespace(uses_element_clipping=False)) is None
    assert element_clip_for(TrainConfig(element_clip="never"), SimpleNamespace(uses_element_clipping=True)) is None
    assert element_clip_for(TrainConfig(element_clip="always"), SimpleNamespace()) == 1.0




def _scripts_learning_rates(n_epochs: int, lr: float = 5e-4) -> list[float]:
    """The authors' loop (rnn_spn.py): the lr each epoch trains with, decayed at the epoch's end."""
    rates, last_decay, decayinterval, nodecay = [], 0, 10, 30
    for epoch in range(n_epochs):
        rates.append(lr)
        if last_decay > decayinterval and epoch > nodecay:
            last_decay, lr = 0, lr / 1.5
        else:
            last_decay += 1
    return rates


def test_lr_schedule_values():
    config = TrainConfig()
    lr = 5e-4
    expected = {0: lr, 30: lr, 31: lr, 32: lr / 1.5, 42: lr / 1.5, 43: lr / 1.5, 44: lr / 1.5**2,
                55: lr / 1.5**2, 56: lr / 1.5**3}
    assert {e: config.lr_at(e) for e in expected} == pytest.approx(expected, rel=1e-12)


def test_lr_schedule_matches_the_scripts_loop():
    ours = [learning_rate(e) for e in range(300)]
    assert ours == pytest.approx(_scripts_learning_rates(300), rel=1e-12)
    assert learning_rate(100, decay_every=0) == 5e-4


def test_dropout_ramp():
    config = TrainConfig()
    assert [config.dropout_at(e, 0.5) for e in range(7)] == pytest.approx([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.5])
    assert TrainConfig(dropout_ramp_epochs=0).dropout_at(0, 0.5) == 0.5
    assert config.dropout_at(0, 0.5, ramp=False) == 0.5


def test_dropout_ramps_for_rnn_spn_only():
    """rnn_spn.py ramps a nonzero dropout in; ffn_spn.py sets the rate once (and the conv net follows it)."""
    from rstn.models import conv_net, ffn_spn, rnn_spn
    from rstn.train import ramps_dropout

    config = TrainConfig()
    assert ramps_dropout(config, rnn_spn(2))
    assert not ramps_dropout(config, ffn_spn(2)) and not ramps_dropout(config, conv_net())
    assert ramps_dropout(TrainConfig(dropout_ramp="always"), ffn_spn(2))
    assert not ramps_dropout(TrainConfig(dropout_ramp="never"), rnn_spn(2))
    with pytest.raises(ValueError, match="dropout_ramp"):
        TrainConfig(dropout_ramp="sometimes")


def _scripts_early_stopping(valid_acc: list[int], look_ahead: int) -> tuple[int, int]:
    """The authors' LOOK_AHEAD loop: (epochs run, best epoch)."""
    best_valid, look_count, best_epoch = 0, look_ahead, -1
    for epoch, acc in enumerate(valid_acc):
        if acc > best_valid:
            best_valid, look_count, best_epoch = acc, look_ahead, epoch
        else:
            look_count -= 1
        if look_count <= 0:
            return epoch + 1, best_epoch
    return len(valid_acc), best_epoch


@pytest.mark.parametrize("seed", range(5))
def test_early_stopping_matches_the_scripts(seed):
    rng = np.random.default_rng(seed)
    valid = np.maximum.accumulate(rng.integers(0, 40, 60)) - rng.integers(0, 3, 60)  # plateaus, ties, dips
    stopper, epochs_run = EarlyStopping(patience=5), len(valid)
    for epoch, correct in enumerate(valid.tolist()):
        stopper.update(epoch, correct)
        if stopper.should_stop(epoch):
            epochs_run = epoch + 1
            break
    assert (epochs_run, stopper.best_epoch) == _scripts_early_stopping(valid.tolist(), 5)


def test_early_stopping_hand_made():
    stopper = EarlyStopping(patience=2)
    steps = [(0, 10, True, False), (1, 12, True, False), (2, 12, False, False), (3, 11, False, True)]
    for epoch, correct, improved, stop in steps:
        assert stopper.update(epoch, correct) is improved
        assert stopper.should_stop(epoch) is stop
    assert stopper.best_epoch == 1




def test_digit_and_sequence_error_on_a_hand_made_example():
    labels = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 0, 0]])
    predictions = np.array([[1, 2, 0], [4, 5, 6], [0, 8, 0], [0, 0, 0]])
    assert digit_error(predictions, labels) == pytest.approx(3 / 12)  # 3 wrong digits of 12
    assert sequence_error(predictions, labels) == pytest.approx(2 / 4)  # 2 of 4 sequences have a wrong digit
    with pytest.raises(ValueError, match="shape"):
        digit_error(predictions[:, :2], labels)


def test_sequence_loss_adds_the_softmax_tolerance():
    logits = torch.zeros(2, 3, 10)
    labels = torch.zeros(2, 3, dtype=torch.int64)
    assert sequence_loss(logits, labels).item() == pytest.approx(-math.log(0.1 + 1e-5), rel=1e-6)
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 10)
    labels = torch.randint(0, 10, (4, 3))
    plain = F.cross_entropy(logits.reshape(-1, 10), labels.reshape(-1))
    assert sequence_loss(logits, labels, softmax_tol=0).item() == pytest.approx(plain.item(), rel=1e-6)
    assert sequence_loss(logits, labels).item() < plain.item()


def test_epoch_permutation_depends_only_on_seed_and_epoch():
    a = epoch_permutation(3, 7, 100)
    assert torch.equal(a, epoch_permutation(3, 7, 100))
    assert sorted(a.tolist()) == list(range(100))
    assert not torch.equal(a, epoch_permutation(3, 8, 100))
    assert not torch.equal(a, epoch_permutation(4, 7, 100))




class Output(NamedTuple):
    logits: torch.Tensor
    theta: torch.Tensor | None


class TinyModel(nn.Module):
    """Stand-in with the models' interface: (B, 1, 12, 12) -> logits (B, 3, 10), theta (B, 1, 2, 3)."""

    uses_element_clipping = True

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(4 * 10 * 10, 30)
        self.loc = nn.Linear(4 * 10 * 10, 6)

    def set_dropout(self, p: float) -> None:
        self.dropout.p = p

    def forward(self, x: torch.Tensor) -> Output:
        h = self.dropout(F.relu(self.conv(x)).flatten(1))
        return Output(self.fc(h).reshape(-1, 3, 10), self.loc(h).reshape(-1, 1, 2, 3))


def tiny_data(n_train: int = 80, n_eval: int = 40, seed: int = 0) -> dict[str, SimpleNamespace]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, n in (("train", n_train), ("valid", n_eval), ("test", n_eval)):
        labels = rng.integers(0, 10, (n, 3))
        images = rng.random((n, 12, 12), dtype=np.float32) * 0.1
        images[:, 0, :3] += labels / 10  # a learnable signal
        out[name] = SimpleNamespace(images=images, labels=labels)
    return out


def tiny_model(seed: int = 0) -> TinyModel:
    torch.manual_seed(seed)
    return TinyModel()


CONFIG = TrainConfig(batch_size=20, max_epochs=3, lr=1e-2, dropout_ramp="always", dropout_ramp_epochs=2,
                     eval_batch_size=16)


def test_fit_learns_and_records_every_epoch(tmp_path):
    result = fit(tiny_model(), tiny_data(), CONFIG, seed=0, dropout=0.3, run_dir=tmp_path, progress="none")
    assert [r["epoch"] for r in result.history] == [0, 1, 2]
    assert [r["dropout"] for r in result.history] == pytest.approx([0.0, 0.15, 0.3])
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.stop_reason == "max_epochs"
    best = result.history[result.best_epoch]
    assert best["valid_error"] == min(r["valid_error"] for r in result.history)
    assert (tmp_path / CHECKPOINT_NAME).exists() and (tmp_path / "train.log").read_text().count("\n") == 3


def test_fit_stops_early_without_validation_gain():
    config = TrainConfig(batch_size=20, max_epochs=20, lr=0.0, patience=3, eval_batch_size=16)
    result = fit(tiny_model(), tiny_data(), config, seed=0, progress="none")
    # lr = 0: the model never changes, so epoch 0 stays the best and 3 more epochs end the run
    assert result.best_epoch == 0 and len(result.history) == 4 and result.stop_reason == "early_stopping"


class Interrupt(Exception):
    pass


def test_resume_equals_uninterrupted(tmp_path):
    data = tiny_data()
    straight = fit(tiny_model(), data, CONFIG, seed=5, dropout=0.3, run_dir=tmp_path / "a", progress="none")
    final_straight = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)

    def stop_after_epoch_1(state):
        if len(state.history) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(tiny_model(), data, CONFIG, seed=5, dropout=0.3, run_dir=tmp_path / "b", progress="none",
            on_epoch_end=stop_after_epoch_1)
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["epoch"] == 1
    # a fresh process would build the model anew: use other initial weights to prove they are replaced
    resumed = fit(tiny_model(seed=99), data, CONFIG, seed=5, dropout=0.3, run_dir=tmp_path / "b", resume=True,
                  progress="none")
    final_resumed = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)

    assert without_timing(resumed.history) == without_timing(straight.history)
    assert resumed.best_epoch == straight.best_epoch and len(resumed.sessions) == 2
    for key, value in final_straight["model"].items():
        assert torch.equal(final_resumed["model"][key], value), key
    for key, value in straight.best_state.items():
        assert torch.equal(resumed.best_state[key], value), key
    acc_a = [s["acc"] for s in final_straight["optimizer"]["state"].values()]
    acc_b = [s["acc"] for s in final_resumed["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(acc_a, acc_b, strict=True))


def test_a_different_seed_gives_a_different_run():
    data = tiny_data()
    a = fit(tiny_model(), data, CONFIG, seed=0, dropout=0.3, progress="none")
    b = fit(tiny_model(), data, CONFIG, seed=1, dropout=0.3, progress="none")
    assert without_timing(a.history) != without_timing(b.history)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    def poison(state):
        if len(state.history) == 1:
            with torch.no_grad():
                model.fc.weight[0, 0] = float("nan")

    model = tiny_model()
    with pytest.raises(NonFiniteLossError, match=r"nan in epoch 1.*epoch 0\) is kept in .*checkpoint\.pt"):
        fit(model, tiny_data(), CONFIG, seed=0, run_dir=tmp_path, progress="none", on_epoch_end=poison)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ckpt["epoch"] == 0 and len(ckpt["history"]) == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_glibc_malloc_tuning_is_recorded_and_idempotent():
    import sys

    from rstn.backends import backend_settings, tune_glibc_malloc

    tuned = tune_glibc_malloc()
    assert tune_glibc_malloc() is tuned
    assert backend_settings()["glibc_malloc_tuned"] is tuned
    if sys.platform == "linux":
        assert tuned  # glibc's mallopt accepted the thresholds


def test_a_past_deadline_abandons_the_epoch_and_keeps_the_last_checkpoint(tmp_path):
    first = fit(tiny_model(), tiny_data(), CONFIG, seed=0, run_dir=tmp_path, progress="none")
    assert first.status == "finished"
    config = TrainConfig(**{**CONFIG.__dict__, "max_epochs": 5})
    paused = fit(tiny_model(), tiny_data(), config, seed=0, run_dir=tmp_path, progress="none", resume=True,
                 deadline=time.monotonic() - 1)
    # the estimate from the earlier epochs says no epoch fits: none is started
    assert paused.status == "running" and paused.stop_reason == "time_budget" and len(paused.history) == 3
    fresh = fit(tiny_model(), tiny_data(), config, seed=0, run_dir=tmp_path / "fresh", progress="none",
                deadline=time.monotonic() - 1)
    # no estimate for a first epoch: it starts, runs past the deadline and is abandoned, nothing saved
    assert fresh.status == "running" and fresh.history == [] and not (tmp_path / "fresh" / CHECKPOINT_NAME).exists()
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 2


def test_out_of_time_between_checkpoints_goes_back_to_the_last_one(tmp_path, monkeypatch):
    """checkpoint_every=3 and the deadline passes inside epoch 2: epochs 0 and 1 were never saved, so the
    result holds no epoch (and no best state), and a resume ends exactly where one uninterrupted run ends."""
    import types

    import rstn.epoch as deadline_module  # where the deadline is read (rstn.epoch.Deadline)

    config = TrainConfig(**{**CONFIG.__dict__, "max_epochs": 4})
    straight = fit(tiny_model(), tiny_data(), config, seed=0, run_dir=tmp_path / "a", progress="none")
    clock = {"epochs": 0, "calls_after": 0}

    def monotonic() -> float:  # after epoch 1: the boundary check passes, the first batch check fails
        if clock["epochs"] < 2:
            return 0.0
        clock["calls_after"] += 1
        return 0.0 if clock["calls_after"] == 1 else 1e9

    monkeypatch.setattr(deadline_module, "time", types.SimpleNamespace(monotonic=monotonic))
    paused = fit(tiny_model(), tiny_data(), config, seed=0, run_dir=tmp_path / "b", progress="none",
                 checkpoint_every=3, deadline=1e6,
                 on_epoch_end=lambda state: clock.update(epochs=clock["epochs"] + 1))
    assert clock["epochs"] == 2 and paused.stop_reason == "time_budget"
    assert paused.history == [] and paused.best_state is None and paused.sessions[-1]["epochs"] == 0
    assert not (tmp_path / "b" / CHECKPOINT_NAME).exists()
    monkeypatch.undo()
    resumed = fit(tiny_model(), tiny_data(), config, seed=0, run_dir=tmp_path / "b", progress="none", resume=True)
    assert without_timing(resumed.history) == without_timing(straight.history)


@pytest.mark.parametrize("damage", ["truncated", "not a checkpoint"])
def test_resume_from_an_unreadable_checkpoint_starts_over(tmp_path, damage):
    first = fit(tiny_model(), tiny_data(), CONFIG, seed=0, run_dir=tmp_path, progress="none")
    path = tmp_path / CHECKPOINT_NAME
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        load_checkpoint(path)
    again = fit(tiny_model(), tiny_data(), CONFIG, seed=0, run_dir=tmp_path, progress="none", resume=True)
    assert "starting over" in (tmp_path / "train.log").read_text()
    assert without_timing(again.history) == without_timing(first.history) and len(again.sessions) == 1


def test_checkpoint_every_n_epochs_and_at_the_end(tmp_path):
    saved = []
    config = TrainConfig(**{**CONFIG.__dict__, "max_epochs": 5})
    fit(tiny_model(), tiny_data(), config, seed=0, run_dir=tmp_path, progress="none", checkpoint_every=2,
        on_epoch_end=lambda state: saved.append((tmp_path / CHECKPOINT_NAME).exists() and
                                                load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"]))
    assert saved == [False, 1, 1, 3, 4]


@pytest.mark.parametrize("text, seconds", [("2h30m", 9000), ("90m", 5400), ("45s", 45), ("1.5h", 5400),
                                           ("3600", 3600), ("1h 5m 3s", 3903)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5x", "-3m", "0", "2h and 3m"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration():
    assert [format_duration(s) for s in (42.4, 125, 3725)] == ["42s", "2m05s", "1h02m"]


def test_tf32_settings_can_be_recorded():
    """The new fp32_precision API and the legacy getter must not be mixed (it raised before)."""
    from rstn.backends import backend_settings, configure_backends

    try:
        settings = configure_backends(tf32=True)
        assert "tf32" in settings.values() or settings.get("cuda_matmul_allow_tf32") is True
        assert backend_settings() == settings
    finally:
        configure_backends(tf32=False)


def test_processor_name_reads_the_model_from_cpuinfo(tmp_path):
    """Each session records its processor: CPU rounding, hence a restarted run's trajectory, depends on it."""
    from rstn.backends import processor_name

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n"
                       "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n")
    assert processor_name(cpuinfo) == "Intel(R) Xeon(R) Processor"
    assert processor_name(tmp_path / "missing") not in ("", None)


def test_a_new_thread_count_handed_out_between_epochs_starts_a_new_session():
    import os

    from rstn.backends import device_name, share_threads

    before, asked = torch.get_num_threads(), iter([1, 2, 2])  # the count handed out before each epoch
    share_threads(lambda: (next(asked), 1))
    try:
        result = fit(tiny_model(), tiny_data(), CONFIG, seed=0, progress="none",  # 3 epochs
                     session={"device": device_name(torch.device("cpu"))})
    finally:
        share_threads(None)
        torch.set_num_threads(before)
    cores = os.cpu_count()
    # the first count is taken before any epoch, so the first session is simply relabelled
    assert [(s["first_epoch"], s["epochs"], s["device"]) for s in result.sessions] == [
        (0, 1, f"cpu ({cores} cores, 1 threads)"), (1, 2, f"cpu ({cores} cores, 2 threads)")]
    assert "ended_at" in result.sessions[0] and result.sessions[1]["started_at"] >= result.sessions[0]["ended_at"]


def test_a_thread_change_whose_epochs_a_rewind_takes_back_leaves_no_empty_session(tmp_path, monkeypatch):
    """checkpoint_every=3; epoch 0 at one thread, epoch 1 at two (a second session), and the deadline passes
    inside epoch 2: no epoch was saved, so neither session trained anything that counts."""
    import types

    import rstn.epoch as deadline_module
    from rstn.backends import device_name, share_threads

    clock, before, asked = {"epochs": 0, "calls_after": 0}, torch.get_num_threads(), iter([1, 2, 2])

    def monotonic() -> float:  # as in test_out_of_time_between_checkpoints_goes_back_to_the_last_one
        if clock["epochs"] < 2:
            return 0.0
        clock["calls_after"] += 1
        return 0.0 if clock["calls_after"] == 1 else 1e9

    monkeypatch.setattr(deadline_module, "time", types.SimpleNamespace(monotonic=monotonic))
    share_threads(lambda: (next(asked), 1))
    try:
        paused = fit(tiny_model(), tiny_data(), TrainConfig(**{**CONFIG.__dict__, "max_epochs": 4}), seed=0,
                     run_dir=tmp_path, progress="none", checkpoint_every=3, deadline=1e6,
                     session={"device": device_name(torch.device("cpu"))},
                     on_epoch_end=lambda state: clock.update(epochs=clock["epochs"] + 1))
    finally:
        share_threads(None)
        torch.set_num_threads(before)
    assert clock["epochs"] == 2 and paused.stop_reason == "time_budget" and paused.history == []
    assert len(paused.sessions) == 1 and paused.sessions[0]["epochs"] == 0
