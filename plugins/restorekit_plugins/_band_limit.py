"""Where a signal's band ends: cliffs, falls onto a noise floor, and the edge at its own Nyquist frequency.

Shared by the stages that must find band-limitation before they act (`bwe.harmonic`
extends above it, `restore.unet` runs only on band-limited input). docs/stages/bwe.md
explains the rules and their measured behaviour. torch is imported inside the functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field

from restorekit.stage import StageParams

if TYPE_CHECKING:  # pragma: no cover
    import torch

DETECT_BIN_HZ = 16.0  # frequency resolution of the long-term spectrum used for detection
DETECT_SMOOTH_HZ = 60.0  # its smoothing across frequency
DETECT_TRANSITION = 0.06  # a cliff may take this fraction of its frequency to fall (soxr: ~5%)
DETECT_BELOW = 1 / 6  # "the band just below" a frequency f: [f * (1 - 1/6), f]
DETECT_EDGE_DB = 6.0  # the cutoff sits where the spectrum has fallen this far below that band
FLOOR_START = 0.12  # a noise floor is judged from f * (1 + 12%) up, past the filter's skirt
FLOOR_STEADY_DB = 6.0  # and is steady: the median of its frame level at most this far above the 10th percentile
GROUP_BINS = 8  # per-frame band powers are kept in groups of this many bins
MIN_CUTOFF_HZ = 500.0
DROP_DB = 30.0  # default: a cliff falls this far
FLOOR_DROP_DB = 10.0  # default: a fall onto a flat, steady noise floor
FLOOR_SPREAD_DB = 4.0  # default: how flat that floor is
TOP_FRACTION = 0.98  # the top 2 % below the Nyquist frequency is the edge of the band itself


@dataclass
class SpectrumStats:
    """The long-term spectrum of a signal, smoothed, plus coarse per-frame band powers.

    `smoothed`: mean power spectrum in dB over all frames and channels, smoothed over
    DETECT_SMOOTH_HZ. `frame_power`: a RowSpill of (groups, frames): the power per frame in
    groups of GROUP_BINS bins (all channels), for judging whether a band is steady over
    time (on disk for long input).
    """

    smoothed: torch.Tensor
    bin_hz: float
    frame_power: object

    def steadiness_db(self, k0: int, k1: int) -> float:
        """Median minus 10th percentile of the frame level of bins [k0, k1], in dB (small: steady)."""
        import torch

        g0, g1 = k0 // GROUP_BINS, max(k0 // GROUP_BINS + 1, k1 // GROUP_BINS)
        total = sum(self.frame_power.row(g) for g in range(g0, min(g1, self.frame_power.rows)))
        level = 10 * torch.log10(torch.as_tensor(total, dtype=torch.float64) + 1e-30)
        if level.numel() < 4:
            return 0.0
        q = torch.quantile(level, torch.tensor([0.1, 0.5], dtype=level.dtype, device=level.device))
        return float(q[1] - q[0])


def analyze_spectrum(x, sample_rate: int) -> SpectrumStats:
    """SpectrumStats of x (a tensor or a Source): Hann frames without overlap, transformed a block
    at a time; the per-frame powers go to disk for long input, so memory stays small."""
    import torch
    import torch.nn.functional as F

    from restorekit.streaming import as_source
    from restorekit_plugins._blocks import RowSpill

    src = as_source(x, sample_rate)
    channels, n = src.shape
    n_fft = 1 << max(6, math.ceil(math.log2(sample_rate / DETECT_BIN_HZ)))
    frames = n // n_fft
    bins = n_fft // 2 + 1
    groups = -(-bins // GROUP_BINS)
    per_frame = RowSpill(groups)

    def transform(seg):  # (channels, frames, n_fft) -> (frames, bins), channels summed
        window = torch.hann_window(n_fft, periodic=False, dtype=seg.dtype, device=seg.device)
        return torch.fft.rfft(seg * window, dim=-1).abs().square().sum(dim=0)

    def keep(power):  # (frames, bins) -> groups x frames, on disk once large
        grouped = F.pad(power, (0, groups * GROUP_BINS - bins)).reshape(power.shape[0], groups, GROUP_BINS).sum(-1)
        per_frame.append(grouped.float().T.cpu().numpy())

    if frames == 0:  # shorter than one frame: one zero-padded frame
        power = transform(torch.nn.functional.pad(src.read(0, n), (0, n_fft - n))[:, None])
        total, count = power[0].double(), channels
        keep(power)
    else:
        total = torch.zeros(bins, dtype=torch.float64, device=src.device)
        step = max(1, (1 << 20) // (n_fft * channels))
        for f0 in range(0, frames, step):
            f1 = min(frames, f0 + step)
            power = transform(src.read(f0 * n_fft, f1 * n_fft).reshape(channels, f1 - f0, n_fft))
            total += power.sum(dim=0).double()
            keep(power)
        count = frames * channels
    spec = 10 * torch.log10(total / count + 1e-30)
    bin_hz = sample_rate / n_fft
    width = max(1, round(DETECT_SMOOTH_HZ / bin_hz) | 1)
    smoothed = F.avg_pool1d(F.pad(spec[None, None], (width // 2, width // 2), mode="replicate"), width, 1).view(-1)
    return SpectrumStats(smoothed, bin_hz, per_frame)


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

    def describe(self, rate_in: int, rate_out: int, action: str = "synthesizing") -> str:
        """One line for the manifest's notes; `action` names what is done to the band above the cutoff."""
        top = f"{action} {self.cutoff_hz / 1000:.2f}-{self.top_hz / 1000:.2f} kHz at {rate_out} Hz" \
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


