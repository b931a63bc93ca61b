"""Separation speed: `separate.demucs` against `demucs.apply.apply_model` called directly, and `separate.hpss`.

The model is an HTDemucs with htdemucs's architecture (41.5 M parameters: demucs's
default hyper-parameters with bottom_channels 512, 7.8 s segments) and random weights:
the same computation as the pretrained htdemucs, which this benchmark does not download.

For each case the stage's `process` (resampling, mono/stereo conversion, normalisation,
the residual, bookkeeping, and apply_model inside) and a direct `apply_model` call on the
same audio already at the model's rate and channels run alternately; the overhead is the
ratio of the fastest runs minus one. RTF = processing time / audio duration (< 1 is faster
than real time). Figures and the command are in docs/performance.md ("Separation").

    python benchmarks/bench_separate.py                  # 20 s clips, 3 rounds, CPU
    python benchmarks/bench_separate.py --seconds 60 --rounds 5 --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import random
import statistics
import time
import types
from fractions import Fraction

import torch
from restorekit.dsp import convert_channels, resample
from restorekit.testing import synth_audio
from restorekit_plugins.separate import Demucs, Hpss, _demucs


def htdemucs_like(device: str):
    backend = _demucs.get_backend()
    HTDemucs = dict(backend.classes)["htdemucs"]
    torch.manual_seed(0)
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"], bottom_channels=512, segment=Fraction(39, 5))
    return backend, model.eval().to(device)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


class InnerTimer:
    """Wraps apply_model so the stage's own time outside it is measured within the same run."""

    def __init__(self, apply_model):
        self.apply_model = apply_model
        self.seconds = 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.apply_model(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="clip length in seconds")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (stage, direct) per case")
    parser.add_argument("--device", default="cpu", help="cpu, cuda")
    parser.add_argument("--shifts", type=int, default=1, help="apply_model shifts (demucs default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    backend, model = htdemucs_like(args.device)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}, backend {backend.name}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
    inner = InnerTimer(backend.apply.apply_model)
    stage = Demucs(shifts=args.shifts)
    stage.device = args.device
    stage._backend = dataclasses.replace(backend, apply=types.SimpleNamespace(apply_model=inner))
    stage._model, stage._loaded_on = model, args.device  # loaded here, with the timing wrapper
    stage._check_model()

    print("RTF = seconds per second of audio, best of the rounds (wall clock; CPU time of the process in brackets).")
    print("overhead A/B = stage / direct - 1 (best wall, [CPU]); overhead inside = stage time outside its own "
          "apply_model call / that call (median)")
    print(f"{'case':<24} {'stage RTF':>16} {'direct RTF':>16} {'overhead A/B':>18} {'inside':>8}")
    for rate, channels in ((44100, 2), (32000, 1)):
        audio = synth_audio(channels, rate, duration_s=args.seconds, seed=1)
        at_model = convert_channels(resample(audio, model.samplerate), 2).samples
        ref = at_model.mean(0)
        norm = (at_model - ref.mean()) / ref.std()

        def direct(norm=norm):
            random.seed(0)
            with torch.no_grad():
                backend.apply.apply_model(model, norm[None], shifts=args.shifts, split=True, overlap=0.25,
                                          device=args.device, progress=False)

        def through_stage(audio=audio):
            stage.process(audio)

        through_stage()  # warm-up (allocator, thread pool)
        stage_t, direct_t, inside = [], [], []
        for _ in range(args.rounds):
            inner.seconds = 0.0
            stage_t.append(timed(through_stage))
            inside.append(stage_t[-1][0] / inner.seconds - 1)
            direct_t.append(timed(direct))
        sw, sc = (min(t[i] for t in stage_t) for i in (0, 1))
        dw, dc = (min(t[i] for t in direct_t) for i in (0, 1))
        label = f"demucs {rate / 1000:g} kHz {'stereo' if channels == 2 else 'mono'}"
        print(f"{label:<24} {sw / args.seconds:>7.3f} [{sc / args.seconds:.3f}] {dw / args.seconds:>7.3f} "
              f"[{dc / args.seconds:.3f}] {sw / dw - 1:>+8.1%} [{sc / dc - 1:+.1%}] {statistics.median(inside):>+8.2%}")

    for rate, channels in ((44100, 2), (32000, 1)):
        audio = synth_audio(channels, rate, duration_s=args.seconds, seed=1)
        hpss = Hpss()
        times = [timed(lambda hpss=hpss, audio=audio: hpss.process(audio)) for _ in range(args.rounds)]
        label = f"hpss {rate / 1000:g} kHz {'stereo' if channels == 2 else 'mono'} ({hpss.last_method})"
        print(f"{label:<24} {min(t[0] for t in times) / args.seconds:>7.3f} "
              f"[{min(t[1] for t in times) / args.seconds:.3f}]")


if __name__ == "__main__":
    main()
