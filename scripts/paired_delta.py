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

from restorekit_tools.compare import read_results, summarize


def paired(path: str, a: str, b: str) -> list[tuple[str, float, float, float, int, int]]:
    """(metric, mean of b - a, low, high, n, files where b is above a) for every metric both rows have,
    paired by file as `summarize` pairs a row with its baseline."""
    rows = [r for r in read_results(path) if r["pipeline"] in (a, b)]
    value = {(r["metric"], r["pipeline"], r["file"]): r["value"] for r in rows
             if r["metric"] and r["value"] is not None and not r["error"]}
    out = []
    for s in summarize(rows, a):
        if s.pipeline != b or s.diff is None or s.diff.n == 0:
            continue
        above = sum(v > value[(m, a, f)] for (m, p, f), v in value.items()
                    if m == s.metric and p == b and (m, a, f) in value)
        out.append((s.metric, s.diff.mean, s.diff.low, s.diff.high, s.diff.n, above))
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
