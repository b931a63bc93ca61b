"""Bandwidth extension: `bwe.harmonic` fills the band a band-limited input is missing.

The input's effective cutoff is read from its long-term spectrum (a cliff, not its sample
rate), the audio is resampled with soxr to the target rate, and the band from the cutoff up
to `max_hz` is synthesized by harmonic excitation: the top octave below the cutoff is
full-wave rectified, which puts its harmonics above the cutoff; their spectrum is whitened
and shaped, frame by frame, by the log-linear extrapolation of the top octave's envelope.
Only bins above the cutoff are synthesized and the result is added to the resampled input,
so the band below the cutoff is left as it was; full-band input is only resampled.
docs/stages/bwe.md explains the details.

Nothing heavy is imported at module import time.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from restorekit.hookspecs import hookimpl
from restorekit.stage import Accepts, Stage
from restorekit_plugins._band_limit import MIN_CUTOFF_HZ, DetectionParams, Finding, find_extension

log = logging.getLogger("restorekit")

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from restorekit.audio import Audio

TOP_FRACTION = 0.98  # never synthesize above this fraction of the target's Nyquist frequency
SYNTH_BIN_HZ = 21.5  # STFT resolution of the synthesis (n_fft 2048 at 44.1 kHz)
ENVELOPE_BANDS = 6  # bands of the top octave for the envelope fit
WHITEN_BANDS_PER_OCTAVE = 6
FADE_IN = 0.03  # the synthesized band fades in over this fraction of the cutoff frequency
FADE_OUT = 0.06  # and out over this fraction of max_hz
CPU_BLOCK_SAMPLES = 1 << 17
CUDA_BLOCK_SAMPLES = 1 << 22


class HarmonicBWE(Stage):
    """Harmonic bandwidth extension: resample to `sample_rate_hz`, synthesize the band above the input's cutoff.

    The cutoff is `cutoff_hz` or the top of a cliff in the input's long-term spectrum: the
    highest frequency where the spectrum falls `detect_drop_db` or more within ~6% of the
    frequency and stays that far down. No cliff, or one above `full_band_fraction` of the
    input's Nyquist frequency or above `max_hz`: the input is full band and is only resampled.
    """

    id = "bwe.harmonic"
    summary = "Bandwidth extension: detect the cutoff, resample, synthesize the missing highs by harmonic excitation."
    accepts = Accepts(devices=frozenset({"cpu", "cuda"}))
    streams = True  # detects in a first pass, resamples into a spill file when the rate changes, then synthesizes

    class Params(DetectionParams):
        sample_rate_hz: int = Field(44100, ge=8000, le=192000, description="Sample rate of the output in Hz.")
        cutoff_hz: float | None = Field(
            None, ge=MIN_CUTOFF_HZ, le=96000,
            description="Where the input's content ends, in Hz; empty: detect it from the input's spectrum.")
        max_hz: float = Field(
            20000.0, ge=1000, le=96000,
            description="Top of the synthesized band in Hz (at most 98% of the output's Nyquist frequency).")
        gain_db: float = Field(
            0.0, ge=-60, le=20, description="Level of the synthesized band relative to the extrapolated envelope, in dB.")
        min_rolloff_db_per_oct: float = Field(
            3.0, ge=0, le=96, description="The synthesized band falls at least this fast (dB per octave) "
                                          "above the cutoff, whatever the top octave does.")
        max_rolloff_db_per_oct: float = Field(
            24.0, ge=0, le=96, description="And at most this fast (dB per octave).")
        block_s: float | None = Field(
            None, ge=0.05, le=3600, description="Length in seconds of the blocks synthesized at once "
                                                "(the result does not depend on it); empty: automatic.")

        @model_validator(mode="after")
        def _rolloff_range(self):
            if self.min_rolloff_db_per_oct > self.max_rolloff_db_per_oct:
                raise ValueError(f"min_rolloff_db_per_oct ({self.min_rolloff_db_per_oct}) is above "
                                 f"max_rolloff_db_per_oct ({self.max_rolloff_db_per_oct})")
            return self

    def output_spec(self, sample_rate: int, channels: int) -> tuple[int, int]:
        return self.params.sample_rate_hz, channels

    def plan(self, audio: Audio) -> tuple[float | None, float]:
        """(cutoff in Hz or None for "full band: only resample", top of the synthesized band in Hz)."""
        finding = self.find(audio)
        return finding.cutoff_hz, finding.top_hz

    def find(self, audio) -> Finding:
        """Where the input's content ends and why, or why it is full band (see the class docstring); Audio or a Source."""
        p = self.params
        top = min(p.max_hz, TOP_FRACTION * p.sample_rate_hz / 2)
        return find_extension(audio, top, p, cutoff_hz=p.cutoff_hz, min_width=FADE_OUT)

    def process(self, audio: Audio) -> Audio:
        import torch

        from restorekit.dsp import resample

        p = self.params
        audio = audio.to(self.device)  # a whole-track stage: it moves the track to its device itself
        with torch.no_grad():
            finding = self.find(audio)
            self.note(finding.describe(audio.sample_rate, p.sample_rate_hz))
            log.info("bwe.harmonic: %s", finding.describe(audio.sample_rate, p.sample_rate_hz))
            cutoff, top = finding.cutoff_hz, finding.top_hz
            out = resample(audio, p.sample_rate_hz)
            if cutoff is None:
                return out
            y = out.samples if out is not audio else out.samples.clone()
            block = p.block_s * p.sample_rate_hz if p.block_s is not None else (
                CUDA_BLOCK_SAMPLES if y.device.type == "cuda" else CPU_BLOCK_SAMPLES)
            synth = HarmonicSynth(p.sample_rate_hz, cutoff, top, p.gain_db, p.min_rolloff_db_per_oct,
                                  p.max_rolloff_db_per_oct, y.device)
            synth.add_to(y, round(block))
        return out.with_samples(y)

    def stream(self, source, sink) -> None:
        import torch

        from restorekit.streaming import copy
        from restorekit_plugins._blocks import resampled

        p = self.params
        with torch.no_grad():
            finding = self.find(source)
            self.note(finding.describe(source.sample_rate, p.sample_rate_hz))
            log.info("bwe.harmonic: %s", finding.describe(source.sample_rate, p.sample_rate_hz))
            y = resampled(source, p.sample_rate_hz)
            try:
                if finding.cutoff_hz is None:
                    return copy(y, sink)
                block = p.block_s * p.sample_rate_hz if p.block_s is not None else (
                    CUDA_BLOCK_SAMPLES if self.device.startswith("cuda") else CPU_BLOCK_SAMPLES)
                synth = HarmonicSynth(p.sample_rate_hz, finding.cutoff_hz, finding.top_hz, p.gain_db,
                                      p.min_rolloff_db_per_oct, p.max_rolloff_db_per_oct, torch.device(self.device))
                synth.add_to(y, round(block), emit=lambda a, b, delta: sink.write(
                    y.read(a, b).to(delta.device).add_(delta).cpu()))
            finally:
                if y is not source:
                    y.close()


