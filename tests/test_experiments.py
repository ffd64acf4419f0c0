"""The Table 1 registry: rows, profiles, resolved configs and their overrides."""

from __future__ import annotations

import json

import pytest

from rstn.experiments import CPU_QUEUE, PROFILES, REGISTRY, ROWS, RegistryError, resolve_profile, run_config


def test_registry_holds_the_nine_rows_with_the_papers_numbers():
    assert {name: row.paper_error for name, row in ROWS.items()} == {
        "rnn-spn-d1": 1.8, "rnn-spn-d2": 1.5, "rnn-spn-d3": 1.8, "rnn-spn-d4": 2.3,
        "ffn-spn-d1": 4.4, "ffn-spn-d2": 2.0, "ffn-spn-d3": 2.9, "ffn-spn-d4": 5.3, "conv-net": 2.9}
    assert ROWS["rnn-spn-d3"].model_config().kind == "rnn_spn" and ROWS["rnn-spn-d3"].model_config().d == 3
    assert ROWS["ffn-spn-d2"].model_config().glimpse_size == 50
    assert ROWS["conv-net"].model_config().kind == "conv_net"


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(RegistryError, match="unknown row 'rnn-spn-d5'; valid rows: rnn-spn-d1, .*conv-net"):
        run_config("rnn-spn-d5", "smoke")
    with pytest.raises(RegistryError, match="unknown profile 'fast'; valid profiles: smoke, quick, paper, auto"):
        run_config("conv-net", "fast")
    with pytest.raises(RegistryError, match=r"unknown TrainConfig field\(s\) \['epochs'\]; valid: .*max_epochs"):
        run_config("conv-net", "smoke", epochs=3)


def test_profiles():
    assert resolve_profile("auto", "cuda").name == "paper"
    assert resolve_profile("auto", "cpu").name == "quick"
    paper = run_config("rnn-spn-d2", "paper", seed=3)
    assert (paper.data.n_train, paper.data.n_valid, paper.data.n_test) == (60_000, 10_000, 10_000)
    assert paper.train.max_epochs == 300 and paper.train.lr == 5e-4 and paper.seed == 3
    smoke = run_config("rnn-spn-d2", "smoke", max_epochs=1)
    assert smoke.data.n_train == PROFILES["smoke"].n_train and smoke.train.max_epochs == 1
    assert json.loads(json.dumps(smoke.to_dict())) == smoke.to_dict()


@pytest.mark.parametrize("override, message", [
    ({"max_epochs": "abc"}, "max_epochs='abc': max_epochs must be an integer"),
    ({"lr": -1}, "lr must be >= 0 and finite, got -1"),
    ({"max_grad_norm": float("inf")}, "max_grad_norm must be > 0 and finite, got inf"),
    ({"bf16": 1}, "bf16=1: bf16 must be true or false"),
    ({"element_clip": "sometimes"}, "element_clip must be 'model', 'always' or 'never'"),
])
def test_bad_overrides_name_the_value(override, message):
    with pytest.raises(RegistryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_config("conv-net", "smoke", **override)


def test_cpu_queue_holds_the_cheap_paper_rows_and_no_gpu_row():
    rows = {row for row, _ in CPU_QUEUE}
    assert {"rnn-spn-d4", "ffn-spn-d4", "rnn-spn-d3", "ffn-spn-d3", "rnn-spn-d2", "ffn-spn-d2"} <= rows
    assert not rows & {"rnn-spn-d1", "ffn-spn-d1", "conv-net"}  # a GPU's job
    assert rows <= set(REGISTRY) and len(set(CPU_QUEUE)) == len(CPU_QUEUE)
