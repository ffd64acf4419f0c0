"""The run records and Table 1 from them, under the one name the chapters, tests and scripts import.

The code lives in two modules: `rstn.records`, a run's record (run.json: `RunRecord`, reading, writing,
validating; the runs of a profile; which profile to show), and `rstn.table`, Table 1 from the records
(ours vs the paper, the headline, the variants, the run facts, Markdown for the README). Inside the
package, import from those; ``rstn.results.X`` keeps working for every name below.
"""

from rstn.records import (
    ERROR_FIELDS,
    FINAL_FIELDS,
    HISTORY_FIELDS,
    RUN_FILE,
    SCHEMA_VERSION,
    STATUSES,
    STOP_REASONS,
    TIMING_FIELDS,
    ResultsError,
    RunRecord,
    best_profile,
    display_profile,
    final_metrics,
    history_excerpt,
    load_runs,
    read_run,
    without_timing,
    write_run,
)
from rstn.table import (
    HEADLINE_COLUMNS,
    MIN_EPOCHS_TO_COMPARE,
    README_TABLE_END,
    README_TABLE_MARK,
    RUN_FACTS_COLUMNS,
    VARIANT_COLUMNS,
    TableRecord,
    default_table_profile,
    estimate,
    format_table,
    headline_rows,
    headline_summary,
    last_epoch_error,
    load_table,
    markdown_headline,
    markdown_table,
    no_result_text,
    not_run_text,
    replace_marked_table,
    run_estimate,
    run_facts_rows,
    test_digits,
    variant_pairs,
    variant_rows,
)

__all__ = [
    "ERROR_FIELDS", "FINAL_FIELDS", "HISTORY_FIELDS", "RUN_FILE", "SCHEMA_VERSION", "STATUSES", "STOP_REASONS",
    "TIMING_FIELDS", "ResultsError", "RunRecord", "best_profile", "display_profile", "final_metrics",
    "history_excerpt", "load_runs", "read_run", "without_timing", "write_run",
    "HEADLINE_COLUMNS", "MIN_EPOCHS_TO_COMPARE", "README_TABLE_END", "README_TABLE_MARK", "RUN_FACTS_COLUMNS",
    "VARIANT_COLUMNS", "TableRecord", "default_table_profile", "estimate", "format_table", "headline_rows",
    "headline_summary", "last_epoch_error", "load_table", "markdown_headline", "markdown_table",
    "no_result_text", "not_run_text", "replace_marked_table", "run_estimate", "run_facts_rows", "test_digits",
    "variant_pairs", "variant_rows",
]
