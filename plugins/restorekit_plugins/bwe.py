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
from restorekit.stage import Accepts, Stage, StageParams

log = logging.getLogger("restorekit")

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from restorekit.audio import Audio

DETECT_BIN_HZ = 16.0  # frequency resolution of the long-term spectrum used for detection
DETECT_SMOOTH_HZ = 60.0  # its smoothing across frequency
DETECT_TRANSITION = 0.06  # a cliff may take this fraction of its frequency to fall (soxr: ~5%)
DETECT_BELOW = 1 / 6  # "the band just below" a frequency f: [f * (1 - 1/6), f]
DETECT_EDGE_DB = 6.0  # the cutoff sits where the spectrum has fallen this far below that band
FLOOR_START = 0.12  # a noise floor is judged from f * (1 + 12%) up, past the filter's skirt
FLOOR_STEADY_DB = 6.0  # and is steady: the median of its frame level at most this far above the 10th percentile
GROUP_BINS = 8  # per-frame band powers are kept in groups of this many bins
NYQUIST_MARGIN = 1.05  # the output band counts as wider than the input's above this ratio of Nyquists
MIN_CUTOFF_HZ = 500.0
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

    class Params(StageParams):
        sample_rate_hz: int = Field(44100, ge=8000, le=192000, description="Sample rate of the output in Hz.")
        cutoff_hz: float | None = Field(
            None, ge=MIN_CUTOFF_HZ, le=96000,
            description="Where the input's content ends, in Hz; empty: detect it from the input's spectrum.")
        detect_drop_db: float = Field(
            30.0, ge=6, le=150, description="Detection: how far in dB the spectrum must fall across the cutoff "
                                            "(and stay down above it) to count as band-limited.")
        detect_floor_drop_db: float | None = Field(
            10.0, ge=3, le=150, description="Detection: a smaller fall also counts when what lies above it is a flat "
                                            "noise floor (see detect_floor_spread_db); empty: cliffs only.")
        detect_floor_spread_db: float = Field(
            4.0, ge=0.5, le=30, description="Detection: a noise floor is flat: its loudest point is at most this many "
                                            "dB above its median level.")
        full_band_fraction: float = Field(
            0.9, ge=0.5, le=1.0, description="Detection: a cliff above this fraction of the input's Nyquist "
                                             "frequency is the edge of the input's own band: band-limited by the "
                                             "rate when the output's band is wider, else full band.")
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

    def find(self, audio: Audio) -> Finding:
        """Where the input's content ends and why, or why it is full band (see the class docstring)."""
        p = self.params
        top = min(p.max_hz, TOP_FRACTION * p.sample_rate_hz / 2)
        nyquist_in = audio.sample_rate / 2
        wider = top > NYQUIST_MARGIN * nyquist_in  # the output's band reaches past the input's
        if p.cutoff_hz is not None:
            finding = Finding(min(p.cutoff_hz, nyquist_in), top, "given")
        else:
            stats = analyze_spectrum(audio.samples, audio.sample_rate)
            finding = find_cutoff(stats, p.detect_drop_db, p.detect_floor_drop_db, p.detect_floor_spread_db, top)
            if finding.cutoff_hz is not None and finding.cutoff_hz >= p.full_band_fraction * nyquist_in:
                finding = Finding(finding.cutoff_hz, top, "nyquist" if wider else "full_band", finding.drop_db)
            elif finding.cutoff_hz is None and wider:
                edge = band_edge(stats)
                finding = Finding(edge, top, "nyquist")
        if finding.cutoff_hz is not None and (finding.kind == "full_band" or finding.cutoff_hz >= top * (1 - FADE_OUT)):
            return Finding(None, top, "full_band" if finding.kind != "given" else "given_above_top",
                           finding.drop_db, finding.cutoff_hz)
        return finding

    def process(self, audio: Audio) -> Audio:
        import torch

        from restorekit.dsp import resample

        p = self.params
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


