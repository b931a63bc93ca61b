"""Gap detection and the two DSP fills (AR interpolation, exemplar paste) behind the `inpaint.*` stages.

Everything here works on float64 numpy arrays shaped (channels, frames) and is imported
only inside `process` (numpy and scipy are not module-level imports of the stage module).

Detection (`detect_gaps`) looks at the short-time level of all channels together (2 ms
frames, 1 ms hop, mean square over channels, in dBFS) and marks a run of frames as a gap
when

1. every frame of it is either below `silence_db` (digital silence, near-zero samples) or
   at least `drop_db` below the loudest frame on *both* sides within `max_gap_ms`
   (a collapse of the level relative to the music around it);
2. the fall into it and the rise out of it are abrupt: within `edge_ms` before its start
   and within `edge_ms` after its end the level reaches at least `drop_db` above the
   loudest frame inside it (whose level counts as no lower than `silence_db`). A musical
   rest fails this: the notes before it decay (reverb, release) and the room tone or noise
   floor carries on, so the level never falls `drop_db` within `edge_ms`;
3. the music on both sides is not itself silent (both edges reach `min_level_db`), and
   its length is within [`min_gap_ms`, `max_gap_ms`] (with 1 ms of tolerance: the refined
   edges may take in a sample or two of near-zero music).

The boundaries are then refined to the sample: outwards from the frame run to the last
sample (all channels) still below a threshold halfway (in dB) between the gap's level
and the edge level it must reach. Runs that touch the start or the end of the file are
never gaps (one side is missing). Gaps in one channel only are not detected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

FRAME_MS = 1.0  # detection hop; frames are two hops long


@dataclass(frozen=True)
class Gap:
    start: int  # first missing sample
    stop: int  # one past the last missing sample
    kind: str  # "silence": near-zero samples; "dropout": a level collapse above the silence threshold

    @property
    def length(self) -> int:
        return self.stop - self.start

    def describe(self, rate: int) -> str:
        return f"{self.start / rate:.3f} s +{1000 * self.length / rate:.1f} ms ({self.kind})"


def _running_max(values: np.ndarray, before: int, after: int) -> np.ndarray:
    """out[k] = max(values[k - before : k + after + 1]) with -inf beyond the ends (before, after >= 0)."""
    import numpy as np
    from scipy.ndimage import maximum_filter1d

    size = before + after + 1
    # maximum_filter1d with origin o covers [k - size//2 - o, k + (size-1)//2 - o]; pad to stay exact
    padded = np.concatenate([np.full(before, -np.inf), values, np.full(after, -np.inf)])
    full = maximum_filter1d(padded, size=size, mode="constant", cval=-np.inf, origin=-(size // 2))
    # with origin -(size//2) the window at i covers [i, i + size - 1]
    return full[:len(values)]


def frame_levels(x: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """Level in dBFS (mean square over channels) of 2-hop frames at a 1 ms hop; (levels, hop in samples)."""
    import numpy as np

    hop = max(1, round(rate * FRAME_MS / 1000))
    blocks = x.shape[1] // hop
    if blocks < 2:
        return np.zeros(0), hop
    e = np.empty(blocks)
    step = hop * 65536  # in pieces: no float64 copy of the whole signal
    for s in range(0, blocks * hop, step):
        seg = np.asarray(x[:, s:min(s + step, blocks * hop)], dtype=np.float64)
        e[s // hop:s // hop + seg.shape[1] // hop] = np.square(seg).mean(axis=0).reshape(-1, hop).sum(axis=1)
    energy = (e[:-1] + e[1:]) / (2 * hop)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(energy), hop


def detect_gaps(x: np.ndarray, rate: int, *, min_gap_ms: float = 5.0, max_gap_ms: float = 2000.0,
                silence_db: float = -90.0, drop_db: float = 40.0, min_level_db: float = -60.0,
                edge_ms: float = 15.0, margin_ms: float = 0.0) -> list[Gap]:
    """Gaps in (channels, frames) `x`, in order, not overlapping; see the module docstring."""
    import numpy as np

    x = np.asarray(x)
    levels, hop = frame_levels(x, rate)
    n = x.shape[1]
    if len(levels) < 4:
        return []
    reach = int(np.ceil(max_gap_ms / FRAME_MS)) + int(np.ceil(edge_ms / FRAME_MS))
    edge = max(1, round(edge_ms / FRAME_MS))
    prev_max = np.concatenate([[-np.inf], _running_max(levels, reach - 1, 0)[:-1]])  # max over [k-reach, k-1]
    next_max = np.concatenate([_running_max(levels, 0, reach - 1)[1:], [-np.inf]])  # max over [k+1, k+reach]
    low = (levels < silence_db) | (levels < np.minimum(prev_max, next_max) - drop_db)
    edges = np.diff(np.concatenate([[0], low.astype(np.int8), [0]]))
    run_starts, run_stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)

    def env(lo: int, hi: int) -> np.ndarray:  # the peak over channels, of samples lo..hi only
        return np.abs(x[:, max(0, lo):max(0, hi)]).max(axis=0).astype(np.float64)

    gaps: list[Gap] = []
    for a, b in zip(run_starts, run_stops):
        if a == 0 or b == len(levels):
            continue  # touches the start or the end: leading/trailing silence, not a gap
        core = levels[a + 1:b - 1] if b - a > 2 else levels[a:b]  # end frames straddle the edges
        inside = max(float(core.max()), silence_db)
        before = float(levels[max(0, a - edge):a].max())
        after = float(levels[b:b + edge].max())
        if min(before, after) < max(inside + drop_db, min_level_db):
            continue
        # refine to the sample: frame k covers samples [k*hop, k*hop + 2*hop)
        threshold = 10 ** ((inside + min(before, after)) / 2 / 20)
        lo, hi = a * hop, min(n, b * hop + hop)  # samples surely inside the quiet run
        loud_before = np.flatnonzero(env(lo - (edge + 2) * hop, lo) >= threshold)
        start = max(0, lo - (edge + 2) * hop) + (loud_before[-1] + 1 if len(loud_before) else 0)
        loud_after = np.flatnonzero(env(hi, hi + (edge + 2) * hop) >= threshold)
        stop = hi + (loud_after[0] if len(loud_after) else 0)
        pad = round(margin_ms * rate / 1000)
        start, stop = max(1, start - pad), min(n - 1, stop + pad)
        length_ms = 1000 * (stop - start) / rate
        if not (min_gap_ms - FRAME_MS <= length_ms <= max_gap_ms + FRAME_MS + 2 * margin_ms):  # 1 ms: resolution
            continue
        quiet = env(start + pad, stop - pad) < 10 ** (silence_db / 20)
        kind = "silence" if quiet.size and quiet.mean() > 0.9 else "dropout"
        if gaps and start <= gaps[-1].stop:  # overlapping after refinement: merge
            prev = gaps.pop()
            start, kind = prev.start, prev.kind if prev.kind == kind else "dropout"
        gaps.append(Gap(int(start), int(stop), kind))
    return gaps


# -- autoregressive interpolation ------------------------------------------------------------
def burg(x: np.ndarray, order: int) -> np.ndarray:
    """AR polynomial [1, a1, ..., ap] of `x` by Burg's method (stable: every |reflection| < 1)."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    order = min(order, len(x) - 1)
    a = np.zeros(order + 1)
    a[0] = 1.0
    size = len(x) - 1
    fwd, bwd = x[1:].copy(), x[:-1].copy()  # prediction errors, updated in place
    old, scaled = np.empty(size), np.empty(size)
    den = fwd @ fwd + bwd @ bwd
    for i in range(order):  # order i uses fwd[i:] and bwd[:size - i]
        if den <= 1e-30:
            break
        n = size - i
        f, b = fwd[i:], bwd[:n]
        k = -2.0 * np.einsum("i,i", b, f) / den  # einsum: no BLAS thread start-up per call
        a[1:i + 2] += k * a[i::-1].copy()
        np.copyto(old[:n], f)
        np.multiply(b, k, out=scaled[:n])
        f += scaled[:n]
        np.multiply(old[:n], k, out=scaled[:n])
        b += scaled[:n]
        den = (1.0 - k * k) * den - f[0] ** 2 - b[-1] ** 2
    return a


