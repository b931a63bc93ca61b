"""Start-up time of `restorekit --help` and `restorekit plugins` (fresh processes), and whether torch loads.

    python benchmarks/bench_startup.py [--runs 15]

Prints the minimum and median wall time of each command over the runs (the minimum is
the least disturbed by other load), and Python's own start-up for reference.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {"python -c pass": [sys.executable, "-c", "pass"],
            "restorekit --help": [sys.executable, "-m", "restorekit", "--help"],
            "restorekit plugins": [sys.executable, "-m", "restorekit", "plugins"]}
TORCH_CHECK = ("import sys, restorekit.cli as c; from click.testing import CliRunner; "
               "CliRunner().invoke(c.cli, ['--help']); CliRunner().invoke(c.cli, ['plugins']); "
               "print('torch' in sys.modules)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    for label, command in COMMANDS.items():
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        print(f"{label:<20} min {min(times):.3f} s  median {statistics.median(times):.3f} s  ({args.runs} runs)")
    imported = subprocess.run([sys.executable, "-c", TORCH_CHECK], capture_output=True, text=True).stdout.strip()
    print(f"torch imported by --help and plugins: {imported}")


if __name__ == "__main__":
    main()
