"""The notebooks: the training notebook runs end to end (papermill, smoke profile, a temporary results
folder), and the sources and executed chapters keep the book's rules.

The chapters themselves are checked by nbval (`make nbval`): re-executing book/NN-*.ipynb must reproduce
their stored text outputs. This file covers what nbval does not: the training notebook (a run of its own
per row, too slow and too variable to re-execute as a baseline), and that the executed chapters are the
current sources (nbval re-executes the code stored in the .ipynb, not the .md it was made from).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import jupytext
import nbformat
import pytest

from rstn import experiments
from rstn import book as nbrun
from rstn.results import RUN_FILE, read_run

ROOT = Path(__file__).resolve().parent.parent
SOURCES = nbrun.sources(ROOT)


def _text_outputs(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream":
                out.append(o["text"])
            elif "data" in o:
                out.append(o["data"].get("text/plain", ""))
    return "".join(out)


def test_training_notebook_smoke_run_writes_results_and_skips_a_rerun(tmp_path, capfd):
    output = tmp_path / "run" / "03-training.ipynb"
    results = tmp_path / "results"
    config = experiments.run_config("rnn-spn-d2", "smoke", 0, device="cpu")
    outcome = nbrun.run_training(config, device="cpu", output=output, results_dir=results, root=ROOT)
    assert outcome.status == "trained" and outcome.notebook == output
    # the training log streams live; no kernel log, no figure reprs (item: quiet, useful output)
    live = capfd.readouterr()
    assert "epoch" in live.out and "done smoke/rnn-spn-d2/seed0" in live.out
    assert "<Figure" not in live.out + live.err
    assert "Kernel is running over TCP" not in live.err and "KeyboardInterrupt" not in live.err
    nb = nbformat.read(output, as_version=4)
    outputs = [o for cell in nb.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert not [o for o in outputs if o["output_type"] == "stream" and o["name"] == "stderr"], "stderr in output"
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})], \
        "a widget (tqdm.auto?) in the training output"
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "results_dir = \"../results\"" in injected[0].source  # relative to output

    record = read_run(results / "smoke" / "rnn-spn-d2" / "seed0" / RUN_FILE)
    assert record.status == "finished" and record.epochs_run == experiments.PROFILES["smoke"].train.max_epochs
    text = _text_outputs(nb)
    assert f"per-digit test error {100 * record.test_error:.2f}%" in text
    assert "papermill" not in json.dumps([c.metadata for c in nb.cells])  # timing metadata stripped

    # A copy elsewhere (the book's training chapter) points at the same results.
    copy = tmp_path / "03-training.ipynb"
    nbrun.copy_run(output, copy, results)
    injected = [c for c in nbformat.read(copy, as_version=4).cells if "injected-parameters" in c.metadata["tags"]]
    assert 'results_dir = "results"' in injected[0].source

    # Same config, results and notebook present: nothing runs again, and it says so.
    again = nbrun.run_training(config, device="cpu", output=output, results_dir=results, root=ROOT)
    assert again.status == "finished" and again.notebook == output
    assert again.message.startswith("skip: finished with this config")

    # nbval never trains: the training cell is tagged nbval-skip, and the cells after it read run.json.
    training = [c for c in nb.cells if "train_run(" in c.source]
    assert len(training) == 1 and "nbval-skip" in training[0].metadata.get("tags", [])


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_source_has_parameters_kernel_and_defines_no_functions(source):
    nb = jupytext.read(source)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nbrun.notebook_parameters(nb), f"{source.name} has no cell tagged `parameters`"
    for cell in nb.cells:
        if cell.cell_type == "code":
            tree = ast.parse(cell.source)
            defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
            assert not defined, f"{source.name} defines {defined}: reusable code belongs in the rstn package"


@pytest.mark.parametrize("name", nbrun.chapter_names(ROOT))
def test_executed_chapter_is_the_current_source(name):
    executed_path = ROOT / "book" / f"{name}.ipynb"
    if not executed_path.exists():
        pytest.fail(f"book/{name}.ipynb is missing: run `make notebooks`")
    source = jupytext.read(ROOT / "notebooks" / f"{name}.md")
    executed = nbformat.read(executed_path, as_version=4)
    code = [c.source for c in executed.cells
            if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    assert code == [c.source for c in source.cells if c.cell_type == "code"], \
        f"book/{name}.ipynb was executed from an older notebooks/{name}.md: run `make notebooks`"
    markdown = [c.source for c in executed.cells if c.cell_type == "markdown"]
    assert markdown == [c.source for c in source.cells if c.cell_type == "markdown"], \
        f"book/{name}.ipynb has older text than notebooks/{name}.md: run `make notebooks`"


def test_notebook_parameters_reads_the_parameters_cell():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("a = 1"),
        nbformat.v4.new_code_cell("profile = None  # comment\nseed: int = 0\nx, y = 1, 2",
                                  metadata={"tags": ["parameters"]}),
    ])
    assert nbrun.notebook_parameters(nb) == {"profile", "seed"}


def test_executing_twice_writes_the_same_file(tmp_path):
    source = tmp_path / "01-tiny.md"
    source.write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n# Tiny\n\n"
        "```{code-cell} ipython3\n:tags: [parameters]\n\nn = 2\n```\n\n"
        "```{code-cell} ipython3\nimport sys, time\nfor i in range(n):\n"
        "    print(i, flush=True)\n    time.sleep(0.05)\n```\n"
    )
    first = nbrun.execute(source, tmp_path / "a" / "01-tiny.ipynb", {"n": 3, "unknown": 1})
    second = nbrun.execute(source, tmp_path / "b" / "01-tiny.ipynb", {"n": 3, "unknown": 1})
    assert first.read_bytes() == second.read_bytes()
    nb = nbformat.read(first, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "n = 3" in injected[0].source and "unknown" not in injected[0].source
    outputs = nb.cells[-1].outputs
    assert [o["output_type"] for o in outputs] == ["stream"] and outputs[0]["text"] == "0\n1\n2\n"