def find_cutoff(stats: SpectrumStats, drop_db: float = DROP_DB, floor_drop_db: float | None = FLOOR_DROP_DB,
                floor_spread_db: float = FLOOR_SPREAD_DB, top_hz: float = 0.0) -> Finding:
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


def detect_cutoff(x: torch.Tensor, sample_rate: int, drop_db: float = DROP_DB, floor_drop_db: float | None = None,
                  floor_spread_db: float = FLOOR_SPREAD_DB) -> float | None:
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


NYQUIST_MARGIN = 1.05  # the output band counts as wider than the input's above this ratio of Nyquists


class DetectionParams(StageParams):
    """The detection parameters of the bandwidth extenders (`bwe.harmonic`, `sr.flow`): their Params subclass this."""

    detect_drop_db: float = Field(
        DROP_DB, ge=6, le=150, description="Detection: how far in dB the spectrum must fall across the cutoff "
                                        "(and stay down above it) to count as band-limited.")
    detect_floor_drop_db: float | None = Field(
        FLOOR_DROP_DB, ge=3, le=150,
        description="Detection: a smaller fall also counts when what lies above it is a flat "
                    "noise floor (see detect_floor_spread_db); empty: cliffs only.")
    detect_floor_spread_db: float = Field(
        FLOOR_SPREAD_DB, ge=0.5, le=30,
        description="Detection: a noise floor is flat: its loudest point is at most this many "
                    "dB above its median level.")
    full_band_fraction: float = Field(
        0.9, ge=0.5, le=1.0, description="Detection: a cliff above this fraction of the input's Nyquist "
                                         "frequency is the edge of the input's own band: band-limited by the "
                                         "rate when the output's band is wider, else full band.")


def find_extension(audio, top_hz: float, detection: DetectionParams, *, cutoff_hz: float | None = None,
                   min_width: float = 0.06) -> Finding:
    """Where the band to synthesize up to `top_hz` starts in `audio` and why (the bandwidth extenders' diagnosis).

    `cutoff_hz` given: that (capped at the input's Nyquist frequency). Else a cliff or a
    fall onto a noise floor (`find_cutoff` with the `detection` parameters); one at or above `full_band_fraction` of the
    input's Nyquist frequency is the edge of the input's own band: band-limited by the
    rate ("nyquist") when the output reaches more than 5 % past it, else full band.
    Content reaching the Nyquist frequency with no cliff is band-limited by the rate in the
    same case. A cutoff within `min_width` of `top_hz` leaves nothing to synthesize.
    The Finding's cutoff is None when there is nothing to do.
    """
    nyquist_in = audio.sample_rate / 2
    wider = top_hz > NYQUIST_MARGIN * nyquist_in  # the output's band reaches past the input's
    if cutoff_hz is not None:
        finding = Finding(min(cutoff_hz, nyquist_in), top_hz, "given")
    else:
        from restorekit.streaming import as_source

        stats = analyze_spectrum(as_source(audio), audio.sample_rate)
        finding = find_cutoff(stats, detection.detect_drop_db, detection.detect_floor_drop_db,
                              detection.detect_floor_spread_db, top_hz)
        if finding.cutoff_hz is not None and finding.cutoff_hz >= detection.full_band_fraction * nyquist_in:
            finding = Finding(finding.cutoff_hz, top_hz, "nyquist" if wider else "full_band", finding.drop_db)
        elif finding.cutoff_hz is None and wider:
            finding = Finding(band_edge(stats), top_hz, "nyquist")
    if finding.cutoff_hz is not None and (finding.kind == "full_band" or finding.cutoff_hz >= top_hz * (1 - min_width)):
        return Finding(None, top_hz, "full_band" if finding.kind != "given" else "given_above_top",
                       finding.drop_db, finding.cutoff_hz)
    return finding
