"""The `Metric` contract (registered through `register_metrics`) and the alignment of an estimate to its reference.

`align` refuses lengths that differ beyond the tolerance (unless `trim`), a silent
reference and channels that cancel in a needed downmix, then resamples, matches channels,
optionally removes a constant delay and trims; each change is a note. `level_dbfs`,
`check_audible` and `check_downmix` let a metric refuse degenerate input. No torch or
numpy at import time.
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from restorekit.errors import RestorekitError
from restorekit.stage import StageParams

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from restorekit.audio import Audio

METRIC_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
#: Ratios in dB (SNR, SI-SDR, PSNR) are capped here, so identical signals give a finite number.
MAX_RATIO_DB = 200.0
SILENCE_DBFS = -120.0  #: RMS (all samples) below this is silence: no reference, no spectral shape
CANCEL_DB = 40.0  #: a mono downmix this far below its channels' level: they cancel (L = -R)
DELAY_SEARCH_S = 30.0
#: est may be longer or shorter than ref by max(1 % of ref, 50 ms) and is trimmed; more needs trim=True.
LENGTH_TOLERANCE_FRACTION, LENGTH_TOLERANCE_S = 0.01, 0.05


class MetricError(RestorekitError):
    """A metric cannot be computed on the audio it was given (the message says why)."""


class LengthMismatchError(MetricError):
    """est and ref differ in length beyond the tolerance, without trim: a problem of the pair, not of a metric."""

    def __init__(self, est_s: float, ref_s: float, tolerance_s: float) -> None:
        self.est_s, self.ref_s, self.tolerance_s = est_s, ref_s, tolerance_s
        super().__init__(f"est is {est_s:.3f} s long and ref {ref_s:.3f} s: they differ by {abs(est_s - ref_s):.3f} s, "
                         f"more than the tolerance of {1000 * tolerance_s:.0f} ms (max(1 % of ref, 50 ms)), and a "
                         "score of the common part alone would hide that; pass trim=True (restorekit metrics --trim) "
                         "to measure only the common part")


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
    - `slow`: True for a metric much slower than the rest (ViSQOL). The default selection
      of `restorekit metrics` and `compare` leaves it out with a note built from `cost`
      ("about 1 s per second of audio"); asking for it by id (`-m visqol`) runs it.

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
    slow: ClassVar[bool] = False
    cost: ClassVar[str] = ""
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
    def slow_note(cls) -> str:
        """Why a slow metric is left out of the default selection, and how to include it."""
        how = f"slow: {cls.cost}" if cls.cost else "slow"
        return f"not run by default ({how}); -m {cls.id} to include it"

    def compute(self, est: Audio, ref: Audio | None) -> float:
        raise NotImplementedError(f"{type(self).__name__}.compute")

    def __call__(self, est: Audio, ref: Audio | None = None, *, max_delay_ms: float = 0.0,
                 trim: bool = False) -> float:
        """Align (for reference metrics, see `align`) and compute; raises MetricError on a problem."""
        reason = self.unavailable()
        if reason:
            raise MetricError(f"{self.id} is unavailable: {reason}")
        if self.needs_reference:
            if ref is None:
                raise MetricError(f"{self.id} compares against a reference; give one")
            aligned = align(est, ref, max_delay_ms=max_delay_ms, trim=trim)
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
    if not isinstance(cls.slow, bool) or not isinstance(cls.cost, str):
        problems.append(f"{cls.__name__}.slow must be True or False, and cost a string")
    return problems


# -- alignment ----------------------------------------------------------------------------------


@dataclass
class Aligned:
    """An estimate and its reference matched in rate, channels, delay and length."""

    est: Audio
    ref: Audio
    notes: list[str] = field(default_factory=list)
    delay_frames: int = 0


def align(est: Audio, ref: Audio, *, max_delay_ms: float = 0.0, trim: bool = False) -> Aligned:
    """Match `est` to `ref`: rate (resample est), channels, optional constant delay, length.

    See the module docstring for each rule. `max_delay_ms` > 0 searches a delay of est
    relative to ref within +/- that many milliseconds and removes it. Lengths beyond the
    tolerance raise `LengthMismatchError` unless `trim` (then the common part, with a note).
    """
    from restorekit import dsp

    notes: list[str] = []
    est, ref = est.to("cpu"), ref.to("cpu")
    est_frames = round(est.frames * ref.sample_rate / est.sample_rate)  # at ref's rate
    tolerance = max(LENGTH_TOLERANCE_FRACTION * ref.frames, LENGTH_TOLERANCE_S * ref.sample_rate)
    if abs(est_frames - ref.frames) > tolerance and not trim:
        raise LengthMismatchError(est.duration_s, ref.duration_s, tolerance / ref.sample_rate)
    if ref.frames == 0:
        raise MetricError("the reference is empty (0 frames): there is nothing to compare with")
    level = level_dbfs(ref.numpy())
    if level < SILENCE_DBFS:
        raise MetricError(f"the reference is silent (RMS {level:.0f} dBFS, below {SILENCE_DBFS:g} dBFS): "
                          "reference metrics compare against it and would mean nothing")
    if est.sample_rate != ref.sample_rate:
        notes.append(f"resampled est {est.sample_rate} -> {ref.sample_rate} Hz")
        est = dsp.resample(est, ref.sample_rate)
    if est.channels != ref.channels:
        for name in ("est", "ref"):
            audio = est if name == "est" else ref
            if audio.channels != 1:
                check_downmix(audio, name, f"the channel counts differ (est {est.channels}, ref {ref.channels}), "
                              "which is why both are downmixed; give files with the same channel count, so each "
                              "channel is compared with its own")
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
        asked = " as asked (trim)" if trim and abs(est_frames - ref.frames) > tolerance else ""
        notes.append(f"trimmed {which} {longer} -> {n} frames ({(longer - n) / ref.sample_rate * 1000:.1f} ms)"
                     f"{asked}")
        est = est.with_samples(est.samples[:, :n])
        ref = ref.with_samples(ref.samples[:, :n])
    if est.frames == 0:
        raise MetricError("nothing left to compare after alignment (one of the signals is empty)")
    return Aligned(est, ref, notes, delay)


def level_dbfs(x: np.ndarray) -> float:
    """RMS level of all samples of (channels, frames) `x` in dBFS (-inf for digital silence or no samples)."""
    import numpy as np

    step = 1 << 18
    ms = sum(float(np.square(x[:, a:a + step], dtype=np.float64).sum()) for a in range(0, x.shape[-1], step))
    return 10 * math.log10(ms / x.size) if ms > 0 else -math.inf


def check_audible(audio: Audio, what: str) -> None:
    """Raise MetricError when `audio` is silent (RMS below SILENCE_DBFS); `what` starts the message."""
    level = level_dbfs(audio.to("cpu").numpy())
    if level < SILENCE_DBFS:
        raise MetricError(f"{what}: the audio is silent (RMS {level:.0f} dBFS, below {SILENCE_DBFS:g} dBFS)")


def check_downmix(audio: Audio, what: str, advice: str = "") -> None:
    """Raise MetricError when the channels of `audio` cancel in its mono downmix (> CANCEL_DB below them)."""
    x = audio.to("cpu").numpy()
    drop = level_dbfs(x) - level_dbfs(x.mean(axis=0, keepdims=True)) if x.shape[0] > 1 else 0.0
    if drop > CANCEL_DB:  # silence gives nan (-inf - -inf): not cancelling
        amount = "to digital silence" if drop == math.inf else f"{drop:.0f} dB below the channels' own level"
        raise MetricError(f"the {audio.channels} channels of {what} cancel in the mono downmix (it falls {amount}, "
                          f"as with L = -R), so a score would describe silence" + (f"; {advice}" if advice else ""))


def find_delay(est: Audio, ref: Audio, max_lag: int) -> int:
    """Frames by which `est` lags `ref` (negative: leads), within +/- `max_lag`, by cross-correlation.

    The cross-correlations of each channel pair over the first 30 s are summed (so channels
    that would cancel in a downmix still count); both must have the same rate and channels.
    """
    import numpy as np
    from scipy import fft

    if max_lag <= 0:
        return 0
    n = min(est.frames, ref.frames, int(DELAY_SEARCH_S * ref.sample_rate))
    a = est.numpy()[:, :n].astype(np.float64)
    b = ref.numpy()[:, :n].astype(np.float64)
    if a.shape[0] != b.shape[0]:
        a, b = a.mean(axis=0, keepdims=True), b.mean(axis=0, keepdims=True)
    if not a.any() or not b.any():
        return 0
    size = fft.next_fast_len(2 * n)
    xc = fft.irfft((fft.rfft(a, size, axis=-1) * np.conj(fft.rfft(b, size, axis=-1))).sum(axis=0), size)
    max_lag = min(max_lag, n - 1)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = np.concatenate([xc[:max_lag + 1], xc[size - max_lag:]]) if max_lag else xc[:1]
    return int(lags[int(np.argmax(values))])
