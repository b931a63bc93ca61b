"""Paired difference between two rows of `restorekit compare` results, per metric.

`summary.md` gives each pipeline's difference against the degraded input (or against the row
`restorekit compare --against ROW` names); this gives, from a results.csv already written, the
difference between any two rows measured on the same files (B − A, by file, with its 95 %
t-interval, and on how many files B is above), which is what choosing between two versions
needs. Several results.csv files may be given (one line per file and metric).

    python scripts/paired_delta.py runs/cmp/results.csv --a sr-v2 --b sr-v3
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict

from restorekit_tools.compare.stats import mean_ci


def paired(path: str, a: str, b: str) -> list[tuple[str, float, float, float, int, int]]:
    """(metric, mean of b - a, low, high, n, files where b is above a) for every metric both rows have."""
    values: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["metric"] and row["value"] and not row.get("error") and row["pipeline"] in (a, b):
                values[row["metric"]][row["pipeline"]][row["file"]] = float(row["value"])
    out = []
    for metric, rows in values.items():
        files = sorted(set(rows.get(a, {})) & set(rows.get(b, {})))
        if not files:
            continue
        diffs = [rows[b][f] - rows[a][f] for f in files]
        stat = mean_ci(diffs)
        out.append((metric, stat.mean, stat.low, stat.high, stat.n, sum(d > 0 for d in diffs)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", help="results.csv of restorekit compare")
    parser.add_argument("--a", required=True, help="the row to subtract (e.g. the current version)")
    parser.add_argument("--b", required=True, help="the row compared with it")
    args = parser.parse_args()
    for path in args.results:
        for metric, mean, low, high, n, above in paired(path, args.a, args.b):
            print(f"{path}\t{metric}\t{args.b} - {args.a} {mean:+.4f} [{low:+.4f}, {high:+.4f}]\tn={n}\t"
                  f"{args.b} above on {above}")


if __name__ == "__main__":
    main()
