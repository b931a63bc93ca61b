"""Built-in metrics: with a reference (SNR, SI-SDR, LSD and variants, mel, spectrogram PSNR, ViSQOL)
and without one (bandwidth, centroid, flatness, RMS, loudness, true peak, clipping, the level and
tracking of a band against another).

Definitions, STFT settings and channel handling are in docs/metrics.md. numpy, scipy,
soxr, pyloudnorm and visqol are imported inside the functions that use them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from restorekit.hookspecs import hookimpl
from restorekit.metrics import MAX_RATIO_DB, Metric, MetricError, MetricParams, check_audible

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from restorekit.audio import Audio

SUM_BLOCK = 1 << 20  # samples per block when summing long signals in float64
LSD_EPS = 1e-8  # added to the STFT power before log10 (LSD)
MEL_FLOOR_DB = -100.0  # log-mel floor, dB relative to a full-scale sine
SILENT_POWER = 1e-10  # normalized frame power below which a frame is silent (-100 dB)


# -- shared helpers ---------------------------------------------------------------------------


def _x(audio: Audio) -> np.ndarray:
    return audio.numpy()


def _blocks(n: int):
    return ((s, min(s + SUM_BLOCK, n)) for s in range(0, n, SUM_BLOCK))


def _ratio_db(signal: float, noise: float) -> float:
    """10*log10(signal/noise), capped at MAX_RATIO_DB for a (near) perfect match."""
    import math

    return 10 * math.log10(signal / max(noise, signal * 10 ** (-MAX_RATIO_DB / 10)))


def _check_same(est: Audio, ref: Audio) -> None:
    if est.samples.shape != ref.samples.shape or est.sample_rate != ref.sample_rate:
        raise MetricError(f"est {tuple(est.samples.shape)} @ {est.sample_rate} Hz and ref "
                          f"{tuple(ref.samples.shape)} @ {ref.sample_rate} Hz differ; align them first "
                          "(restorekit.metrics.align, or call the metric instead of compute)")


def _power_norm(n_fft: int) -> float:
    """Divide |STFT|^2 by this so a full-scale sine peaks near 1 (0 dB)."""
    from restorekit_plugins.spectral import hann

    return float(hann(n_fft).sum() / 2) ** 2


def _paired_power(est: Audio, ref: Audio, n_fft: int, hop: int, scale: float = 1.0):
    """(est power, ref power) STFT blocks, (channels, frames, bins) each, unnormalized."""
    from restorekit_plugins.spectral import stft_blocks

    for xe, xr in zip(stft_blocks(_x(est), n_fft, hop), stft_blocks(_x(ref), n_fft, hop), strict=True):
        pe = xe.real ** 2 + xe.imag ** 2
        if scale != 1.0:
            pe *= scale ** 2
        yield pe, xr.real ** 2 + xr.imag ** 2


def _energy(x: np.ndarray) -> float:
    import numpy as np

    return float(sum(np.sum(np.square(x[:, a:b], dtype=np.float64)) for a, b in _blocks(x.shape[1])))


class SpectralParams(MetricParams):
    n_fft: int = Field(2048, ge=16, le=65536, description="STFT size in samples (periodic Hann window).")
    hop_length: int = Field(512, ge=1, le=65536, description="STFT hop in samples.")

    @model_validator(mode="after")
    def _hop_fits(self):
        if self.hop_length > self.n_fft:
            raise ValueError(f"hop_length ({self.hop_length}) must not exceed n_fft ({self.n_fft})")
        return self


# -- with a reference ---------------------------------------------------------------------------


class SNR(Metric):
    """10*log10(sum ref^2 / sum (est - ref)^2) per channel, averaged over channels; capped at 200 dB."""

    id = "snr"
    summary = "Signal-to-noise ratio of est against ref (dB)."
    unit = "dB"
    higher_is_better = True
    needs_reference = True

    def compute(self, est, ref):
        import numpy as np

        _check_same(est, ref)
        e, r = _x(est), _x(ref)
        values = []
        for c in range(r.shape[0]):
            sig = noise = 0.0
            for a, b in _blocks(r.shape[1]):
                rc = r[c, a:b].astype(np.float64)
                sig += float(rc @ rc)
                d = e[c, a:b] - rc
                noise += float(d @ d)
            if sig == 0:
                raise MetricError(f"reference channel {c} is silent: SNR is undefined there")
            values.append(_ratio_db(sig, noise))
        return float(np.mean(values))


class SISDR(Metric):
    """Scale-invariant SDR (Le Roux et al. 2019) on zero-mean signals, per channel, averaged."""

    id = "si_sdr"
    summary = "Scale-invariant signal-to-distortion ratio (dB); a gain on est does not change it."
    unit = "dB"
    higher_is_better = True
    needs_reference = True

    def compute(self, est, ref):
        import numpy as np

        _check_same(est, ref)
        e, r = _x(est), _x(ref)
        n = r.shape[1]
        values = []
        for c in range(r.shape[0]):
            se = sr = see = srr = ser = 0.0
            for a, b in _blocks(n):
                ec, rc = e[c, a:b].astype(np.float64), r[c, a:b].astype(np.float64)
                se, sr = se + ec.sum(), sr + rc.sum()
                see, srr, ser = see + float(ec @ ec), srr + float(rc @ rc), ser + float(ec @ rc)
            rr = srr - sr * sr / n
            er = ser - se * sr / n
            ee = see - se * se / n
            if rr <= 0:
                raise MetricError(f"reference channel {c} is silent or constant: SI-SDR is undefined there")
            target = er * er / rr
            if target == 0:
                raise MetricError(f"est channel {c} is uncorrelated with the reference (SI-SDR = -inf)")
            values.append(_ratio_db(target, ee - target))
        return float(np.mean(values))


class LSDParams(SpectralParams):
    pass


class LSD(Metric):
    """Log-spectral distance: mean over frames of sqrt(mean over bins of (log10 P_ref - log10 P_est)^2)."""

    id = "lsd"
    summary = "Log-spectral distance over the whole band (log10 power units; 0 = identical spectra)."
    unit = ""
    higher_is_better = False
    needs_reference = True
    Params = LSDParams

    def band(self, sample_rate: int) -> tuple[float, float] | None:
        return None

    def scale(self, est, ref) -> float:
        return 1.0

    def compute(self, est, ref):
        import numpy as np

        _check_same(est, ref)
        p = self.params
        sel = slice(None)
        band = self.band(ref.sample_rate)
        if band is not None:
            freqs = np.arange(p.n_fft // 2 + 1) * ref.sample_rate / p.n_fft
            idx = np.flatnonzero((freqs >= band[0]) & (freqs <= band[1]))
            if idx.size == 0:
                raise MetricError(f"{self.id}: no STFT bin between {band[0]:g} and {band[1]:g} Hz at "
                                  f"{ref.sample_rate} Hz with n_fft {p.n_fft}; widen the band or raise n_fft")
            sel = slice(int(idx[0]), int(idx[-1]) + 1)
        total, count = 0.0, 0
        for pe, pr in _paired_power(est, ref, p.n_fft, p.hop_length, self.scale(est, ref)):
            d = np.log10(pr[..., sel] + LSD_EPS) - np.log10(pe[..., sel] + LSD_EPS)
            per_frame = np.sqrt(np.mean(d * d, axis=-1))
            total += float(per_frame.sum(dtype=np.float64))
            count += per_frame.size
        return total / count


class LSDBandParams(LSDParams):
    low_hz: float = Field(4000.0, ge=0, le=384000, description="Lower edge of the band in Hz.")
    high_hz: float = Field(16000.0, gt=0, le=384000,
                           description="Upper edge of the band in Hz (clamped to the Nyquist frequency).")

    @model_validator(mode="after")
    def _ordered(self):
        if self.high_hz <= self.low_hz:
            raise ValueError(f"high_hz ({self.high_hz}) must be above low_hz ({self.low_hz})")
        return self


class LSDBand(LSD):
    """LSD over the STFT bins between low_hz and high_hz only (e.g. the band a restoration fills in)."""

    id = "lsd_band"
    summary = "Log-spectral distance in a band (default 4-16 kHz, where generated music loses its highs)."
    Params = LSDBandParams

    def band(self, sample_rate):
        nyquist = sample_rate / 2
        if self.params.low_hz >= nyquist:
            raise MetricError(f"lsd_band: low_hz {self.params.low_hz:g} is at or above the Nyquist frequency "
                              f"({nyquist:g} Hz) of the reference; lower it (--set lsd_band.low_hz=...)")
        return self.params.low_hz, min(self.params.high_hz, nyquist)


class LSDNorm(LSD):
    """LSD after scaling est by one gain so its energy (all channels) equals ref's: scale-invariant."""

    id = "lsd_norm"
    summary = "Log-spectral distance after matching est's energy to ref's (ignores a pure gain change)."

    def scale(self, est, ref):
        import math

        e_est, e_ref = _energy(_x(est)), _energy(_x(ref))
        if e_est == 0 or e_ref == 0:
            raise MetricError("lsd_norm: est or ref is silent, so its energy cannot be matched")
        return math.sqrt(e_ref / e_est)


