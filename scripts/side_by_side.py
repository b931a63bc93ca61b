"""One side-by-side table of several `restorekit compare` runs (one per degradation preset).

    python scripts/side_by_side.py OUT/README.md DIR... [--title TEXT] [--intro TEXT] [--figures GLOB...]

Each DIR is a compare output (results.csv); its degradation preset is read from its
summary.md. For every preset and metric the table has one column per pipeline: the mean
and, against the degraded input, the paired difference with its 95 % t-interval and a
verdict (better/worse where the interval excludes 0, as in `restorekit compare`).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from restorekit_tools.compare.report import diff_verdict, read_csv
from restorekit_tools.compare.stats import summarize
from restorekit.plugins import get_registry


def preset_of(run_dir: Path) -> str:
    match = re.search(r"degraded with `([^`]+)`", (run_dir / "summary.md").read_text())
    return match.group(1) if match else run_dir.name


def table(run_dir: Path) -> list[str]:
    rows = read_csv(run_dir / "results.csv")
    stats = [s for s in summarize(rows, baseline="degraded") if s.pipeline != "clean"]
    pipelines = list(dict.fromkeys(s.pipeline for s in stats))
    metrics = get_registry().metrics
    lines = ["| metric | " + " | ".join(pipelines) + " |", "|---|" + "---|" * len(pipelines)]
    for metric in dict.fromkeys(s.metric for s in stats):
        higher = getattr(metrics.get(metric), "higher_is_better", True)
        cells = []
        for p in pipelines:
            s = next((s for s in stats if s.pipeline == p and s.metric == metric), None)
            if s is None:
                cells.append("—")
            elif s.diff is None:
                cells.append(f"{s.stat.mean:.3f}")
            else:
                d = s.diff
                cells.append(f"{s.stat.mean:.3f} (Δ {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] "
                             f"{diff_verdict(d, higher)})")
        arrow = "↑" if higher else "↓"
        lines.append(f"| {metric} {arrow} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--title", default="Side-by-side comparison")
    parser.add_argument("--intro", default="")
    parser.add_argument("--figures", nargs="*", default=["*"],
                        help="Glob patterns of the figures to link (the ones committed); default all.")
    args = parser.parse_args()
    lines = [f"# {args.title}", ""]
    if args.intro:
        lines += [args.intro, ""]
    for run in args.runs:
        rel = os.path.relpath(run, args.out.parent)
        lines += [f"## `{preset_of(run)}` ([{rel}/summary.md]({rel}/summary.md))", "", *table(run), ""]
        figures = sorted({f for pattern in args.figures for f in (run / "figures").glob(f"{pattern}.png")})
        if figures:
            lines += [f"Spectrograms: {', '.join(f'[{f.stem}]({rel}/figures/{f.name})' for f in figures)}", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
