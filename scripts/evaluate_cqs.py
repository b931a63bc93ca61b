"""Spearman correlation of the quality estimator (cqs) with ViSQOL MOS-LQO on held-out clips.

    python scripts/evaluate_cqs.py data/heldout --presets lowres-8k generative-mix gaps [--json out.json]
    python scripts/evaluate_cqs.py data/heldout --clips runs/cqs-eval \\
        --presets lowres-8k generative-mix gaps sr-lowpass text-to-music \\
        --restored pipelines/training/restored-*.yaml \\
        --checkpoint runs/cqs-v2-shipped/cqs.safetensors --checkpoint cqs --json docs/results/cqs-groups-v5.json

Each clean clip is scored as is and after each degradation preset (group `degraded`, with
the clean clips) and after each `--restored` recipe (group `restored`: a degradation
followed by a restoration, e.g. pipelines/training/restored-unet.yaml), seeded per clip;
everything is brought to 32 kHz mono. ViSQOL compares against the clean clip, cqs sees
only the clip. Spearman's rho with a 95 % interval is reported per group and over all,
for every `--checkpoint`: by Fisher's z (treats the clips as independent) and by a
bootstrap over tracks (excerpts `TRACK.K.wav` of one track resampled together). Each
checkpoint after the first is also compared with the first on the same clips
(`differences`: its rho minus the first's per group, with a track-bootstrap interval).
`--pooled A.json B.json ...` makes that comparison over the rows of earlier runs together
(e.g. the held-out and the validation excerpts) instead of scoring anything.

`--clips DIR` keeps the processed clips (float WAV) and their ViSQOL scores, so a rerun,
e.g. with another checkpoint, only runs cqs.

Ranking restorations of one clip, which is what a user choosing between methods needs:
`--same-input lowres-8k=restored-unet,restored-bwe-lowres` (repeatable) names versions made
from the same damaged clip; for every pair of them on one excerpt whose ViSQOL differs by
at least 0.1, cqs agrees when it orders them the same way (`same_input_pairs`). Also
reported for the restored group: Spearman within each version (`within_version`), and the
ceiling of a score that only knows which recipe made a clip (`recipe_mean_oracle`: the
version's mean ViSQOL as the score).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from restorekit.batch import file_seed
from restorekit.dsp import convert_channels, resample
from restorekit.io import read_audio, write_audio
from restorekit.metrics import MetricError
from restorekit.pipeline import find_degradation, load_pipeline
from restorekit.plugins import get_registry

RATE = 32000


def by_group(rows: list[dict]) -> dict[str, list[dict]]:
    """The rows over all, and of each group (degraded, restored)."""
    return {"all": rows, **{g: [r for r in rows if r["group"] == g] for g in ("degraded", "restored")}}


def track_bootstrap(tracks, rng: np.random.Generator, resamples: int = 2000):
    """Row indices of `resamples` bootstrap samples that draw whole tracks (a track's excerpts together)."""
    tracks = np.asarray(tracks)
    names = sorted(set(tracks))
    index = {t: np.flatnonzero(tracks == t) for t in names}
    for _ in range(resamples):
        yield np.concatenate([index[names[k]] for k in rng.integers(0, len(names), len(names))])


def varied(*columns: np.ndarray) -> bool:
    """Whether every column takes more than one value (Spearman's rho is defined)."""
    return all(len(set(x)) > 1 for x in columns)


def spearman(c: np.ndarray, v: np.ndarray, tracks: list[str], rng: np.random.Generator) -> dict:
    """rho, Fisher-z 95 % CI, and a 95 % CI from a bootstrap over tracks."""
    rho, p = stats.spearmanr(c, v)
    z, se = np.arctanh(rho), 1.06 / np.sqrt(len(v) - 3)
    boot = [stats.spearmanr(c[pick], v[pick])[0] for pick in track_bootstrap(tracks, rng)
            if varied(v[pick], c[pick])]
    return {"n": len(v), "tracks": len(set(tracks)), "spearman": float(rho), "p": float(p),
            "ci95": [float(np.tanh(z - 1.96 * se)), float(np.tanh(z + 1.96 * se))],
            "ci95_track_bootstrap": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
            "mae_vs_visqol": float(np.mean(np.abs(c - v)))}


def rho_difference(rows: list[dict], base: str, other: str, rng: np.random.Generator) -> dict | None:
    """other's Spearman rho minus base's over the same clips, with a 95 % interval from a bootstrap over tracks.

    None where fewer than four clips have both scores (as `spearman` skips such groups).
    """
    rows = [r for r in rows if r["cqs"][base] is not None and r["cqs"][other] is not None]
    if len(rows) <= 3:
        return None
    v = np.array([r["visqol"] for r in rows])
    a, b = (np.array([r["cqs"][ck] for r in rows]) for ck in (base, other))
    tracks = [r["track"] for r in rows]
    boot = [stats.spearmanr(b[pick], v[pick])[0] - stats.spearmanr(a[pick], v[pick])[0]
            for pick in track_bootstrap(tracks, rng) if varied(v[pick], a[pick], b[pick])]
    return {"base": base, "n": len(rows), "tracks": len(set(tracks)),
            "delta": float(stats.spearmanr(b, v)[0] - stats.spearmanr(a, v)[0]),
            "ci95_track_bootstrap": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]}