def extrapolate(past: np.ndarray, count: int, order: int) -> np.ndarray:
    """Continue `past` by `count` samples with its own Burg AR model (the prediction, no excitation)."""
    import numpy as np
    from scipy.signal import lfilter, lfiltic

    past = np.asarray(past, dtype=np.float64)
    if count <= 0 or len(past) < 8 or not np.any(past):
        return np.zeros(max(count, 0))
    a = burg(past, min(order, len(past) // 2))
    p = len(a) - 1
    zi = lfiltic([1.0], a, past[::-1][:p])
    out, _ = lfilter([1.0], a, np.zeros(count), zi=zi)
    return out


def ar_fill(x: np.ndarray, gap: Gap, rate: int, order: int, context_ms: float,
            left_limit: int, right_limit: int) -> np.ndarray:
    """Samples for `gap` in every channel: forward and backward AR extrapolation, cross-faded.

    The forward prediction is fitted on up to `context_ms` before the gap (not before
    `left_limit`), the backward one on the time-reversed `context_ms` after it (not past
    `right_limit`, the next gap); the two are mixed with a raised-cosine weight that goes
    from all-forward at the start of the gap to all-backward at its end.
    """
    import numpy as np

    m = gap.length
    ctx = max(round(context_ms * rate / 1000), 2 * order)
    lo, hi = max(left_limit, gap.start - ctx), min(right_limit, gap.stop + ctx)
    w = 0.5 + 0.5 * np.cos(np.pi * (np.arange(m) + 0.5) / m)
    out = np.empty((x.shape[0], m))
    for c in range(x.shape[0]):
        fwd = extrapolate(x[c, lo:gap.start], m, order)
        bwd = extrapolate(x[c, gap.stop:hi][::-1], m, order)[::-1]
        out[c] = w * fwd + (1 - w) * bwd
    return out


# -- exemplar (similarity) fill -----------------------------------------------------------
@dataclass(frozen=True)
class Match:
    source: int  # first sample of the pasted segment
    gain: float
    distance: float  # mean squared log-mel difference of the contexts (dB^2 / 100)
    correlation: float  # waveform correlation of the contexts next to the edges after alignment


def log_mel(mono: np.ndarray, rate: int, hop: int, n_fft: int, bands: int = 48) -> np.ndarray:
    """Log-mel frames (frames, bands) of a mono signal, frame k centred on sample k * hop."""
    import numpy as np

    from restorekit_plugins.spectral import mel_filterbank, stft_blocks

    fb = mel_filterbank(rate, n_fft, bands, 30.0, min(16000.0, rate / 2)).astype(np.float32)
    rows = [np.log10(np.square(np.abs(blk[0])) @ fb.T + 1e-10) for blk in
            stft_blocks(mono[None].astype(np.float32), n_fft, hop, block_frames=512)]
    return np.concatenate(rows, axis=0).astype(np.float64)


def find_match(mono: np.ndarray, rate: int, gap: Gap, forbidden: list[tuple[int, int]], feats: np.ndarray,
               hop: int, n_fft: int, context_ms: float, crossfade: int) -> Match | None:
    """Where to copy `gap` from: the shift whose log-mel context (before and after) best matches the gap's.

    Candidate sources are every hop-multiple shift whose whole span (context, crossfades,
    segment) lies inside the file and clear of every span in `forbidden` (the gaps, the
    current one included); the best is then aligned to the sample by cross-correlating the
    waveform next to the edges (within one hop), and level-matched on the contexts.
    """
    import numpy as np
    from scipy.signal import correlate

    n = len(mono)
    total = feats.shape[0]
    k = max(2, round(context_ms * rate / 1000 / hop))
    half = n_fft // (2 * hop) + 1  # frames whose window reaches into the gap are corrupt
    b0 = gap.start // hop - half - k + 1  # first frame of the context before
    a0 = -(-gap.stop // hop) + half  # first frame of the context after
    blocks = []
    if b0 >= 0:
        blocks.append(b0)
    if a0 + k <= total:
        blocks.append(a0)
    if not blocks:
        return None
    shifts = np.arange(-total, total + 1)
    score = np.zeros(len(shifts))
    valid = np.ones(len(shifts), dtype=bool)
    sq = np.square(feats).sum(axis=1)
    csq = np.concatenate([[0.0], np.cumsum(sq)])
    for f0 in blocks:
        tmpl = feats[f0:f0 + k]
        cross = correlate(feats, tmpl, mode="valid", method="fft")[:, 0]  # cross[j] = sum F[j:j+k] . tmpl
        energy = csq[k:] - csq[:-k]  # energy[j] = sum |F[j:j+k]|^2
        j = f0 + shifts
        ok = (j >= 0) & (j < len(cross))
        jj = np.clip(j, 0, len(cross) - 1)
        score += np.where(ok, energy[jj] - 2 * cross[jj] + np.square(tmpl).sum(), 0.0)
        valid &= ok
    # the source span (with context and crossfades, in samples) must avoid every forbidden span
    before_s = (gap.start - b0 * hop + n_fft) if b0 >= 0 else crossfade
    after_s = ((a0 + k) * hop + n_fft - gap.stop) if a0 + k <= total else crossfade
    span_lo = gap.start - max(before_s, crossfade + hop) + shifts * hop
    span_hi = gap.stop + max(after_s, crossfade + hop) + shifts * hop
    valid &= (span_lo >= 0) & (span_hi <= n)
    for f_lo, f_hi in forbidden:
        valid &= (span_hi <= f_lo) | (span_lo >= f_hi)
    if not valid.any():
        return None
    score = np.where(valid, score / (len(blocks) * k * feats.shape[1]), np.inf)
    best = int(np.argmin(score))
    coarse = int(shifts[best]) * hop

    # sample alignment: waveform next to both edges (the crossfade zones and a little more)
    side = max(crossfade, int(0.02 * rate))
    idx = np.concatenate([np.arange(gap.start - side, gap.start), np.arange(gap.stop, gap.stop + side)])
    idx = idx[(idx >= 0) & (idx < n)]
    target = mono[idx]
    best_lag, best_corr = 0, -np.inf
    lags = np.arange(-hop, hop + 1)
    src = idx[None, :] + coarse + lags[:, None]
    ok = (src.min(axis=1) >= 0) & (src.max(axis=1) < n)
    if ok.any():
        seg = mono[np.clip(src, 0, n - 1)]
        num = seg @ target
        den = np.sqrt(np.square(seg).sum(axis=1) * (target @ target)) + 1e-20
        corr = np.where(ok, num / den, -np.inf)
        i = int(np.argmax(corr))
        best_lag, best_corr = int(lags[i]), float(corr[i])
    source = gap.start + coarse + best_lag
    source = min(max(source, 0), n - gap.length)

    # level: the contexts' RMS ratio (up to 250 ms each side), within +-12 dB
    reach = int(0.25 * rate)
    ctx = np.concatenate([np.arange(max(0, gap.start - reach), gap.start), np.arange(gap.stop, min(n, gap.stop + reach))])
    shifted = ctx + (source - gap.start)
    keep = (shifted >= 0) & (shifted < n)
    t_rms = np.sqrt(np.mean(np.square(mono[ctx[keep]])) + 1e-20)
    s_rms = np.sqrt(np.mean(np.square(mono[shifted[keep]])) + 1e-20)
    gain = float(np.clip(t_rms / s_rms, 10 ** (-12 / 20), 10 ** (12 / 20)))
    return Match(int(source), gain, float(score[best]), best_corr)


def paste(x: np.ndarray, gap: Gap, match: Match, crossfade: int) -> tuple[int, int, np.ndarray]:
    """The matched segment over the gap, cross-faded over `crossfade` samples each side.

    Returns the changed span [lo, hi) and its new samples (channels, hi - lo). Inside the gap the paste replaces the samples; in
    the cross-fade zones outside it the original fades out as the paste fades in (raised
    cosine), all channels with the same gain.
    """
    import numpy as np

    n = x.shape[1]
    shift = match.source - gap.start
    xf_lo = min(crossfade, gap.start, gap.start + shift)
    xf_hi = min(crossfade, n - gap.stop, n - gap.stop - shift)
    lo, hi = gap.start - xf_lo, gap.stop + xf_hi
    w = np.ones(hi - lo)
    if xf_lo:
        w[:xf_lo] = 0.5 - 0.5 * np.cos(np.pi * (np.arange(xf_lo) + 0.5) / xf_lo)
    if xf_hi:
        w[-xf_hi:] = 0.5 + 0.5 * np.cos(np.pi * (np.arange(xf_hi) + 0.5) / xf_hi)
    return lo, hi, w * match.gain * x[:, lo + shift:hi + shift] + (1 - w) * x[:, lo:hi]