class MelParams(SpectralParams):
    n_mels: int = Field(128, ge=8, le=512, description="Number of mel bands.")
    fmin_hz: float = Field(0.0, ge=0, le=20000, description="Lowest frequency of the mel filters in Hz.")
    fmax_hz: float | None = Field(None, gt=0, le=384000,
                                  description="Highest frequency in Hz; empty: the Nyquist frequency.")


class MelL1(Metric):
    """Mean absolute difference of log-mel spectrograms in dB (floored at -100 dB re full-scale sine)."""

    id = "mel_l1"
    summary = "Mean absolute log-mel spectrogram difference (dB)."
    unit = "dB"
    higher_is_better = False
    needs_reference = True
    Params = MelParams

    def _accumulate(self, est, ref):
        import numpy as np

        from restorekit_plugins.spectral import mel_filterbank

        _check_same(est, ref)
        p = self.params
        fb = mel_filterbank(ref.sample_rate, p.n_fft, p.n_mels, p.fmin_hz, p.fmax_hz).T.astype(np.float32)
        norm = _power_norm(p.n_fft)
        for pe, pr in _paired_power(est, ref, p.n_fft, p.hop_length):
            le = 10 * np.log10(np.maximum((pe / norm) @ fb, 10 ** (MEL_FLOOR_DB / 10)))
            lr = 10 * np.log10(np.maximum((pr / norm) @ fb, 10 ** (MEL_FLOOR_DB / 10)))
            yield le - MEL_FLOOR_DB, lr - MEL_FLOOR_DB  # >= 0: dB above the floor

    def compute(self, est, ref):
        import numpy as np

        total, count = 0.0, 0
        for le, lr in self._accumulate(est, ref):
            total += float(np.abs(le - lr).sum(dtype=np.float64))
            count += le.size
        return total / count