def differences(rows: list[dict], checkpoints: list[str]) -> dict:
    """Per later checkpoint and group (all, degraded, restored): `rho_difference` against the first checkpoint."""
    groups = by_group(rows)
    return {ck: {g: rho_difference(rs, checkpoints[0], ck, np.random.default_rng(0)) for g, rs in groups.items()}
            for ck in checkpoints[1:]}


def pooled(paths: list[Path]) -> dict:
    """`differences` over the rows of earlier --json outputs together, for the checkpoints all of them scored."""
    runs = [json.loads(p.read_text()) for p in paths]
    rows = [r for run in runs for r in run["rows"]]
    checkpoints = [ck for ck in runs[0]["summary"]["checkpoints"] if all(ck in r["cqs"] for r in rows)]
    return {"files": [str(p) for p in paths], "clips": len(rows), "differences": differences(rows, checkpoints)}


def ranking(rows: list[dict], checkpoints: list[str], families: list[list[str]]) -> dict:
    """Per checkpoint: same-input pair agreement, within-version Spearman (restored), and the recipe oracle."""
    import itertools

    by_file: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_file.setdefault(r["file"], {})[r["version"]] = r
    restored = [r for r in rows if r["group"] == "restored"]
    versions = sorted({r["version"] for r in restored})
    out: dict = {}
    if restored:
        means = {v: np.mean([r["visqol"] for r in restored if r["version"] == v]) for v in versions}
        out["recipe_mean_oracle"] = float(stats.spearmanr([r["visqol"] for r in restored],
                                                          [means[r["version"]] for r in restored])[0])
    for ck in checkpoints:
        agree = total = 0
        for family in families:
            for versions_of in by_file.values():
                for a, b in itertools.combinations([v for v in family if v in versions_of], 2):
                    ra, rb = versions_of[a], versions_of[b]
                    dv = ra["visqol"] - rb["visqol"]
                    if abs(dv) < 0.1 or ra["cqs"][ck] is None or rb["cqs"][ck] is None:
                        continue
                    total += 1
                    agree += dv * (ra["cqs"][ck] - rb["cqs"][ck]) > 0
        within = {v: float(stats.spearmanr([r["visqol"] for r in restored if r["version"] == v],
                                           [r["cqs"][ck] for r in restored if r["version"] == v])[0])
                  for v in versions}
        out[ck] = {"same_input_pairs": {"agree": agree, "pairs": total, "fraction": agree / total if total else None},
                   "within_version": within}
    return out


def to_clip(audio, frames: int):
    """32 kHz mono, as long as the clean clip (what the training Degrader does)."""
    out = convert_channels(resample(audio, RATE), 1)
    x = out.samples[:, :frames]
    if x.shape[1] < frames:
        import torch

        x = torch.nn.functional.pad(x, (0, frames - x.shape[1]))
    return out.with_samples(x.contiguous())


