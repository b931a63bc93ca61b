"""Compare restoration pipelines: degrade clean files (or take real inputs), restore, measure, report.

    import restorekit
    rows = restorekit.compare(["zero_shot", "pipelines/dsp_chain.yaml"], clean="clean/",
                              degrade="lowres-8k", out_dir="report/")

`compare` returns one dict per file x pipeline x metric; `summarize(rows)` gives the
means, confidence intervals and paired differences that summary.md shows.
`restorekit.compare` is this package's `compare`, for callers of the core package.
"""

from __future__ import annotations

from restorekit_tools.compare.run import CLEAN, DEGRADED, INPUT, CompareRun, compare, run_comparison
from restorekit_tools.compare.stats import Stat, SummaryRow, mean_ci, summarize

__all__ = ["compare", "run_comparison", "summarize", "mean_ci", "read_results", "CompareRun", "Stat",
           "SummaryRow", "CLEAN", "DEGRADED", "INPUT"]


def read_results(path):
    """Rows back from a results.csv written by `compare`."""
    from restorekit_tools.compare.report import read_csv

    return read_csv(path)
