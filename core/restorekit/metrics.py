"""The `Metric` contract (registered through `register_metrics`) and the alignment of an estimate to its reference.

Before a reference metric computes, `align` resamples the estimate to the reference's
rate, keeps equal channel counts (else downmixes both to mono), optionally removes a
constant delay (cross-correlation of the first 30 s), and trims both to the shorter
length; each step that changed something is a note. No torch or numpy at import time.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from restorekit.errors import RestorekitError
from restorekit.stage import StageParams

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from restorekit.audio import Audio

METRIC_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
DELAY_SEARCH_S = 30.0
#: Ratios in dB (SNR, SI-SDR, PSNR) are capped here, so identical signals give a finite number.
MAX_RATIO_DB = 200.0


class MetricError(RestorekitError):
    """A metric cannot be computed on the audio it was given (the message says why)."""


class MetricParams(StageParams):
    """Base for metric parameters: same rules as stage parameters (units in names, ranges, help)."""


class Metric:
    """One quality measure. Subclass, set the class attributes, implement `compute`.

    - `id`: lowercase, digits and `_` ("snr", "lsd_band"); third parties may prefix
      theirs with their plugin's name and a dot ("myplugin.sharpness").
    - `summary`: one line; `unit`: "dB", "Hz", "LUFS", "" for a plain number.
    - `higher_is_better`: True, False, or None where neither is (loudness, centroid).
    - `needs_reference`: True when `compute` compares against a reference.
    - `requires`: importable modules an optional dependency provides; `install_hint`:
      the command that installs them. Missing ones make the metric unavailable, and
      `restorekit metrics` / `compare` skip it with that hint instead of failing.

    `compute(est, ref)` gets CPU audio (aligned to `ref` when `needs_reference`) and
    returns a finite float, or raises `MetricError` saying what to do.
    """

    id: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    unit: ClassVar[str] = ""
    higher_is_better: ClassVar[bool | None] = None
    needs_reference: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""
    Params: ClassVar[type[MetricParams]] = MetricParams

    def __init__(self, params: MetricParams | dict[str, Any] | None = None, /, **kwargs: Any) -> None:
        from restorekit.stage import build_params

        self.params = build_params(self.Params, params, kwargs, self.id)

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the metric cannot run here (an optional dependency is missing), or None."""
        absent = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if not absent:
            return None
        hint = f"; install it with: {cls.install_hint}" if cls.install_hint else ""
        return f"needs the Python module(s) {', '.join(absent)}, which are not installed{hint}"

    @classmethod
    def available(cls) -> bool:
        """True when every optional dependency is installed."""
        return cls.unavailable() is None

    def compute(self, est: Audio, ref: Audio | None) -> float:
        raise NotImplementedError(f"{type(self).__name__}.compute")

    def __call__(self, est: Audio, ref: Audio | None = None, *, max_delay_ms: float = 0.0) -> float:
        """Align (for reference metrics) and compute; raises MetricError on a problem."""
        reason = self.unavailable()
        if reason:
            raise MetricError(f"{self.id} is unavailable: {reason}")
        if self.needs_reference:
            if ref is None:
                raise MetricError(f"{self.id} compares against a reference; give one")
            aligned = align(est, ref, max_delay_ms=max_delay_ms)
            est, ref = aligned.est, aligned.ref
        return finite_value(self, self.compute(est.to("cpu"), None if ref is None else ref.to("cpu")))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{type(self).__name__}({params})"


def finite_value(metric: Metric, value: Any) -> float:
    """`value` as a float, or a MetricError when it is NaN or infinite."""
    value = float(value)
    if not math.isfinite(value):
        raise MetricError(f"{metric.id} came out as {value}; the audio may be silent or empty")
    return value


def check_metric_class(cls: Any) -> list[str]:
    """Reasons a class is not a valid metric (empty when it is)."""
    from restorekit.contracts import check_contract

    problems = check_contract(cls, Metric, "restorekit.metrics.Metric", name_attr="id",
                              pattern=METRIC_ID_PATTERN, example="si_sdr", params_attr="Params",
                              params_base=MetricParams, params_name="restorekit.metrics.MetricParams")
    if problems and "is not a subclass" in problems[0]:
        return problems
    if cls.higher_is_better not in (True, False, None):
        problems.append(f"{cls.__name__}.higher_is_better must be True, False or None")
    if not isinstance(cls.unit, str):
        problems.append(f"{cls.__name__}.unit must be a string")
    return problems


# -- alignment --------------------------------------------------------------------------------


@dataclass
class Aligned:
    """An estimate and its reference matched in rate, channels, delay and length."""

    est: Audio
    ref: Audio
    notes: list[str] = field(default_factory=list)
    delay_frames: int = 0