def score(metric, audio) -> float | None:
    """The metric's value, or None where it refuses the clip (cqs: silent or near-silent)."""
    try:
        return metric(audio)
    except MetricError as exc:
        print(f"  {exc}")
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clean_dir", type=Path, nargs="?", help="the clean clips (not with --pooled)")
    parser.add_argument("--glob", default="*.wav", help="which clean clips, e.g. '*.[02].wav' for two excerpts a track")
    parser.add_argument("--presets", nargs="+", default=["lowres-8k", "generative-mix", "gaps"])
    parser.add_argument("--restored", nargs="*", default=[], help="recipes whose outputs form the group 'restored'")
    parser.add_argument("--checkpoint", action="append", help="cqs checkpoint(s) to evaluate (default: cqs)")
    parser.add_argument("--clips", type=Path, help="keep the processed clips and their ViSQOL scores here")
    parser.add_argument("--same-input", action="append", default=[], metavar="DAMAGE=RESTORED,...",
                        help="versions made from one damaged clip, for the pairwise ranking agreement")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pooled", nargs="+", type=Path, metavar="JSON",
                        help="only compare the checkpoints over the rows of these earlier --json outputs together")
    args = parser.parse_args()
    if args.pooled:
        result = pooled(args.pooled)
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return
    if args.clean_dir is None:
        parser.error("give the clean clips' folder, or --pooled JSON...")
    checkpoints = args.checkpoint or ["cqs"]
    metrics = get_registry().metrics
    visqol = metrics["visqol"]()
    cqs = {ck: metrics["cqs"](checkpoint=ck) for ck in checkpoints}
    versions = {"clean": ("degraded", None)}
    versions.update({Path(p).stem: ("degraded", p) for p in args.presets})
    versions.update({Path(p).stem: ("restored", p) for p in args.restored})
    pipelines = {name: load_pipeline(find_degradation(p), device="cpu")
                 for name, (_, p) in versions.items() if p is not None}
    cache_path = args.clips / "visqol.json" if args.clips else None
    scores = json.loads(cache_path.read_text()) if cache_path and cache_path.is_file() else {}
    rows = []
    for f in sorted(args.clean_dir.glob(args.glob)):
        original = read_audio(f)
        clean = to_clip(original, original.frames)
        for name, (group, _) in versions.items():
            key = f"{name}/{f.name}"
            stored = args.clips / key if args.clips else None
            if stored is not None and stored.is_file() and key in scores:
                audio = read_audio(stored)
            else:
                audio = clean if name == "clean" else to_clip(
                    pipelines[name].run(clean, seed=file_seed(0, Path(f.name))).audio, clean.frames)
                scores[key] = visqol(audio, clean)
                if stored is not None:
                    stored.parent.mkdir(parents=True, exist_ok=True)
                    write_audio(stored, audio, bit_depth=32)
                    cache_path.write_text(json.dumps(scores, indent=1) + "\n")
            rows.append({"file": f.name, "track": f.name.rsplit(".", 2)[0], "version": name, "group": group,
                         "visqol": scores[key], "cqs": {ck: score(m, audio) for ck, m in cqs.items()}})
        print(f"{f.name}: " + ", ".join(f"{r['version']} {r['visqol']:.2f}/"
                                        + "/".join(f"{x:.2f}" if x is not None else "flagged"
                                                   for x in r["cqs"].values())
                                        for r in rows if r["file"] == f.name), flush=True)
    groups = by_group(rows)
    summary: dict = {"clips": len({r["file"] for r in rows}), "checkpoints": {}}
    for ck in checkpoints:
        per_group = {}
        for g, rs in groups.items():
            flagged = sum(r["cqs"][ck] is None for r in rs)
            rs = [r for r in rs if r["cqs"][ck] is not None]
            if len(rs) > 3:
                per_group[g] = spearman(np.array([r["cqs"][ck] for r in rs]), np.array([r["visqol"] for r in rs]),
                                        [r["track"] for r in rs], np.random.default_rng(0))
                per_group[g]["flagged_silent"] = flagged
        summary["checkpoints"][ck] = per_group
    summary["differences"] = differences(rows, checkpoints)
    summary["ranking"] = ranking(rows, checkpoints, [[item.split("=")[0], *item.split("=")[1].split(",")]
                                                      for item in args.same_input])
    summary["by_version"] = {
        name: {"group": group, "visqol": float(np.mean([r["visqol"] for r in rows if r["version"] == name])),
               **{f"cqs[{ck}]": float(np.mean([r["cqs"][ck] for r in rows
                                                 if r["version"] == name and r["cqs"][ck] is not None]))
                  for ck in checkpoints}}
        for name, (group, _) in versions.items()}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
