"""Table 1 from the run records (`rstn.records`): ours beside the paper, the headline and its verdict, the
variants beside their rows, the run facts, and their Markdown for the README.

The records hold errors as fractions in [0, 1]; every table here shows %. Ours is the test error at the
best-validation epoch, the mean over finished seeds, with its standard error (`rstn.uncertainty`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rstn.experiments import (
    ABLATIONS,
    BEST,
    CPU_QUEUE,
    PROFILES,
    ROWS,
    bf16_deviation,
    is_profile_config,
    resolve_profile,
)
from rstn.generator import SequenceConfig
from rstn.progress import counted, format_duration
from rstn.records import RUN_FILE, RunRecord, display_profile, load_runs, read_run
from rstn.uncertainty import Difference, Estimate


@dataclass(frozen=True)
class TableRecord:
    """One Table 1 row: the paper's number, ours over the finished seeds, and runs still in progress (%)."""

    row: str
    model: str
    d: int | None
    paper_error: float
    profile: str
    seeds: tuple[int, ...]  # finished seeds
    test_errors: tuple[float, ...]  # per-digit test error at the best-validation epoch, %, per finished seed
    sequence_errors: tuple[float, ...]  # whole-sequence test error, %, per finished seed
    best_epochs: tuple[int, ...]
    devices: tuple[str, ...]
    n_diverged: int
    running: tuple[RunRecord, ...] = ()  # in-progress runs, best-so-far numbers in their `final`
    finished_runs: tuple[RunRecord, ...] = ()
    other_config: tuple[RunRecord, ...] = ()  # runs above made with another config than the profile's today
    bf16: tuple[RunRecord, ...] = ()  # runs above that are the profile's config in bf16 (a named deviation)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.test_errors) if self.test_errors else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (None for fewer than two)."""
        return statistics.stdev(self.test_errors) if len(self.test_errors) > 1 else None

    @property
    def sequence_mean(self) -> float | None:
        return statistics.fmean(self.sequence_errors) if self.sequence_errors else None

    @property
    def best_so_far(self) -> RunRecord | None:
        """The in-progress run with the most epochs (None if none has finished an epoch)."""
        started = [r for r in self.running if r.final is not None]
        return max(started, key=lambda r: r.epochs_run) if started else None


def default_table_profile(results_dir: str | Path = "results") -> str:
    """The profile `rstn table` shows by default: `display_profile` of `BEST` (paper, else quick, else smoke,
    the first with results; paper if none has)."""
    return display_profile(BEST, results_dir)


def load_table(profile: str | None = BEST, results_dir: str | Path = "results") -> list[TableRecord]:
    """Ours vs the paper for the nine rows under `profile` (`BEST` or None: `display_profile`, the best with
    results; 'auto': the profile `rstn train` would train on this machine)."""
    profile = display_profile(profile, results_dir)
    if profile == "auto":
        profile = resolve_profile(profile).name
    runs = load_runs(profile, results_dir)
    table = []
    for row in ROWS.values():
        mine = [r for r in runs if r.row == row.name]
        done = [r for r in mine if r.finished]
        table.append(TableRecord(
            row=row.name, model=row.model_name, d=row.d, paper_error=row.paper_error, profile=profile,
            seeds=tuple(r.seed for r in done), test_errors=tuple(100 * r.test_error for r in done),
            sequence_errors=tuple(100 * r.test_sequence_error for r in done),
            best_epochs=tuple(r.best_epoch for r in done), devices=tuple(sorted({r.device for r in done})),
            n_diverged=sum(r.status == "diverged" for r in mine),
            running=tuple(r for r in mine if r.status == "running"), finished_runs=tuple(done),
            other_config=tuple(r for r in mine if r.status != "diverged" and not is_profile_config(r.config)
                               and not bf16_deviation(r.config)),
            bf16=tuple(r for r in mine if bf16_deviation(r.config))))
    return table


# The row names the model and d; where and how long each run trained is in the run facts (chapter 4).
HEADLINE_COLUMNS = ("row", "paper (%)", "ours (%)", "ours - paper", "last epoch (%)", "status", "epochs")
# A run in progress is compared with the paper only once it has passed the first lr decay (after epoch 31):
# before that its best-so-far error is still far above where the protocol takes it.
MIN_EPOCHS_TO_COMPARE = 32