class MelCosine(MelL1):
    """Cosine similarity of the floored log-mel spectrograms (dB above -100 dB), all frames at once."""

    id = "mel_cosine"
    summary = "Cosine similarity of log-mel spectrograms (1 = identical)."
    unit = ""
    higher_is_better = True

    def compute(self, est, ref):
        import math

        import numpy as np

        dot = ne = nr = 0.0
        for le, lr in self._accumulate(est, ref):
            le, lr = le.astype(np.float64), lr.astype(np.float64)
            dot += float((le * lr).sum())
            ne += float((le * le).sum())
            nr += float((lr * lr).sum())
        if ne == 0 and nr == 0:
            return 1.0  # both below the floor everywhere: identical
        if ne == 0 or nr == 0:
            return 0.0
        return min(1.0, dot / math.sqrt(ne * nr))


class SpecPSNR(Metric):
    """10*log10(max|X_ref|^2 / mean(|X_est| - |X_ref|)^2) on STFT magnitudes; capped at 200 dB."""

    id = "spec_psnr"
    summary = "Peak signal-to-noise ratio of the magnitude spectrogram (dB)."
    unit = "dB"
    higher_is_better = True
    needs_reference = True
    Params = SpectralParams

    def compute(self, est, ref):
        import numpy as np

        p = self.params
        _check_same(est, ref)
        peak, sq, count = 0.0, 0.0, 0
        for pe, pr in _paired_power(est, ref, p.n_fft, p.hop_length):
            me, mr = np.sqrt(pe), np.sqrt(pr)
            peak = max(peak, float(mr.max()))
            sq += float(np.square(me - mr, dtype=np.float64).sum())
            count += mr.size
        if peak == 0:
            raise MetricError("spec_psnr: the reference is silent, so it has no peak")
        return _ratio_db(peak * peak, sq / count)


