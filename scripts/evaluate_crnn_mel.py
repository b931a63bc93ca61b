"""Mel-domain gains of CRNN checkpoints on held-out clips: the metrics of the published table.

    python scripts/evaluate_crnn_mel.py data/heldout --checkpoints crnn crnn-direct \
        --presets generative-mix lowres-8k --out docs/results/crnn-mel

Each clean clip is degraded with each preset (seeded per file as `restorekit compare`
does); the model's restored mel (its output, before any resynthesis) and the degraded
input's mel are compared with the clean clip's mel on the model's own normalized log-mel
features (128 bands to 16 kHz, 110 dB mapped to [0, 1]):

- L1: mean absolute difference, reported in dB (x 110);
- LSD: mean over frames of the RMS over bands of the log10-power difference;
- cosine: cosine similarity of the flattened normalized features.

Writes OUT/mel_metrics.json and OUT/summary.md (means and 95 % t-intervals of the paired
differences restored - degraded).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from restorekit.batch import file_seed
from restorekit_tools.compare.report import diff_verdict
from restorekit_tools.compare.stats import mean_ci
from restorekit.dsp import convert_channels, resample
from restorekit.io import read_audio
from restorekit.pipeline import find_degradation, load_pipeline
from restorekit_plugins.crnn import SAMPLE_RATE, load_crnn
from restorekit_plugins.nets.crnn_mel import FLOOR_DB, TOP_DB, MelFrontend

METRICS = {"mel_l1_db": False, "mel_lsd": False, "mel_cosine": True}  # name: higher is better


def mel_metrics(est: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Metrics of (mels, steps) normalized features against a reference."""
    span = TOP_DB - FLOOR_DB
    diff_db = (est - ref) * span
    lsd = torch.sqrt((diff_db / 10).square().mean(0)).mean()
    cos = torch.nn.functional.cosine_similarity(est.flatten(), ref.flatten(), dim=0)
    return {"mel_l1_db": float(diff_db.abs().mean()), "mel_lsd": float(lsd), "mel_cosine": float(cos)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clean_dir", type=Path)
    parser.add_argument("--checkpoints", nargs="+", default=["crnn", "crnn-direct"])
    parser.add_argument("--presets", nargs="+", default=["generative-mix", "lowres-8k"])
    parser.add_argument("--seed", type=int, default=0, help="Base seed, as `restorekit compare --seed`.")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    models = {name: load_crnn(name, "cpu") for name in args.checkpoints}
    front = MelFrontend(SAMPLE_RATE, next(iter(models.values())).n_mels)
    rows = []
    files = sorted(args.clean_dir.glob("*.wav"))
    for preset in args.presets:
        degrade = load_pipeline(find_degradation(preset), device="cpu")
        for f in files:
            clean = convert_channels(resample(read_audio(f), SAMPLE_RATE), 1)
            degraded = degrade.run(clean, seed=file_seed(args.seed, Path(f.name))).audio
            ref = front.features(clean.samples)[0, 0]
            inp = front.features(degraded.samples[:, :clean.frames])
            rows.append({"preset": preset, "file": f.name, "version": "degraded", **mel_metrics(inp[0, 0], ref)})
            for name, model in models.items():
                out = model.restore(inp)[0, 0]
                rows.append({"preset": preset, "file": f.name, "version": name, **mel_metrics(out, ref)})
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["# CRNN: mel-domain metrics on held-out clips", "",
             f"{len(files)} clean excerpts of held-out tracks (`{args.clean_dir}`), each degraded by the preset; "
             "the model's restored mel (before resynthesis) and the degraded mel against the clean mel. "
             "Δ = restored − degraded, mean and 95 % t-interval over excerpts; `python "
             "scripts/evaluate_crnn_mel.py`.", ""]
    summary = {}
    for preset in args.presets:
        lines += [f"## {preset}", "", "| version | " + " | ".join(METRICS) + " |",
                  "| --- | " + " | ".join("---" for _ in METRICS) + " |"]
        base = {m: np.array([r[m] for r in rows if r["preset"] == preset and r["version"] == "degraded"])
                for m in METRICS}
        for version in ["degraded", *args.checkpoints]:
            cells = []
            for m, higher in METRICS.items():
                vals = np.array([r[m] for r in rows if r["preset"] == preset and r["version"] == version])
                mean = float(vals.mean())
                summary.setdefault(preset, {}).setdefault(version, {})[m] = {"mean": mean}
                if version == "degraded":
                    cells.append(f"{mean:.4f}")
                    continue
                d = mean_ci(vals - base[m])
                verdict = diff_verdict(d, higher)
                summary[preset][version][m].update({"delta": d.mean, "ci95": [d.low, d.high]})
                cells.append(f"{mean:.4f} (Δ {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}] {verdict})")
            lines.append(f"| {version} | " + " | ".join(cells) + " |")
        lines.append("")
    (args.out / "summary.md").write_text("\n".join(lines))
    (args.out / "mel_metrics.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