def not_run_text(row: str) -> str:
    """What the headline says of a row without a run: whether the CPU queue will reach it."""
    queued = any(name == row for name, _ in CPU_QUEUE)
    return "not run yet (queued on the CPU)" if queued else "not run yet (needs a GPU)"


def no_result_text(record: TableRecord) -> str:
    """What the headline says of a row with no test error yet: started, diverged, or not run."""
    if record.running:
        return "in progress: no epoch finished yet"
    if record.n_diverged:
        return f"diverged ({counted(record.n_diverged, 'run')}; see the run facts)"
    return not_run_text(record.row)


def test_digits(profile: str) -> int:
    """How many test digits a run of `profile` is scored on (the paper profile: 30,000)."""
    return PROFILES[profile].n_test * SequenceConfig.n_digits


def estimate(record: TableRecord) -> Estimate | None:
    """A row's finished result with its standard error (`rstn.uncertainty`); None before one."""
    return Estimate.of_runs(record.test_errors, test_digits(record.profile)) if record.test_errors else None


def run_estimate(run: RunRecord) -> Estimate:
    """One run's best(-so-far) test error with its standard error on the run's own test split."""
    data = run.config["data"]
    n_digits = data.get("n_test", PROFILES[run.profile].n_test) * data.get("n_digits", SequenceConfig.n_digits)
    return Estimate.of_runs([100 * run.test_error], n_digits)


def last_epoch_error(runs: Iterable[RunRecord]) -> float | None:
    """Mean test error (%) at the last epoch run: the number a script that keeps no checkpoint reports."""
    last = [100 * r.history[-1]["test_error"] for r in runs if r.history]
    return statistics.fmean(last) if last else None


def headline_rows(table: list[TableRecord]) -> list[list[str]]:
    """Table 1 as the landing page and the README show it: one row of text per Table 1 row.

    ours: the test error at the best-validation epoch ± its standard error (finished seeds: their mean;
    else the best so far of the run in progress, marked so); ours - paper with what it says at 2 SE of the
    difference (none for a run in progress before MIN_EPOCHS_TO_COMPARE epochs); the test error at the
    last epoch run; else `no_result_text`.
    """
    rows = []
    for r in table:
        run, ours_estimate = r.best_so_far, estimate(r)
        paper = Estimate.published(r.paper_error)
        if ours_estimate is not None:
            seeds = f" ({r.n_seeds} seeds, std {r.std:.2f})" if r.n_seeds > 1 else ""
            ours = f"{ours_estimate.value:.2f} ± {ours_estimate.se:.2f}{seeds}"
            diff = Difference.between(ours_estimate, paper)
            versus = f"{diff.value:+.2f}, {diff.against_paper()}"
            status = "finished" + (f" ({r.n_seeds} seeds)" if r.n_seeds > 1 else "")
            runs = list(r.finished_runs)
        elif run is not None:
            so_far = run_estimate(run)
            ours = f"{so_far.value:.2f} ± {so_far.se:.2f} so far"
            diff = Difference.between(so_far, paper)
            versus = f"{diff.value:+.2f} so far" if run.epochs_run >= MIN_EPOCHS_TO_COMPARE else "—"
            status, runs = f"in progress (best epoch {run.best_epoch})", [run]
        else:
            rows.append([r.row, f"{r.paper_error:.1f}", no_result_text(r), "", "", "", ""])
            continue
        if any(x in r.other_config for x in runs):
            status += "; another config than the profile's (`rstn train --force` retrains it)"
        if any(x in r.bf16 for x in runs):
            status += "; bf16 (deviation)"
        last = last_epoch_error(runs)
        epochs = ", ".join(str(x.epochs_run) for x in runs)
        rows.append([r.row, f"{r.paper_error:.1f}", ours, versus, "" if last is None else f"{last:.2f}", status,
                     epochs])
    return rows