# -- synthesis ------------------------------------------------------------------------------
@dataclass
class HarmonicSynth:
    """Synthesizes the band [cutoff, top] of audio at `sample_rate` and adds it to the signal."""

    sample_rate: int
    cutoff_hz: float
    top_hz: float
    gain_db: float
    min_rolloff: float
    max_rolloff: float
    device: object

    def __post_init__(self) -> None:
        import torch

        self.n_fft = 1 << max(6, round(math.log2(self.sample_rate / SYNTH_BIN_HZ)))
        self.hop = self.n_fft // 4
        bin_hz = self.sample_rate / self.n_fft
        self.bins = self.n_fft // 2 + 1
        self.kc = max(2, math.ceil(self.cutoff_hz / bin_hz))
        self.kt = min(self.bins - 1, math.floor(self.top_hz / bin_hz))
        self.ks = max(1, self.kc // 2)
        dev, f64 = self.device, torch.float64
        freqs = torch.arange(self.bins, dtype=f64, device=dev) * bin_hz
        # the envelope fit: power of ENVELOPE_BANDS log-spaced bands of the top octave [cutoff/2, cutoff)
        self.fit_avg, centers = _band_matrix(freqs[self.ks:self.kc], self.cutoff_hz / 2, self.cutoff_hz, ENVELOPE_BANDS)
        xs = torch.log2(centers / self.cutoff_hz)
        self.fit_x = xs - xs.mean()
        self.fit_xmean = float(xs.mean())
        # with a single band (a very low cutoff) there is no slope to fit: the limits decide it
        self.fit_xvar = max(float((self.fit_x ** 2).sum()), 1e-12)
        # whitening of the excitation: its power in 1/6-octave bands above the cutoff
        up = freqs[self.kc:self.kt + 1]
        n_bands = max(1, math.ceil(math.log2(self.top_hz / self.cutoff_hz) * WHITEN_BANDS_PER_OCTAVE))
        avg, _ = _band_matrix(up, self.cutoff_hz, self.top_hz * (1 + 1e-9), n_bands)
        self.whiten_avg = avg
        self.whiten_back = (avg > 0).to(f64).T.contiguous()  # band power back to each bin
        self.up_octaves = torch.log2(up / self.cutoff_hz)
        # fade in from the cutoff and out below the top (raised cosines), nothing outside
        fade_in = ((up - self.cutoff_hz) / (FADE_IN * self.cutoff_hz)).clamp(0, 1)
        fade_out = ((self.top_hz - up) / (FADE_OUT * self.top_hz)).clamp(0, 1)
        self.ramp = (0.5 - 0.5 * torch.cos(math.pi * fade_in)) * (0.5 - 0.5 * torch.cos(math.pi * fade_out))
        self.source = torch.zeros(self.bins, dtype=f64, device=dev)  # the top octave, tapered at its low edge
        taper = ((freqs - self.cutoff_hz / 2) / (self.cutoff_hz / 2 * 0.1)).clamp(0, 1)
        self.source[self.ks:self.kc] = (0.5 - 0.5 * torch.cos(math.pi * taper[self.ks:self.kc]))

    def add_to(self, y, block_samples: int, emit=None) -> None:
        """Add the synthesized band to y (channels, frames) in place, block by block.

        Each block reads a segment of y that reaches into its neighbours, so a block's
        synthesized samples are added only once no later block reads them. With `emit`, y
        (a Source) is only read, and emit(a, b, delta) gets the band of samples [a, b) in order.
        """
        import torch

        from restorekit.streaming import as_source
        from restorekit_plugins._stft_blocks import Block, Frames, plan_blocks, stft, write_istft

        src = as_source(y)
        frames = Frames(src.frames, self.n_fft, self.hop)
        # the top-octave signal is exact where its frames are; the excitation's frames need that signal
        blocks = plan_blocks(frames, block_samples, extra=2 * frames.reach)
        source = self.source.to(getattr(y, "dtype", torch.float32))[:, None]
        pending: list = []
        for i, blk in enumerate(blocks):
            length = blk.s1 - blk.s0
            seg = src.read(blk.s0, blk.s1).to(self.device)
            spec = stft(seg, self.n_fft, self.hop)  # (C, F, T)
            seg_frames = Frames(length, self.n_fft, self.hop)  # the segment as a signal of its own
            top_octave = torch.empty(seg.shape[0], length, dtype=seg.dtype, device=seg.device)
            write_istft(top_octave, spec * source, Block(0, length, 0, seg_frames.count, 0, length), seg_frames)
            excitation = stft(top_octave.abs_(), self.n_fft, self.hop)
            delta = torch.zeros(seg.shape[0], blk.b - blk.a, dtype=seg.dtype, device=seg.device)
            write_istft(delta, self._shape(spec, excitation), blk, frames, offset=blk.a)
            if emit is not None:
                emit(blk.a, blk.b, delta)
                continue
            pending.append((blk, delta))
            next_start = blocks[i + 1].s0 if i + 1 < len(blocks) else y.shape[1]
            while pending and pending[0][0].b <= next_start:
                done, d = pending.pop(0)
                y[:, done.a:done.b] += d
        for done, d in pending:
            y[:, done.a:done.b] += d

    def _shape(self, spec: torch.Tensor, excitation: torch.Tensor) -> torch.Tensor:
        """The synthesized spectrogram (C, F, T): whitened excitation times the extrapolated envelope."""
        import torch

        dtype = spec.real.dtype
        x = spec.transpose(1, 2)  # (C, T, F), F contiguous
        e = excitation.transpose(1, 2)
        band_pow = _power(x[..., self.ks:self.kc]) @ self.fit_avg.to(dtype)  # (C, T, bands)
        level = 10 * torch.log10(band_pow + 1e-20)
        mean = level.mean(dim=-1, keepdim=True)
        slope = ((level - mean) @ self.fit_x.to(dtype)[:, None]) / self.fit_xvar  # dB per octave, (C, T, 1)
        slope = slope.clamp(-self.max_rolloff, -self.min_rolloff)
        at_cutoff = mean - slope * self.fit_xmean  # the fitted level at the cutoff (x = 0)
        env_db = at_cutoff + slope * self.up_octaves.to(dtype) + self.gain_db  # (C, T, bins above)
        eu = e[..., self.kc:self.kt + 1]
        e_pow = (_power(eu) @ self.whiten_avg.to(dtype)) @ self.whiten_back.to(dtype)
        gain = torch.pow(10.0, env_db / 20) * self.ramp.to(dtype) / torch.sqrt(e_pow + 1e-30)
        out = torch.zeros_like(x)
        out[..., self.kc:self.kt + 1] = eu * gain
        return out.transpose(1, 2)


def _power(z: torch.Tensor) -> torch.Tensor:
    """|z|^2 of a complex tensor without the square root of abs()."""
    return z.real.square() + z.imag.square()


def _band_matrix(freqs, lo: float, hi: float, n_bands: int):
    """(bins, bands) matrix averaging bins into n_bands log-spaced bands of [lo, hi), and the band centers.

    Empty bands (narrower than a bin) are dropped.
    """
    import torch

    edges = lo * (hi / lo) ** (torch.arange(n_bands + 1, dtype=torch.float64, device=freqs.device) / n_bands)
    idx = torch.bucketize(freqs, edges, right=True) - 1
    idx = idx.clamp(0, n_bands - 1)
    onehot = torch.nn.functional.one_hot(idx, n_bands).to(torch.float64)
    counts = onehot.sum(dim=0)
    keep = counts > 0
    avg = onehot[:, keep] / counts[keep]
    centers = torch.sqrt(edges[:-1] * edges[1:])[keep]
    return avg, centers


@hookimpl
def register_stages(register):
    register(HarmonicBWE)
