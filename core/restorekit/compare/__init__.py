"""Compare restoration pipelines: degrade clean files (or take real inputs), restore, measure, report.

    import restorekit
    rows = restorekit.compare(["zero_shot", "pipelines/dsp_chain.yaml"], clean="clean/",
                              degrade="lowres-8k", out_dir="report/")

`compare` returns one dict per file x pipeline x metric; `summarize(rows)` gives the
means, confidence intervals and paired differences that summary.md shows. This
package is also callable itself, so `restorekit.compare(...)` works however it was
imported.
"""

from __future__ import annotations

import sys
import types

from restorekit.compare.run import CLEAN, DEGRADED, INPUT, CompareRun, compare, run_comparison
from restorekit.compare.stats import Stat, SummaryRow, mean_ci, summarize

__all__ = ["compare", "run_comparison", "summarize", "mean_ci", "read_results", "CompareRun", "Stat",
           "SummaryRow", "CLEAN", "DEGRADED", "INPUT"]


def read_results(path):
    """Rows back from a results.csv written by `compare`."""
    from restorekit.compare.report import read_csv

    return read_csv(path)


class _CallableModule(types.ModuleType):
    """Lets `restorekit.compare(...)` call `compare` even after `import restorekit.compare`,
    which binds the package (not the function) to `restorekit.compare`."""

    def __call__(self, *args, **kwargs):
        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