def headline_summary(table: list[TableRecord]) -> str:
    """The verdict on Table 1 in one sentence: of its rows, which finished ones match the paper (within
    2 SE of the difference), which are better, which worse, and what the others wait for."""
    outcome: dict[str, list[str]] = {"matches": [], "better": [], "worse": []}
    for r in table:
        ours = estimate(r)
        if ours is not None:
            word = Difference.between(ours, Estimate.published(r.paper_error)).against_paper().split()[0]
            outcome[word].append(r.row)
    finished = sum(map(len, outcome.values()))
    in_progress = sum(estimate(r) is None and bool(r.running) for r in table)
    waiting = len(table) - finished - in_progress

    def which(rows: list[str]) -> str:
        return f" ({', '.join(rows)})" if rows else ""

    parts = [f"Of Table 1's {len(table)} rows, {finished} {'has' if finished == 1 else 'have'} finished"]
    if finished:
        parts[0] += (f": {len(outcome['matches'])} {'matches' if len(outcome['matches']) == 1 else 'match'} the "
                     f"paper within 2 standard errors of the difference{which(outcome['matches'])}, "
                     f"{len(outcome['better'])} {'is' if len(outcome['better']) == 1 else 'are'} better"
                     f"{which(outcome['better'])} and {len(outcome['worse'])} worse{which(outcome['worse'])}")
    parts.append(f"{in_progress} {'is' if in_progress == 1 else 'are'} in progress and {waiting} "
                 f"{'has' if waiting == 1 else 'have'} no run yet")
    seeds = max((r.n_seeds for r in table), default=0)
    parts.append("one seed per row, so the standard errors are the test set's alone" if seeds <= 1 else
                 f"up to {seeds} seeds per row")
    return "; ".join(parts) + "."


VARIANT_COLUMNS = ("variant", "what it changes", "compared with", "variant (%)", "the row (%)", "variant - row",
                   "status")


def variant_rows(profile: str = "paper", results_dir: str | Path = "results", seed: int = 0) -> list[list[str]]:
    """The variants of Table 1 rows (`rstn.experiments.ABLATIONS`), each beside the row it varies, seed
    `seed`: per-digit test error (%) at the best-validation epoch ± SE, and their difference."""
    rows = []
    for name, mine, base in variant_pairs(profile, results_dir, seed):
        row = ABLATIONS[name]
        cells = []
        for run in (mine, base):
            if run is None or run.test_error is None:
                cells.append("not run yet" if run is None else "no epoch yet")
            else:
                se = run_estimate(run).se
                cells.append(f"{100 * run.test_error:.2f} ± {se:.2f}" + ("" if run.finished else " so far"))
        both = mine is not None and base is not None and mine.finished and base.finished
        diff = Difference.between(run_estimate(mine), run_estimate(base)) if both else None
        versus = diff.versus() if diff is not None else "—"
        status = "not run yet" if mine is None else \
            mine.status + ("" if mine.finished else f", {counted(mine.epochs_run, 'epoch')}")
        rows.append([name, row.note, row.compare_with, *cells, versus, status])
    return rows


def variant_pairs(profile: str = "paper", results_dir: str | Path = "results", seed: int = 0
                  ) -> list[tuple[str, RunRecord | None, RunRecord | None]]:
    """(variant, its record, the record of the row it varies) for each of `ABLATIONS`, seed `seed`; None
    where a run has no record."""
    return [(name, *(_seed_run(profile, results_dir, r, seed) for r in (name, row.compare_with)))
            for name, row in ABLATIONS.items()]


def _seed_run(profile: str, results_dir: str | Path, row: str, seed: int) -> RunRecord | None:
    path = Path(results_dir) / profile / row / f"seed{seed}" / RUN_FILE
    return read_run(path) if path.exists() else None


RUN_FACTS_COLUMNS = ("row / seed", "status", "epochs (best)", "stopped by", "test err. (%)", "training time",
                     "device", "commit")


def run_facts_rows(runs: Iterable[RunRecord]) -> list[list[str]]:
    """What each run recorded about itself, one row of text per run (chapter 4's run facts).

    The commit is the last session's; `+` marks uncommitted changes, and `(n commits)` a run resumed
    across several. The device names the processors its sessions recorded (`processor_id`, or the model
    name in older records; the oldest lack both).
    """
    rows = []
    for r in runs:
        commit = (r.git["commit"] or "?")[:10] + ("+" if r.git["dirty"] else "")
        commits = {s.get("commit") for s in r.sessions if s.get("commit")}
        if len(commits) > 1:
            commit += f" ({len(commits)} commits)"
        error = "-" if r.test_error is None else f"{100 * r.test_error:.2f}"
        best = "-" if r.best_epoch is None else str(r.best_epoch)
        stopped = {None: "(training)", "time_budget": "time budget (paused)"}.get(r.stop_reason, r.stop_reason)
        # each device and thread count the sessions trained with (a lane of the CPU queue shares the cores),
        # then the precise processor id where a session recorded it, else its model name
        devices = list(dict.fromkeys(_session_device(s) for s in r.sessions if s.get("device"))) or [r.device]
        processors = sorted({s.get("cpu") or s["processor"] for s in r.sessions if s.get("cpu") or s.get("processor")})
        device = "; ".join([*devices, *processors])
        rows.append([f"{r.row} / {r.seed}", r.status, f"{r.epochs_run} ({best})", stopped, error,
                     format_duration(r.wall_time_s), device, commit])
    return rows


