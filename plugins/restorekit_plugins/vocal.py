"""Vocal enhancement: `vocal.deess`, a split-band de-esser for a vocal stem.

The rest of vocal enhancement is built from other families' stages in a pipeline (see
pipelines/zero_shot.yaml and docs/stages/vocal.md): `denoise.spectral_gate` with
non-stationary voice settings, and optionally `eq.shape` with a presence peak. numpy and
scipy are imported inside the functions.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from restorekit.hookspecs import hookimpl
from restorekit.stage import Accepts, Stage, StageParams

BLOCK_FRAMES = 1 << 16
MARGIN_FRAMES = 1 << 12  # FFT band split context each side; the band filter's response is a few ms
DETECTOR_HOP_S = 0.001
EDGE_OCTAVES = 1 / 6  # raised-cosine band edges: a third of an octave wide
EPS = 1e-12


class Deess(Stage):
    """Split-band de-esser: turns down the sibilance band while it is too loud against the whole.

    The signal is split (zero-phase FFT filter, raised-cosine edges a third of an octave
    wide) into the band `low_hz`..`high_hz` and the rest, which add back to the input
    exactly. A detector compares the band's power with the full band's over `detector_ms`
    (all channels together, so the stereo image holds): when the band is more than
    `threshold_db` relative to the full band, and louder than `floor_db` dBFS, the band
    alone is turned down by the excess, at most `max_reduction_db`. The gain falls ahead
    of a sibilant within `attack_ms` (look-ahead, no latency) and recovers within
    `release_ms`, both for the full `max_reduction_db` (linear in dB). Outside sibilants
    the output equals the input. Bands above the Nyquist frequency leave the audio as is.
    Runs in blocks: memory is the input, the output and one block.
    """

    id = "vocal.deess"
    summary = "De-esser: dynamic cut of the sibilance band (5-9 kHz) when it is loud against the full band."
    accepts = Accepts(devices=frozenset({"cpu"}))

    class Params(StageParams):
        low_hz: float = Field(5000.0, ge=1000, le=20000, description="Lower edge of the sibilance band in Hz.")
        high_hz: float = Field(9000.0, ge=2000, le=24000, description=(
            "Upper edge of the sibilance band in Hz (capped just below the Nyquist frequency)."))
        threshold_db: float = Field(-15.0, ge=-60, le=0, description=(
            "Band power relative to the full-band power, in dB, above which the band is turned down."))
        max_reduction_db: float = Field(10.0, ge=0, le=40, description="Largest cut of the band in dB.")
        floor_db: float = Field(-50.0, ge=-120, le=0, description=(
            "Band level in dBFS below which nothing is cut (keeps quiet hiss and silence untouched)."))
        attack_ms: float = Field(2.0, ge=0, le=100, description=(
            "Time in ms the gain takes to fall by max_reduction_db, ahead of the sibilant (look-ahead)."))
        release_ms: float = Field(80.0, ge=1, le=2000, description=(
            "Time in ms the gain takes to recover by max_reduction_db after the sibilant."))
        detector_ms: float = Field(5.0, ge=1, le=50, description="Power averaging window of the detector in ms.")
        max_sibilant_fraction: float | None = Field(0.35, gt=0, le=1, description=(
            "Sibilants are brief: when the band is over the threshold for more than this fraction of the "
            "audible time, it is the material's steady brightness, not sibilance, and nothing is cut. "
            "Empty: cut wherever it is over the threshold."))

        @model_validator(mode="after")
        def _band_order(self):
            if self.low_hz >= self.high_hz:
                raise ValueError(f"low_hz ({self.low_hz}) must be below high_hz ({self.high_hz})")
            return self

    def process(self, audio):
        import numpy as np
        from restorekit.audio import Audio

        x = audio.numpy()
        rate = audio.sample_rate
        nyquist = rate / 2
        if self.params.low_hz >= 0.95 * nyquist:
            self.note(f"{self.params.low_hz / 1000:g} kHz and up is above what {rate} Hz holds: nothing to de-ess")
            return audio
        hop = max(1, round(DETECTOR_HOP_S * rate))
        block = max(hop, BLOCK_FRAMES // hop * hop)
        splitter = _BandSplit(rate, self.params.low_hz, min(self.params.high_hz, 0.98 * nyquist), block)
        frames = audio.frames
        n_det = -(-frames // hop)
        band_power = np.empty(n_det)
        full_power = np.empty(n_det)
        for start in range(0, frames, block):  # pass 1: detector powers per 1 ms frame
            stop = min(start + block, frames)
            band = splitter.band(x, start, stop)
            f0 = start // hop
            band_power[f0:f0 + -(-(stop - start) // hop)] = _frame_mean(np.square(band).sum(0), hop)
            full_power[f0:f0 + -(-(stop - start) // hop)] = _frame_mean(np.square(x[:, start:stop]).sum(0), hop)
        gain_db, over = self._gain_db(band_power, full_power, hop / rate * 1000, audio.channels)
        limit = self.params.max_sibilant_fraction
        if limit is not None and over > limit:
            self.note(f"{self.params.low_hz / 1000:g}-{self.params.high_hz / 1000:g} kHz is over threshold_db "
                      f"{self.params.threshold_db:g} for {100 * over:.0f} % of the audible time (more than "
                      f"max_sibilant_fraction {limit:g}): steady brightness, not sibilance; left unchanged")
            return audio
        if not gain_db.any():
            self.note(f"sibilance ({self.params.low_hz / 1000:g}-{self.params.high_hz / 1000:g} kHz) never above "
                      f"threshold_db {self.params.threshold_db:g}: left unchanged")
            return audio
        active = float((gain_db < -0.1).mean())
        self.note(f"turned {self.params.low_hz / 1000:g}-{self.params.high_hz / 1000:g} kHz down in "
                  f"{100 * active:.1f} % of the time, by up to {-float(gain_db.min()):.1f} dB")
        out = np.empty_like(x)
        centres = (np.arange(n_det) + 0.5) * hop
        for start in range(0, frames, block):  # pass 2: apply the gain to the band
            stop = min(start + block, frames)
            band = splitter.band(x, start, stop)
            gain = 10.0 ** (np.interp(np.arange(start, stop), centres, gain_db) / 20.0)
            np.multiply(band, (gain - 1.0).astype(np.float32), out=band)
            np.add(x[:, start:stop], band, out=out[:, start:stop])
        return Audio.from_numpy(out, rate)

    def _gain_db(self, band_power, full_power, frame_ms: float, channels: int):
        """(gain in dB (<= 0) per detector frame with look-ahead attack and release ramps, the fraction of
        the audible frames (full band above floor_db) where the band is over the threshold)."""
        import numpy as np
        from scipy.ndimage import uniform_filter1d

        p = self.params
        width = max(1, round(p.detector_ms / frame_ms))
        band = uniform_filter1d(band_power, width, mode="nearest")
        full = uniform_filter1d(full_power, width, mode="nearest")
        ratio_db = 10 * np.log10((band + EPS) / (full + EPS))
        level_db = 10 * np.log10(band / channels + EPS)
        cut = np.clip(ratio_db - p.threshold_db, 0.0, p.max_reduction_db)
        cut[level_db < p.floor_db] = 0.0
        audible = int((10 * np.log10(full / channels + EPS) >= p.floor_db).sum())
        over = float((cut > 0).sum()) / max(1, audible)
        if not cut.any() or p.max_reduction_db == 0:
            return np.zeros_like(cut), over
        k = np.arange(len(cut), dtype=np.float64)
        # release: cut[n] >= cut[m] - slope * (n - m) for m <= n (a running max along a ramp)
        slope = p.max_reduction_db * frame_ms / p.release_ms
        cut = np.maximum.accumulate(cut + slope * k) - slope * k
        if p.attack_ms > 0:  # look-ahead: the same from the other side
            slope = p.max_reduction_db * frame_ms / p.attack_ms
            cut = np.maximum.accumulate((cut - slope * k)[::-1])[::-1] + slope * k
        return -cut, over


class _BandSplit:
    """Zero-phase FFT band-pass over blocks with context, the same for every block."""

    def __init__(self, rate: int, low_hz: float, high_hz: float, block: int) -> None:
        import numpy as np

        self.length = block + 2 * MARGIN_FRAMES
        f = np.maximum(np.fft.rfftfreq(self.length, 1.0 / rate), 1e-3)
        half = EDGE_OCTAVES / 2
        rise = np.clip((np.log2(f / low_hz) + half) / EDGE_OCTAVES, 0.0, 1.0)
        fall = np.clip((np.log2(high_hz / f) + half) / EDGE_OCTAVES, 0.0, 1.0)
        self.weights = ((0.5 - 0.5 * np.cos(np.pi * rise)) * (0.5 - 0.5 * np.cos(np.pi * fall))).astype(np.float32)

    def band(self, x, start: int, stop: int):
        """The band of x[:, start:stop] (channels, stop - start), float32."""
        import numpy as np

        frames = x.shape[1]
        lo, hi = start - MARGIN_FRAMES, start - MARGIN_FRAMES + self.length
        seg = np.zeros((x.shape[0], self.length), dtype=np.float32)
        a, b = max(lo, 0), min(hi, frames)
        seg[:, a - lo:b - lo] = x[:, a:b]
        spec = np.fft.rfft(seg, axis=-1)
        spec *= self.weights
        out = np.fft.irfft(spec, n=self.length, axis=-1)
        return np.ascontiguousarray(out[:, start - lo:stop - lo], dtype=np.float32)


def _frame_mean(power, hop: int):
    """Mean of `power` (frames,) over consecutive groups of `hop` (the last group may be short)."""
    import numpy as np

    n = len(power)
    groups = -(-n // hop)
    sums = np.add.reduceat(power, np.arange(0, n, hop)) if n else np.zeros(0)
    counts = np.full(groups, hop, dtype=np.float64)
    counts[-1] = n - (groups - 1) * hop
    return sums / counts


@hookimpl
def register_stages(register):
    register(Deess)
