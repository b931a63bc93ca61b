"""Training data: clean files split by file, decoded once, random segments degraded on the fly."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from restorekit.audio import Audio
from restorekit.dsp import convert_channels, resample
from restorekit.errors import RestorekitError
from restorekit.io import READ_EXTENSIONS, read_audio
from restorekit.io import find_audio_files as audio_files_below

log = logging.getLogger("restorekit")
SPLITS = ("train", "val", "test")


def find_audio_files(dirs: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        d = Path(d)
        if d.is_file():
            files.append(d)
        elif d.is_dir():
            files += audio_files_below(d)
        else:
            raise RestorekitError(f"--data {d}: no such file or directory")
    if not files:
        raise RestorekitError(f"no audio files ({', '.join(READ_EXTENSIONS)}) under {', '.join(map(str, dirs))}")
    return files


def split_of(path: Path, val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """train, val or test for a file, from a hash of its name: stable, whole tracks only."""
    h = int.from_bytes(hashlib.sha256(path.name.encode()).digest()[:8], "little") / 2**64
    if h < test_fraction:
        return "test"
    if h < test_fraction + val_fraction:
        return "val"
    return "train"


def split_files(files: Sequence[Path], val_fraction: float = 0.1,
                test_fraction: float = 0.1) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {s: [] for s in SPLITS}
    for f in files:
        out[split_of(f, val_fraction, test_fraction)].append(f)
    if not out["train"] or not out["val"]:  # tiny data sets: keep both non-empty
        ordered = sorted(files, key=lambda p: p.name)
        out = {"train": ordered[:-1] or ordered, "val": ordered[-1:], "test": []}
    return out


def load_mono(path: Path, sample_rate: int, cache_dir: Path | None = None) -> np.ndarray:
    """A file as mono float32 at `sample_rate`, decoded once and cached as .npy (memory-mapped)."""
    if cache_dir is not None:
        key = hashlib.sha256(f"{path.resolve()}:{path.stat().st_mtime_ns}:{sample_rate}".encode()).hexdigest()[:20]
        cached = cache_dir / f"{key}.npy"
        if cached.is_file():
            return np.load(cached, mmap_mode="r")
    audio = read_audio(path)
    audio = resample(convert_channels(audio, 1), sample_rate)
    x = audio.numpy()[0]
    peak = float(np.abs(x).max())
    if peak > 1.0:  # decoded Vorbis can exceed full scale
        x = x / peak
    x = np.ascontiguousarray(x, dtype=np.float32)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npy")
        np.save(tmp, x)
        tmp.replace(cached)
        return np.load(cached, mmap_mode="r")
    return x


@dataclass
class SegmentSource:
    """Random segments of a set of decoded tracks, skipping near-silent ones."""

    tracks: list[np.ndarray]
    names: list[str]
    segment: int
    min_rms_db: float = -50.0

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        lengths = np.array([len(t) for t in self.tracks], dtype=np.float64)
        p = lengths / lengths.sum()
        for _ in range(20):
            t = self.tracks[rng.choice(len(self.tracks), p=p)]
            if len(t) <= self.segment:
                seg = np.pad(np.asarray(t), (0, self.segment - len(t)))
            else:
                start = int(rng.integers(0, len(t) - self.segment))
                seg = np.asarray(t[start:start + self.segment])
            rms = float(np.sqrt(np.mean(seg.astype(np.float64) ** 2)) + 1e-12)
            if 20 * np.log10(rms) > self.min_rms_db:
                return seg.astype(np.float32)
        return seg.astype(np.float32)


TARGET_STAGE = "target"  #: in a training preset: the stage whose output is the training target
NO_DAMAGE = "none"  #: in a --degrade list: the segment is its own input and target


class Degrader:
    """Makes (degraded, target) training pairs from clean segments with degradation presets, seeded per segment.

    `preset` is a preset name or pipeline file, or several separated by commas: each
    segment then gets one of them, drawn from its seed (name one twice to weight it).
    `none` in the list makes identity pairs (the clean segment is input and target).
    A preset that is a plain chain with a stage whose id is `target` splits there: the
    stages up to and including `target` make the target from the clean segment (content
    the model must keep, e.g. the noise-like top octave of text-to-music output), the
    stages after it damage that target into the input. Without such a stage the target
    is the clean segment.
    """

    def __init__(self, preset: str, sample_rate: int):
        from restorekit.pipeline import find_degradation, load_pipeline

        self.preset = preset
        self.sample_rate = sample_rate
        self.recipes: list[tuple[Any, Any]] = []  # (target pipeline or None, damage pipeline or None)
        for name in (p.strip() for p in preset.split(",")):
            if name == NO_DAMAGE:
                self.recipes.append((None, None))
                continue
            pipeline = load_pipeline(find_degradation(name), device="cpu")
            self.recipes.append(_split_at_target(pipeline, name))

    def pair(self, segment: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(degraded, target) for one mono segment, both as long as the segment."""
        content, damage = self.recipes[seed % len(self.recipes)]
        target = self._apply(content, segment, seed + 1)
        return self._apply(damage, target, seed), target

    def __call__(self, segment: np.ndarray, seed: int) -> np.ndarray:
        """The degraded segment (the input half of `pair`)."""
        return self.pair(segment, seed)[0]

    def _apply(self, pipeline, segment: np.ndarray, seed: int) -> np.ndarray:
        if pipeline is None:
            return segment
        audio = Audio(torch.from_numpy(np.ascontiguousarray(segment[None])), self.sample_rate)
        out = pipeline.run(audio, seed=seed).audio
        out = convert_channels(resample(out, self.sample_rate), 1)
        y = out.numpy()[0]
        n = len(segment)
        return np.pad(y[:n], (0, max(0, n - len(y)))).astype(np.float32)


def _split_at_target(pipeline, name: str):
    """(target pipeline or None, damage pipeline or None) of a training preset (see `Degrader`)."""
    from restorekit.runner import Pipeline

    ids = [node.id for node in pipeline.nodes]
    if TARGET_STAGE not in ids:
        pipeline.prepare("cpu")
        return None, pipeline
    if any(node.input is not None for node in pipeline.nodes):
        raise RestorekitError(f"--degrade {name}: a preset with a '{TARGET_STAGE}' stage must be a plain chain "
                              "(no `input:` references)")
    k = ids.index(TARGET_STAGE) + 1
    parts = []
    for nodes in (pipeline.nodes[:k], pipeline.nodes[k:]):
        if not nodes:
            parts.append(None)
            continue
        part = Pipeline(nodes, name=f"{pipeline.name}:{nodes[0].id}", device="cpu")
        part.prepare("cpu")
        parts.append(part)
    return parts[0], parts[1]


def make_pairs(source: SegmentSource, degrader: Degrader, count: int,
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` (degraded, target) pairs shaped (count, 1, segment)."""
    clean = [source.sample(rng) for _ in range(count)]
    pairs = [degrader.pair(c, int(rng.integers(0, 2**31 - 1))) for c in clean]
    degraded = np.stack([d for d, _ in pairs])
    target = np.stack([t for _, t in pairs])
    return torch.from_numpy(degraded)[:, None], torch.from_numpy(target)[:, None]


def write_split(path: Path, splits: dict[str, list[Path]]) -> None:
    path.write_text(json.dumps({k: [str(p) for p in v] for k, v in splits.items()}, indent=2) + "\n")