def _session_device(session: dict) -> str:
    """A session's device, e.g. "cpu (2 cores, 1 threads, 2 lanes)" for a lane of `rstn train --cpu-queue`."""
    device = session["device"]
    lanes = session.get("lanes", 1)
    return device[:-1] + f", {lanes} lanes)" if lanes > 1 and device.endswith(")") else device


def markdown_table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A GitHub-flavoured Markdown table (for the README: `rstn table --markdown`)."""
    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    header = list(header)
    lines = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [line(cells) for cells in rows]
    return "\n".join(lines)


README_TABLE_MARK = "<!-- table: rstn table --profile paper --markdown -->"
README_TABLE_END = "<!-- end of table -->"


def replace_marked_table(text: str, table: str, mark: str = README_TABLE_MARK, end_mark: str = README_TABLE_END) -> str:
    """`text` (the README) with the lines between the line `mark` and the line `end_mark` replaced by `table`.

    Raises:
        ValueError: `mark` is not a line of `text`, or no line `end_mark` follows it.
    """
    lines = text.split("\n")
    if mark not in lines:
        raise ValueError(f"no line {mark!r} to put the table after")
    start = lines.index(mark) + 1
    if end_mark not in lines[start:]:
        raise ValueError(f"no line {end_mark!r} after {mark!r} to end the table at")
    end = lines.index(end_mark, start)
    return "\n".join(lines[:start] + table.split("\n") + lines[end:])


def markdown_headline(table: list[TableRecord]) -> str:
    """The headline table in Markdown (`rstn.claims.markdown_report` puts the verdict and claims above it)."""
    return markdown_table(HEADLINE_COLUMNS, headline_rows(table))


def format_table(table: list[TableRecord]) -> str:
    """Plain-text Table 1: per-digit test error (%), ours as mean ± sample std over seeds."""
    if not table:
        return "(no rows)"
    profile = table[0].profile
    lines = [f"Table 1, per-digit test error (%) at the best-validation epoch; profile {profile!r}: "
             f"{PROFILES[profile].description}",
             "ours: the mean ± std over seeds; SE: its standard error (`rstn.uncertainty`); last: the test error at "
             "the last epoch run",
             f"{'row':<12} {'model':<8} {'d':>2} {'paper':>6}  {'ours':<15} {'SE':>5} {'last':>6} {'n':>2}  "
             f"{'seq. err':>8}  device"]
    for r in table:
        ours, seq, se, last = "-", "-", "-", "-"
        if r.mean is not None:
            ours = f"{r.mean:.2f}" + (f" ± {r.std:.2f}" if r.std is not None else "")
            seq, se = f"{r.sequence_mean:.2f}", f"{estimate(r).se:.2f}"
            last = f"{last_epoch_error(r.finished_runs):.2f}"
        notes = []
        if r.best_so_far is not None:
            run = r.best_so_far
            notes.append(f"in progress: {100 * run.test_error:.2f} at epoch {run.best_epoch}, "
                         f"{counted(run.epochs_run, 'epoch')} so far")
        elif r.running:
            notes.append("in progress: no epoch yet")
        if r.n_diverged:
            notes.append(f"{r.n_diverged} diverged")
        if r.other_config:
            notes.append(f"{len(r.other_config)} made with another config than the profile's")
        if r.bf16:
            notes.append(f"{len(r.bf16)} in bf16 (deviation)")
        devices = ", ".join(r.devices or sorted({run.device for run in r.running})) or "-"
        lines.append(f"{r.row:<12} {r.model:<8} {r.d if r.d is not None else '-':>2} {r.paper_error:>6.1f}  "
                     f"{ours:<15} {se:>5} {last:>6} {r.n_seeds:>2}  {seq:>8}  {devices}"
                     + (f"  ({'; '.join(notes)})" if notes else ""))
    return "\n".join(lines)