class ViSQOL(Metric):
    """ViSQOL v3 audio mode (visqol-python): mono downmixes resampled to 48 kHz; needs >= 1 s."""

    id = "visqol"
    summary = "ViSQOL audio-mode MOS-LQO, 1-5 (optional: pip install 'restorekit[visqol]')."
    unit = "MOS"
    higher_is_better = True
    needs_reference = True
    requires = ("visqol",)
    install_hint = "pip install 'restorekit[visqol]'  (or: pip install visqol-python)"
    slow = True
    cost = "about 0.5-2 s per second of audio"
    RATE = 48000
    MIN_S = 1.0

    def compute(self, est, ref):
        import logging

        import numpy as np
        import soxr

        from restorekit.cache import load_once
        from restorekit.metrics import check_downmix

        _check_same(est, ref)
        if ref.duration_s < self.MIN_S:
            raise MetricError(f"visqol needs at least {self.MIN_S:g} s of audio, got {ref.duration_s:.3f} s")
        for audio, name in ((ref, "ref"), (est, "est")):
            check_downmix(audio, name, "ViSQOL's audio mode scores the mono downmix, which would be silence here")

        def prepare(audio):
            mono = audio.numpy().mean(axis=0, dtype=np.float64)
            return soxr.resample(mono, audio.sample_rate, self.RATE) if audio.sample_rate != self.RATE else mono

        def make_api():
            from visqol import VisqolApi

            api = VisqolApi()
            api.create(mode="audio")
            return api

        api = load_once(("restorekit.metrics.visqol", "audio"), make_api)
        logging.getLogger("visqol").setLevel(logging.ERROR)
        try:
            result = api.measure_from_arrays(prepare(ref), prepare(est), sample_rate=self.RATE)
        except ValueError as exc:
            raise MetricError(f"visqol could not score this audio: {exc}") from exc
        return float(result.moslqo)


# -- without a reference ----------------------------------------------------------------------