def align(est: Audio, ref: Audio, *, max_delay_ms: float = 0.0) -> Aligned:
    """Match `est` to `ref`: rate (resample est), channels, optional constant delay, length.

    See the module docstring for each rule. `max_delay_ms` > 0 searches a delay of est
    relative to ref within +/- that many milliseconds and removes it.
    """
    from restorekit import dsp

    notes: list[str] = []
    est, ref = est.to("cpu"), ref.to("cpu")
    if est.sample_rate != ref.sample_rate:
        notes.append(f"resampled est {est.sample_rate} -> {ref.sample_rate} Hz")
        est = dsp.resample(est, ref.sample_rate)
    if est.channels != ref.channels:
        for name in ("est", "ref"):
            audio = est if name == "est" else ref
            if audio.channels != 1:
                notes.append(f"downmixed {name} {audio.channels} -> 1 channel (est has {est.channels}, "
                             f"ref has {ref.channels})")
        est, ref = dsp.convert_channels(est, 1), dsp.convert_channels(ref, 1)
    delay = 0
    if max_delay_ms > 0:
        delay = find_delay(est, ref, round(max_delay_ms * ref.sample_rate / 1000))
        if delay:
            ms = 1000 * delay / ref.sample_rate
            if delay > 0:
                est = est.with_samples(est.samples[:, delay:])
                notes.append(f"est lags ref by {delay} frames ({ms:.2f} ms): removed that delay")
            else:
                ref = ref.with_samples(ref.samples[:, -delay:])
                notes.append(f"est leads ref by {-delay} frames ({-ms:.2f} ms): removed that delay")
    if est.frames != ref.frames:
        n = min(est.frames, ref.frames)
        which = "est" if est.frames > n else "ref"
        longer = max(est.frames, ref.frames)
        notes.append(f"trimmed {which} {longer} -> {n} frames ({(longer - n) / ref.sample_rate * 1000:.1f} ms)")
        est = est.with_samples(est.samples[:, :n])
        ref = ref.with_samples(ref.samples[:, :n])
    if est.frames == 0:
        raise MetricError("nothing left to compare after alignment (one of the signals is empty)")
    return Aligned(est, ref, notes, delay)


def find_delay(est: Audio, ref: Audio, max_lag: int) -> int:
    """Frames by which `est` lags `ref` (negative: leads), within +/- `max_lag`, by cross-correlation.

    Uses the mono downmixes of the first 30 s; both must be at the same rate.
    """
    import numpy as np
    from scipy import fft

    if max_lag <= 0:
        return 0
    n = min(est.frames, ref.frames, int(DELAY_SEARCH_S * ref.sample_rate))
    a = est.numpy()[:, :n].mean(axis=0, dtype=np.float64)
    b = ref.numpy()[:, :n].mean(axis=0, dtype=np.float64)
    if not a.any() or not b.any():
        return 0
    size = fft.next_fast_len(2 * n)
    xc = fft.irfft(fft.rfft(a, size) * np.conj(fft.rfft(b, size)), size)
    max_lag = min(max_lag, n - 1)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = np.concatenate([xc[:max_lag + 1], xc[size - max_lag:]]) if max_lag else xc[:1]
    return int(lags[int(np.argmax(values))])


# -- spectral helpers for metric authors ---------------------------------------------------------


def stft_blocks(x: np.ndarray, n_fft: int, hop: int, block_frames: int = 256,
                center: bool = True) -> Iterator[np.ndarray]:
    """Complex STFT of (channels, frames) `x` in blocks of STFT frames, (channels, frames, bins) each.

    Periodic Hann window. With `center`, frames are centred (zero padding of n_fft/2 at
    both ends), so n samples give 1 + n // hop frames; without it, only frames that lie
    inside the signal are taken, 1 + (n - n_fft) // hop of them (a signal shorter than
    n_fft is zero-padded to one frame). Memory stays at one block, whatever the length
    of `x`; within a block everything is vectorized.
    """
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy import fft

    x = np.asarray(x, dtype=np.float32)
    n = x.shape[-1]
    pad = n_fft // 2 if center else 0
    total = 1 + n // hop if center else 1 + max(0, n - n_fft) // hop
    window = hann(n_fft).astype(np.float32)
    for f0 in range(0, total, block_frames):
        nb = min(block_frames, total - f0)
        start = f0 * hop - pad
        stop = start + (nb - 1) * hop + n_fft
        seg = x[:, max(start, 0):min(stop, n)]
        if start < 0 or stop > n:
            seg = np.pad(seg, ((0, 0), (max(0, -start), max(0, stop - n))))
        frames = sliding_window_view(seg, n_fft, axis=-1)[:, ::hop][:, :nb]
        yield fft.rfft(frames * window, axis=-1)


def hann(n: int) -> np.ndarray:
    """Periodic Hann window of length n (float64)."""
    import numpy as np

    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin_hz: float = 0.0,
                   fmax_hz: float | None = None) -> np.ndarray:
    """Triangular mel filters (HTK mel scale, peak 1), shaped (n_mels, n_fft // 2 + 1)."""
    import numpy as np

    fmax_hz = sample_rate / 2 if fmax_hz is None else min(fmax_hz, sample_rate / 2)
    if fmin_hz >= fmax_hz:
        raise MetricError(f"mel band {fmin_hz:g}-{fmax_hz:g} Hz is empty at {sample_rate} Hz")
    mel = np.linspace(_hz_to_mel(fmin_hz), _hz_to_mel(fmax_hz), n_mels + 2)
    edges = 700.0 * (10 ** (mel / 2595.0) - 1)
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs - lo) / (mid - lo)
    down = (hi - freqs) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down))


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1 + hz / 700.0)
