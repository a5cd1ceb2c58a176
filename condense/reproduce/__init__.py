"""The paper-reproduction kit: the paper's values as a table, and runs checked against them.

>>> from condense.reproduce import paper_table, check_runs
>>> paper_table()                                   # one row per value read off the paper's figures
>>> report = check_runs(["results/paper"])          # our rho/tau, the paper's, the difference, notes
>>> report[report.status == "outside"]
"""

from typing import TYPE_CHECKING

from condense.lazy import lazy_exports

if TYPE_CHECKING:
    from condense.reproduce.check import CHECK_COLUMNS, STATUSES, check_runs, failing, fairness_notes
    from condense.reproduce.runs import FailedRun, FoundRun, canonical_model, collect_runs
    from condense.reproduce.table import REQUIRED_COLUMNS, TABLE_COLUMNS, paper_table, read_table

__all__ = ["paper_table", "read_table", "check_runs", "failing", "fairness_notes", "collect_runs", "canonical_model",
           "FoundRun", "FailedRun", "TABLE_COLUMNS", "REQUIRED_COLUMNS", "CHECK_COLUMNS", "DEFAULT_TOLERANCE",
           "STATUSES"]

DEFAULT_TOLERANCE = 0.1  # largest |ours - paper| of Spearman/Kendall counted as inside (here: no pandas needed)

lazy_exports(__name__, {
    "condense.reproduce.check": ("CHECK_COLUMNS", "STATUSES", "check_runs", "failing", "fairness_notes"),
    "condense.reproduce.runs": ("FailedRun", "FoundRun", "canonical_model", "collect_runs"),
    "condense.reproduce.table": ("REQUIRED_COLUMNS", "TABLE_COLUMNS", "paper_table", "read_table"),
})