def _mean_power_spectrum(audio: Audio, n_fft: int, hop: int) -> np.ndarray:
    """Long-term power spectrum: normalized |STFT|^2 averaged over frames (inside the signal) and channels."""
    import numpy as np

    from restorekit_plugins.spectral import stft_blocks

    total = np.zeros(n_fft // 2 + 1)
    count = 0
    for xb in stft_blocks(_x(audio), n_fft, hop, center=False):
        p = xb.real ** 2 + xb.imag ** 2
        total += p.sum(axis=(0, 1), dtype=np.float64)
        count += p.shape[0] * p.shape[1]
    return total / count / _power_norm(n_fft)


class BandwidthParams(SpectralParams):
    n_fft: int = Field(4096, ge=16, le=65536, description="STFT size in samples (periodic Hann window).")
    hop_length: int = Field(2048, ge=1, le=65536, description="STFT hop in samples.")
    threshold_db: float = Field(60.0, ge=10, le=150, description=(
        "Without a spectral step: the highest frequency whose smoothed long-term level is within "
        "this many dB of the spectrum's peak. A step edge must also be within it."))
    step_db: float = Field(20.0, ge=3, le=150, description=(
        "A cutoff edge: the level just below it is at least this many dB above everything more than "
        "500 Hz above it (a low-pass or band limit followed by noise or silence)."))
    min_step_hz: float = Field(1000.0, ge=0, le=384000, description=(
        "Steps below this frequency are not taken as a cutoff (a loud bass is not a band limit)."))


class Bandwidth(Metric):
    """Effective bandwidth of the long-term spectrum: the edge of its largest spectral step, else a threshold.

    The long-term power spectrum is smoothed over 100 Hz. If some frequency f above
    min_step_hz has a level at least step_db above the loudest level anywhere beyond
    f + 500 Hz (a band limit, even with a noise floor after it), the bandwidth is the
    edge of the largest such step (where the level crosses halfway, in dB, between the
    band and what lies beyond). Otherwise it is the highest frequency within
    threshold_db of the peak (above 20 Hz).
    """

    id = "bandwidth_hz"
    summary = "Effective bandwidth: the spectral cutoff (band edge) of the long-term spectrum (Hz)."
    unit = "Hz"
    higher_is_better = True
    Params = BandwidthParams
    SMOOTH_HZ = 100.0
    GUARD_HZ = 500.0

    def compute(self, est, ref=None):
        import numpy as np

        check_audible(est, "bandwidth_hz")
        p = self.params
        psd = _mean_power_spectrum(est, p.n_fft, p.hop_length)
        bin_hz = est.sample_rate / p.n_fft
        freqs = np.arange(psd.size) * bin_hz
        width = max(1, round(self.SMOOTH_HZ / bin_hz))
        level = 10 * np.log10(np.maximum(np.convolve(psd, np.ones(width) / width, mode="same"), 1e-30))
        audible = freqs >= 20.0
        if not audible.any() or psd[audible].max() <= 0:
            raise MetricError("bandwidth_hz: the audio is silent")
        valid = audible & (level >= level[audible].max() - p.threshold_db)
        guard = max(1, round(self.GUARD_HZ / bin_hz))
        n = level.size
        beyond = np.full(n, np.inf)  # loudest level more than `guard` bins above each bin
        if n > guard:
            beyond[: n - guard] = np.maximum.accumulate(level[::-1])[::-1][guard:]
        step = np.where(valid & (freqs >= p.min_step_hz), level - beyond, -np.inf)
        best = float(step.max())
        if best < p.step_db:
            return float(freqs[np.flatnonzero(valid)[-1]])
        edge = int(np.flatnonzero(step >= best - 1.0)[-1])  # the top of the band before the step
        half = (level[edge] + beyond[edge]) / 2
        above = np.flatnonzero(level[edge:edge + guard + 1] >= half)
        return float(freqs[edge + above[-1]])


class Centroid(Metric):
    """Spectral centroid of the long-term power spectrum: sum(f * P(f)) / sum(P(f))."""

    id = "centroid_hz"
    summary = "Spectral centroid of the long-term power spectrum (Hz)."
    unit = "Hz"
    higher_is_better = None
    Params = SpectralParams

    def compute(self, est, ref=None):
        import numpy as np

        check_audible(est, "centroid_hz")
        p = self.params
        psd = _mean_power_spectrum(est, p.n_fft, p.hop_length)
        if psd.sum() <= 0:
            raise MetricError("centroid_hz: the audio is silent")
        freqs = np.arange(psd.size) * est.sample_rate / p.n_fft
        return float((freqs * psd).sum() / psd.sum())


class Flatness(Metric):
    """Spectral flatness per frame (geometric / arithmetic mean of power), averaged over non-silent frames."""

    id = "flatness"
    summary = "Spectral flatness, 0 (tonal) to 1 (white noise about 0.56); mean over non-silent frames."
    unit = ""
    higher_is_better = None
    Params = SpectralParams

    def compute(self, est, ref=None):
        import numpy as np

        from restorekit_plugins.spectral import stft_blocks

        check_audible(est, "flatness")
        p = self.params
        norm = _power_norm(p.n_fft)
        total, count = 0.0, 0
        for xb in stft_blocks(_x(est), p.n_fft, p.hop_length, center=False):
            pw = np.maximum((xb.real ** 2 + xb.imag ** 2) / norm, SILENT_POWER)
            arith = pw.mean(axis=-1)
            geo = np.exp(np.log(pw).mean(axis=-1))
            loud = arith > 2 * SILENT_POWER
            total += float((geo[loud] / arith[loud]).sum(dtype=np.float64))
            count += int(loud.sum())
        if count == 0:
            raise MetricError("flatness: the audio is silent (every frame is below -100 dB)")
        return total / count


class RMS(Metric):
    """10*log10(mean of x^2 over all samples and channels); a full-scale sine is -3.01 dBFS; floor -200."""

    id = "rms_dbfs"
    summary = "RMS level over all channels (dBFS; a full-scale sine reads -3.01)."
    unit = "dBFS"
    higher_is_better = None

    def compute(self, est, ref=None):
        import math

        x = _x(est)
        return 10 * math.log10(max(_energy(x) / x.size, 1e-20))


class Loudness(Metric):
    """Integrated loudness per ITU-R BS.1770-4 (pyloudnorm), gated; needs >= 0.4 s and <= 5 channels."""

    id = "lufs"
    summary = "Integrated loudness, ITU-R BS.1770-4 (LUFS)."
    unit = "LUFS"
    higher_is_better = None

    def compute(self, est, ref=None):
        import math
        import warnings

        import numpy as np
        import pyloudnorm

        if est.duration_s < 0.4:
            raise MetricError(f"lufs needs at least 0.4 s of audio (one gating block), got {est.duration_s:.3f} s")
        if est.channels > 5:
            raise MetricError(f"lufs: BS.1770 weights are defined for up to 5 channels, got {est.channels}")
        meter = pyloudnorm.Meter(est.sample_rate)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = meter.integrated_loudness(est.numpy().T.astype(np.float64))
        if not math.isfinite(value):
            raise MetricError("lufs: the audio is silent (no 400 ms block above the -70 LUFS gate)")
        return float(value)


class TruePeak(Metric):
    """ITU-R BS.1770-4 true peak: max |x| after 4x oversampling (2x at >= 96 kHz), never below the sample peak."""

    id = "true_peak_dbtp"
    summary = "True (inter-sample) peak, 4x oversampled per BS.1770-4 (dBTP)."
    unit = "dBTP"
    higher_is_better = None
    BLOCK = 1 << 18
    MARGIN = 64

    def compute(self, est, ref=None):
        import math

        import numpy as np
        from scipy.signal import resample_poly

        x = _x(est)
        rate = est.sample_rate
        up = 4 if rate < 96000 else 2 if rate < 192000 else 1
        peak = float(np.abs(x).max()) if x.size else 0.0
        if up > 1:
            n = x.shape[1]
            for start in range(0, n, self.BLOCK):
                a, b = max(0, start - self.MARGIN), min(n, start + self.BLOCK + self.MARGIN)
                y = resample_poly(x[:, a:b].astype(np.float64), up, 1, axis=-1)
                lo, hi = (start - a) * up, (min(n, start + self.BLOCK) - a) * up
                peak = max(peak, float(np.abs(y[:, lo:hi]).max()))
        return 20 * math.log10(max(peak, 1e-10))


class ClippedParams(MetricParams):
    tolerance_db: float = Field(0.0001, ge=0, le=3, description=(
        "A sample counts as at the clipping level when it is within this many dB of the channel's "
        "positive (or negative) peak."))
    min_run_samples: int = Field(3, ge=1, le=1000, description=(
        "Only runs of at least this many consecutive samples at the level count (a flat top)."))


class Clipped(Metric):
    """Fraction of samples in flat runs at the channel's positive or negative peak (clipping)."""

    id = "clipped_fraction"
    summary = "Fraction of samples stuck at the peak level in flat runs (clipping), 0 to 1."
    unit = ""
    higher_is_better = False
    Params = ClippedParams

    def compute(self, est, ref=None):
        import numpy as np

        x = _x(est)
        if x.size == 0:
            raise MetricError("clipped_fraction: no samples")
        keep = 10 ** (-self.params.tolerance_db / 20)
        clipped = 0
        for row in x:
            hi, lo = float(row.max()), float(row.min())
            at = np.zeros(row.shape, dtype=bool)
            if hi > 0:
                at |= row >= hi * keep
            if lo < 0:
                at |= row <= lo * keep
            edges = np.diff(np.concatenate([[False], at, [False]]).view(np.int8))  # 1 byte a sample
            starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
            runs = ends - starts
            clipped += int(runs[runs >= self.params.min_run_samples].sum())
        return clipped / x.size


class BandLevelParams(SpectralParams):
    low_hz: float = Field(16000.0, ge=0, le=384000, description="Lower edge of the band in Hz.")
    high_hz: float = Field(20000.0, gt=0, le=384000, description="Upper edge of the band in Hz.")
    ref_low_hz: float = Field(13000.0, ge=0, le=384000, description="Lower edge of the reference band in Hz.")
    ref_high_hz: float = Field(15500.0, gt=0, le=384000, description="Upper edge of the reference band in Hz.")

    @model_validator(mode="after")
    def _bands(self):
        for lo, hi in (("low_hz", "high_hz"), ("ref_low_hz", "ref_high_hz")):
            if getattr(self, hi) <= getattr(self, lo):
                raise ValueError(f"{hi} ({getattr(self, hi)}) must be above {lo} ({getattr(self, lo)})")
        return self

    def bins(self, sample_rate: int, n_bins: int, which: str) -> np.ndarray:
        """Boolean mask of the STFT bins inside the band (`which`: "band" or "ref")."""
        import numpy as np

        lo, hi = (self.low_hz, self.high_hz) if which == "band" else (self.ref_low_hz, self.ref_high_hz)
        if lo >= sample_rate / 2:
            raise MetricError(f"{lo:g}-{hi:g} Hz lies above the Nyquist frequency ({sample_rate / 2:g} Hz): "
                              "nothing to measure there; resample the audio or lower the band")
        freqs = np.arange(n_bins) * sample_rate / (2 * (n_bins - 1))
        mask = (freqs >= lo) & (freqs < hi)
        if not mask.any():
            raise MetricError(f"no STFT bin between {lo:g} and {hi:g} Hz; raise n_fft")
        return mask


class BandLevel(Metric):
    """Mean power per Hz of a band over that of a reference band, long-term spectrum, in dB.

    With the defaults (16-20 kHz against 13-15.5 kHz) it says whether the band above
    generated music's 16 kHz cliff was filled: about -95 dB when it is empty, within a few
    dB of 0 for full-band music.
    """

    id = "band_level_db"
    summary = "Level of a band (default 16-20 kHz) relative to a reference band (13-15.5 kHz), in dB."
    unit = "dB"
    higher_is_better = None
    Params = BandLevelParams

    def compute(self, est, ref=None):
        import math

        check_audible(est, "band_level_db")
        p = self.params
        psd = _mean_power_spectrum(est, p.n_fft, p.hop_length)
        band, reference = psd[p.bins(est.sample_rate, psd.size, "band")], psd[p.bins(est.sample_rate, psd.size, "ref")]
        if reference.mean() <= 0:
            raise MetricError("band_level_db: the reference band is silent")
        return 10 * math.log10(max(float(band.mean()), 1e-30) / float(reference.mean()))


class BandTrackingParams(BandLevelParams):
    smooth_ms: float = Field(50.0, ge=1, le=5000, description="Envelope smoothing (moving average) in ms.")


class BandTracking(Metric):
    """Correlation over time of a band's log energy with a reference band's (smoothed envelopes).

    Near 1 when the band follows the music (as cymbals and air do), near 0 for a steady
    band (hiss, or a constant synthesized fill). Frames where either band is silent are left out.
    """

    id = "band_tracking"
    summary = "Correlation over time of a band's envelope (16-20 kHz) with a reference band's (13-15.5 kHz)."
    unit = ""
    higher_is_better = True
    Params = BandTrackingParams

    def compute(self, est, ref=None):
        import numpy as np

        from restorekit_plugins.spectral import stft_blocks

        check_audible(est, "band_tracking")
        p = self.params
        n_bins = p.n_fft // 2 + 1
        band, reference = p.bins(est.sample_rate, n_bins, "band"), p.bins(est.sample_rate, n_bins, "ref")
        a, b = [], []
        for xb in stft_blocks(_x(est), p.n_fft, p.hop_length, center=False):
            pw = (xb.real ** 2 + xb.imag ** 2).sum(axis=0)  # channels summed: (frames, bins)
            a.append(pw[:, band].sum(axis=-1))
            b.append(pw[:, reference].sum(axis=-1))
        a, b = np.concatenate(a), np.concatenate(b)
        width = max(1, round(p.smooth_ms / 1000 * est.sample_rate / p.hop_length))
        kernel = np.ones(width) / width
        a, b = np.convolve(a, kernel, "valid"), np.convolve(b, kernel, "valid")
        loud = (a > 0) & (b > 0)
        if loud.sum() < 3:
            raise MetricError("band_tracking: fewer than three frames where both bands have energy")
        la, lb = np.log10(a[loud]), np.log10(b[loud])
        if la.std() == 0 or lb.std() == 0:
            return 0.0
        return float(np.corrcoef(la, lb)[0, 1])


BUILTIN_METRICS = (SNR, SISDR, LSD, LSDBand, LSDNorm, MelL1, MelCosine, SpecPSNR, ViSQOL,
                   Bandwidth, Centroid, Flatness, RMS, Loudness, TruePeak, Clipped, BandLevel, BandTracking)


@hookimpl
def register_metrics(register):
    for cls in BUILTIN_METRICS:
        register(cls)
