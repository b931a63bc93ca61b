"""Spearman correlation of the quality estimator (cqs) with ViSQOL MOS-LQO on held-out clips.

    python scripts/evaluate_cqs.py data/heldout --presets lowres-8k generative-mix gaps [--json out.json]

Each clean clip is scored as is and after each degradation preset (seeded per clip);
ViSQOL compares against the clean clip, cqs sees only the degraded audio.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from restorekit.batch import file_seed
from restorekit.io import read_audio
from restorekit.pipeline import find_degradation, load_pipeline
from restorekit.plugins import get_registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clean_dir", type=Path)
    parser.add_argument("--presets", nargs="+", default=["lowres-8k", "generative-mix", "gaps"])
    parser.add_argument("--checkpoint", default="cqs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    metrics = get_registry().metrics
    visqol, cqs = metrics["visqol"](), metrics["cqs"](checkpoint=args.checkpoint)
    pipelines = {p: load_pipeline(find_degradation(p), device="cpu") for p in args.presets}
    rows = []
    for f in sorted(args.clean_dir.glob("*.wav")):
        clean = read_audio(f)
        versions = {"clean": clean}
        for name, pipeline in pipelines.items():
            versions[name] = pipeline.run(clean, seed=file_seed(0, Path(f.name))).audio
        for name, audio in versions.items():
            rows.append({"file": f.name, "version": name, "visqol": visqol(audio, clean), "cqs": cqs(audio)})
    v, c = np.array([r["visqol"] for r in rows]), np.array([r["cqs"] for r in rows])
    rho, p = stats.spearmanr(c, v)
    # 95 % CI of Spearman's rho by Fisher's z (standard error 1.06 / sqrt(n - 3))
    z, se = np.arctanh(rho), 1.06 / np.sqrt(len(v) - 3)
    lo, hi = np.tanh(z - 1.96 * se), np.tanh(z + 1.96 * se)
    files = sorted({r["file"] for r in rows})
    summary = {"n": len(rows), "files": len(files), "spearman": rho, "ci95": [lo, hi], "p": p,
               "mae_vs_visqol": float(np.mean(np.abs(c - v))),
               "by_version": {name: {"visqol": float(np.mean([r["visqol"] for r in rows if r["version"] == name])),
                                     "cqs": float(np.mean([r["cqs"] for r in rows if r["version"] == name]))}
                              for name in ["clean", *args.presets]}}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