# -- detection ------------------------------------------------------------------------------
@dataclass
class SpectrumStats:
    """The long-term spectrum of a signal, smoothed, plus coarse per-frame band powers.

    `smoothed`: mean power spectrum in dB over all frames and channels, smoothed over
    DETECT_SMOOTH_HZ. `frame_power`: (frames, groups) power per frame in groups of
    GROUP_BINS bins (all channels), for judging whether a band is steady over time.
    """

    smoothed: torch.Tensor
    bin_hz: float
    frame_power: torch.Tensor

    def steadiness_db(self, k0: int, k1: int) -> float:
        """Median minus 10th percentile of the frame level of bins [k0, k1], in dB (small: steady)."""
        import torch

        g0, g1 = k0 // GROUP_BINS, max(k0 // GROUP_BINS + 1, k1 // GROUP_BINS)
        level = 10 * torch.log10(self.frame_power[:, g0:g1].sum(dim=1).double() + 1e-30)
        if level.numel() < 4:
            return 0.0
        q = torch.quantile(level, torch.tensor([0.1, 0.5], dtype=level.dtype, device=level.device))
        return float(q[1] - q[0])


def analyze_spectrum(x: torch.Tensor, sample_rate: int) -> SpectrumStats:
    """SpectrumStats of x: Hann frames without overlap, transformed a block at a time (memory stays small)."""
    import torch
    import torch.nn.functional as F

    n_fft = 1 << max(6, math.ceil(math.log2(sample_rate / DETECT_BIN_HZ)))
    window = torch.hann_window(n_fft, periodic=False, dtype=x.dtype, device=x.device)
    frames = x.shape[1] // n_fft
    bins = n_fft // 2 + 1
    groups = -(-bins // GROUP_BINS)

    def grouped(power):  # (frames, bins) -> (frames, groups)
        return F.pad(power, (0, groups * GROUP_BINS - bins)).reshape(power.shape[0], groups, GROUP_BINS).sum(-1)

    if frames == 0:  # shorter than one frame: one zero-padded frame
        seg = torch.nn.functional.pad(x, (0, n_fft - x.shape[1])) * window
        power = torch.fft.rfft(seg, dim=-1).abs().square().sum(dim=0, keepdim=True)
        total, count, per_frame = power[0].double(), x.shape[0], [grouped(power).float()]
    else:
        total = torch.zeros(bins, dtype=torch.float64, device=x.device)
        per_frame = []
        step = max(1, (1 << 20) // (n_fft * x.shape[0]))
        for f0 in range(0, frames, step):
            f1 = min(frames, f0 + step)
            seg = x[:, f0 * n_fft:f1 * n_fft].reshape(x.shape[0], f1 - f0, n_fft) * window
            power = torch.fft.rfft(seg, dim=-1).abs().square().sum(dim=0)  # (frames, bins), channels summed
            total += power.sum(dim=0).double()
            per_frame.append(grouped(power).float())
        count = frames * x.shape[0]
    spec = 10 * torch.log10(total / count + 1e-30)
    bin_hz = sample_rate / n_fft
    width = max(1, round(DETECT_SMOOTH_HZ / bin_hz) | 1)
    smoothed = F.avg_pool1d(F.pad(spec[None, None], (width // 2, width // 2), mode="replicate"), width, 1).view(-1)
    return SpectrumStats(smoothed, bin_hz, torch.cat(per_frame))


@dataclass(frozen=True)
class Finding:
    """What detection found: the cutoff (None: full band), the top of the synthesized band, and why.

    `kind`: "cliff" (the spectrum falls `drop_db` and stays down), "floor" (a smaller fall
    onto a flat noise floor), "nyquist" (content reaches the input's own Nyquist frequency
    and the output's band is wider: band-limited by the rate), "given" (`cutoff_hz`),
    "full_band", or "given_above_top". `found_hz` keeps a detected edge that was judged
    full band.
    """

    cutoff_hz: float | None
    top_hz: float
    kind: str
    drop_db: float | None = None
    found_hz: float | None = None

    def describe(self, rate_in: int, rate_out: int) -> str:
        """One line for the manifest's notes."""
        top = f"synthesizing {self.cutoff_hz / 1000:.2f}-{self.top_hz / 1000:.2f} kHz at {rate_out} Hz" \
            if self.cutoff_hz is not None else ""
        if self.kind == "cliff":
            return f"cutoff {self.cutoff_hz / 1000:.2f} kHz (the spectrum falls {self.drop_db:.0f} dB there); {top}"
        if self.kind == "floor":
            return (f"cutoff {self.cutoff_hz / 1000:.2f} kHz (the spectrum falls {self.drop_db:.0f} dB onto a flat "
                    f"noise floor); {top}")
        if self.kind == "nyquist":
            return (f"cutoff {self.cutoff_hz / 1000:.2f} kHz: the content reaches the input's Nyquist frequency "
                    f"({rate_in / 2000:g} kHz at {rate_in} Hz), so the band above it is missing; {top}")
        if self.kind == "given":
            return f"cutoff {self.cutoff_hz / 1000:.2f} kHz (cutoff_hz); {top}"
        if self.kind == "given_above_top":
            return (f"cutoff_hz {self.found_hz / 1000:.2f} kHz is at or above the top of the band to synthesize "
                    f"({self.top_hz / 1000:.2f} kHz): only resampled to {rate_out} Hz")
        edge = f" (its band ends at {self.found_hz / 1000:.2f} kHz, the input's own edge)" if self.found_hz else ""
        return (f"no cutoff: full band{edge}, and the output ({rate_out} Hz) adds no band above the input's "
                f"Nyquist frequency; only resampled" if self.found_hz else
                f"no cutoff: no cliff in the spectrum (a fall of the detection thresholds within 6% of a "
                f"frequency that stays down); only resampled to {rate_out} Hz")


def _below_band_level(s: torch.Tensor) -> torch.Tensor:
    """Mean of s over the band just below each bin, [k * (1 - DETECT_BELOW), k]."""
    import torch

    n = s.numel()
    k = torch.arange(n, device=s.device)
    csum = torch.cat([torch.zeros(1, dtype=s.dtype, device=s.device), torch.cumsum(s, 0)])
    lo = torch.floor(k * (1 - DETECT_BELOW)).long()
    return (csum[k + 1] - csum[lo]) / (k + 1 - lo)


def find_cutoff(stats: SpectrumStats, drop_db: float, floor_drop_db: float | None = None,
                floor_spread_db: float = 4.0, top_hz: float = 0.0) -> Finding:
    """The top of a cliff in the long-term spectrum (a Finding with cutoff None when there is none).

    With S the smoothed long-term spectrum in dB: a frequency f qualifies when the mean of S
    over the band just below it ([5f/6, f]) is at least `drop_db` above the maximum of S
    everywhere from f*(1 + 6%) to the top (a cliff), or at least `floor_drop_db` above it
    while S at f is still within 6 dB of that band and everything from f*(1 + 12%) up is a
    noise floor: flat (its maximum within `floor_spread_db` of its median) and steady
    (the median of its frame level within FLOOR_STEADY_DB of the 10th percentile; music
    comes and goes, hiss does not). Of the highest run of qualifying frequencies, the cutoff
    is the highest frequency below where S is still within 6 dB of that band's level.
    """
    import torch

    s, bin_hz = stats.smoothed, stats.bin_hz
    n = s.numel()
    top = int(n * TOP_FRACTION) - 1  # ignore the edge of the input's own band
    k = torch.arange(n, device=s.device)
    # maximum of s above each bin + transition: reverse running maximum, then shifted
    rev_max = torch.flip(torch.cummax(torch.flip(s[:top + 1], [0]), dim=0).values, [0])
    above_at = torch.ceil(k * (1 + DETECT_TRANSITION)).long().clamp(max=top + 1)
    above = torch.full((n,), float("-inf"), dtype=s.dtype, device=s.device)
    ok = (above_at <= top) & (k * bin_hz >= MIN_CUTOFF_HZ)
    above[ok] = rev_max[above_at[ok]]
    below = _below_band_level(s)
    fall = below - above
    cliff = ok & (fall >= drop_db)
    floor = torch.zeros_like(cliff)
    if floor_drop_db is not None:
        on_top = s >= below - DETECT_EDGE_DB  # still on the plateau, not already down the filter's skirt
        for c in torch.nonzero(ok & ~cliff & on_top & (fall >= floor_drop_db)).view(-1).tolist():
            start = math.ceil(c * (1 + FLOOR_START))
            region = s[start:top + 1]
            floor[c] = (region.numel() >= 3 and float(region.max() - region.median()) <= floor_spread_db
                        and stats.steadiness_db(start, top + 1) <= FLOOR_STEADY_DB)
    hits = torch.nonzero(cliff | floor).view(-1)
    if hits.numel() == 0:
        return Finding(None, top_hz, "full_band")
    k_hi = int(hits[-1])
    run = hits[hits <= k_hi]
    gaps = torch.nonzero(run[1:] - run[:-1] > 1).view(-1)
    run = run[int(gaps[-1]) + 1:] if gaps.numel() else run
    k_lo = int(run[0])
    kind = "cliff" if bool(cliff[run].any()) else "floor"
    level = float(below[k_lo])
    k_end = min(top, math.ceil(k_hi * (1 + DETECT_TRANSITION)))
    inside = torch.nonzero(s[:k_end + 1] >= level - DETECT_EDGE_DB).view(-1)
    k_cut = int(inside[-1]) if inside.numel() else k_lo
    return Finding(float(k_cut * bin_hz), top_hz, kind, float(fall[run].max()))


def detect_cutoff(x: torch.Tensor, sample_rate: int, drop_db: float, floor_drop_db: float | None = None,
                  floor_spread_db: float = 4.0) -> float | None:
    """The cutoff in Hz that `find_cutoff` finds in x, or None when there is none (full band)."""
    return find_cutoff(analyze_spectrum(x, sample_rate), drop_db, floor_drop_db, floor_spread_db).cutoff_hz


def band_edge(stats: SpectrumStats) -> float:
    """Where a band reaching the Nyquist frequency ends: the highest frequency up to 98 % of it
    where the smoothed spectrum is within 6 dB of the band just below."""
    import torch

    s = stats.smoothed
    top = int(s.numel() * TOP_FRACTION) - 1
    below = _below_band_level(s)
    within = torch.nonzero(s[:top + 1] >= below[:top + 1] - DETECT_EDGE_DB).view(-1)
    return float((int(within[-1]) if within.numel() else top) * stats.bin_hz)


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

    def add_to(self, y: torch.Tensor, block_samples: int) -> None:
        """Add the synthesized band to y (channels, frames) in place, block by block.

        Each block reads a segment of y that reaches into its neighbours, so a block's
        synthesized samples are added only once no later block reads them.
        """
        import torch

        from restorekit_plugins._stft_blocks import Block, Frames, plan_blocks, stft, write_istft

        frames = Frames(y.shape[1], self.n_fft, self.hop)
        # the top-octave signal is exact where its frames are; the excitation's frames need that signal
        blocks = plan_blocks(frames, block_samples, extra=2 * frames.reach)
        source = self.source.to(y.dtype)[:, None]
        pending: list = []
        for i, blk in enumerate(blocks):
            length = blk.s1 - blk.s0
            spec = stft(y[:, blk.s0:blk.s1], self.n_fft, self.hop)  # (C, F, T)
            seg_frames = Frames(length, self.n_fft, self.hop)  # the segment as a signal of its own
            top_octave = torch.empty(y.shape[0], length, dtype=y.dtype, device=y.device)
            write_istft(top_octave, spec * source, Block(0, length, 0, seg_frames.count, 0, length), seg_frames)
            excitation = stft(top_octave.abs_(), self.n_fft, self.hop)
            delta = torch.zeros(y.shape[0], blk.b - blk.a, dtype=y.dtype, device=y.device)
            write_istft(delta, self._shape(spec, excitation), blk, frames, offset=blk.a)
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
