"""The `degrade.*` stages: each simulates one kind of damage, deterministically for a seed.

All randomness comes from `Stage.rng()`, which the runner seeds per run and per file
(see `restorekit.batch.file_seed`): the same seed gives the same output, and each file
of a batch gets its own draws. Every stage keeps the rate, length and channel count of
its input. The array work lives in `ops` (imported inside `process`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from restorekit.stage import Accepts, Stage, StageParams

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from restorekit.audio import Audio

log = logging.getLogger("restorekit")
CPU = Accepts(devices=frozenset({"cpu"}))
MP3_CBR_KBPS = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)


def _wrap(audio: Audio, samples: np.ndarray) -> Audio:
    """New Audio at the input's rate from a (channels, frames) array."""
    import numpy as np

    from restorekit.audio import Audio

    return Audio.from_numpy(np.ascontiguousarray(samples, dtype=np.float32), audio.sample_rate)


def _ordered(params, low: str, high: str):
    if getattr(params, low) > getattr(params, high):
        raise ValueError(f"{low} ({getattr(params, low)}) must not be greater than {high} ({getattr(params, high)})")
    return params


class BandLimit(Stage):
    """Remove everything above a frequency, as a low-rate recording or generator does.

    `resample` goes down to `through_rate_hz` and back (soxr VHQ): the stopband (> 90 dB
    down) starts at through_rate_hz / 2, the passband is flat to about 91 % of it. `lowpass` is a zero-phase Kaiser FIR: >= 100 dB down from
    `cutoff_hz`, flat to 95 % of it.
    """

    id = "degrade.band_limit"
    summary = "Band limit: resample down and back (e.g. through 8 kHz), or a steep low-pass."
    accepts = CPU

    class Params(StageParams):
        method: Literal["resample", "lowpass"] = Field(
            "resample", description="resample: down to through_rate_hz and back with soxr; "
                                    "lowpass: a steep linear-phase FIR at cutoff_hz.")
        through_rate_hz: int = Field(
            8000, ge=1000, le=384000, description="resample: the rate passed through; the band ends at half of it.")
        cutoff_hz: float | None = Field(
            None, ge=100, le=192000, description="lowpass: where the stopband starts, in Hz; empty: through_rate_hz/2.")

    def process(self, audio):
        from restorekit_plugins.degrade import ops

        p = self.params
        x = audio.numpy()
        if p.method == "resample":
            return _wrap(audio, ops.band_limit_resample(x, audio.sample_rate, p.through_rate_hz))
        cutoff = p.cutoff_hz if p.cutoff_hz is not None else p.through_rate_hz / 2
        return _wrap(audio, ops.lowpass_fir(x, audio.sample_rate, cutoff))


class RandomLowpass(Stage):
    """A low-pass of a family, order and cutoff drawn per file: the varied band limits a super-resolution model meets.

    The cutoff is drawn log-uniformly from [cutoff_min_hz, cutoff_max_hz] (capped below the
    Nyquist frequency), the family from `families`: `butterworth`, `chebyshev1` (1 dB
    ripple), `chebyshev2` and `elliptic` (60 dB stopband), `bessel` (IIR, applied forwards
    and backwards: zero phase, ripple and stopband doubled), `fir` (the steep Kaiser FIR of `degrade.band_limit`) and
    `resample` (soxr down to twice the cutoff and back), the IIR order from
    [order_min, order_max]. One family in a list makes the filter fixed.
    """

    id = "degrade.random_lowpass"
    summary = "Low-pass with a random family (IIR, FIR, resampling), order and cutoff drawn per file."
    accepts = CPU

    class Params(StageParams):
        cutoff_min_hz: float = Field(2000.0, ge=100, le=96000, description="Lowest cutoff drawn, in Hz.")
        cutoff_max_hz: float = Field(16000.0, ge=100, le=96000, description="Highest cutoff drawn, in Hz.")
        families: list[Literal["butterworth", "chebyshev1", "chebyshev2", "elliptic", "bessel", "fir", "resample"]] = \
            Field(["butterworth", "chebyshev1", "chebyshev2", "elliptic", "bessel", "fir", "resample"], min_length=1,
                  description="Filter families to draw from.")
        order_min: int = Field(4, ge=1, le=16, description="Lowest IIR order drawn.")
        order_max: int = Field(12, ge=1, le=16, description="Highest IIR order drawn.")

        @model_validator(mode="after")
        def _ranges(self):
            _ordered(self, "cutoff_min_hz", "cutoff_max_hz")
            return _ordered(self, "order_min", "order_max")

    def process(self, audio):
        import numpy as np

        from restorekit_plugins.degrade import ops

        p = self.params
        rng = self.rng()
        nyquist = audio.sample_rate / 2
        lo, hi = min(p.cutoff_min_hz, 0.95 * nyquist), min(p.cutoff_max_hz, 0.95 * nyquist)
        cutoff = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        family = p.families[int(rng.integers(len(p.families)))]
        order = int(rng.integers(p.order_min, p.order_max + 1))
        log.debug("%s: %s order %d at %.0f Hz", self.id, family, order, cutoff)
        return _wrap(audio, ops.lowpass_family(audio.numpy(), audio.sample_rate, cutoff, family, order))


class Quantize(Stage):
    """Round samples to the grid of `bits`-bit signed PCM.

    The step (LSB) is 2**-(bits-1); values clip to [-1, 1 - LSB]. Without dither the error
    power is LSB**2/12 and follows the signal (distortion); TPDF dither (+-1 LSB,
    triangular) makes it LSB**2/4 of plain noise.
    """

    id = "degrade.quantize"
    summary = "Requantize to 2-24 bits, with or without TPDF dither."
    accepts = CPU

    class Params(StageParams):
        bits: int = Field(8, ge=2, le=24, description="Bit depth of the grid, in bits (8: steps of 1/128).")
        dither: Literal["none", "tpdf"] = Field(
            "tpdf", description="none: plain rounding; tpdf: triangular dither of +-1 LSB before rounding.")

    def process(self, audio):
        from restorekit_plugins.degrade import ops

        return _wrap(audio, ops.quantize(audio.numpy(), self.params.bits, self.params.dither, self.rng()))


class Noise(Stage):
    """Add white, pink or mains-hum noise at an exact signal-to-noise ratio.

    Pink falls 3 dB per octave above 20 Hz; hum is harmonics k * hum_hz at level 1/k,
    the same in every channel. The noise is scaled so that the clip's signal power (all
    channels together) over the noise power is exactly `snr_db`. Silent input stays silent.
    """

    id = "degrade.noise"
    summary = "Add white, pink or hum noise at a signal-to-noise ratio in dB."
    accepts = CPU

    class Params(StageParams):
        snr_db: float = Field(30.0, ge=-30, le=120, description="Signal power over noise power, in dB.")
        color: Literal["white", "pink", "hum"] = Field("white", description="Noise colour: white, pink or hum.")
        hum_hz: float = Field(50.0, ge=10, le=1000, description="hum: mains frequency in Hz (50 or 60).")
        hum_harmonics: int = Field(5, ge=1, le=40, description="hum: number of harmonics, the fundamental included.")

    def process(self, audio):
        from restorekit_plugins.degrade import ops

        p = self.params
        return _wrap(audio, ops.add_noise(audio.numpy(), audio.sample_rate, p.snr_db, p.color, self.rng(),
                                          p.hum_hz, p.hum_harmonics))


class Reverb(Stage):
    """Add reverb from an exponentially decaying noise impulse response.

    The IR is Gaussian noise under an envelope that falls 60 dB in `rt60_s` (drawn anew per
    seed, independent per channel, unit energy); the convolution is added `wet_db`
    relative to the dry signal after `pre_delay_ms`. The tail past the end is cut.
    """

    id = "degrade.reverb"
    summary = "Exponential-decay reverb with a given RT60 (FFT convolution)."
    accepts = CPU

    class Params(StageParams):
        rt60_s: float = Field(0.6, ge=0.05, le=20, description="Time for the reverb to decay by 60 dB, in seconds.")
        wet_db: float = Field(-6.0, ge=-60, le=20, description="Level of the reverberant signal over the dry, in dB.")
        pre_delay_ms: float = Field(10.0, ge=0, le=500, description="Delay before the reverb starts, in ms.")

    def process(self, audio):
        from restorekit_plugins.degrade import ops

        p = self.params
        return _wrap(audio, ops.reverb(audio.numpy(), audio.sample_rate, p.rt60_s, p.wet_db, p.pre_delay_ms,
                                       self.rng()))


class Clip(Stage):
    """Clip at a threshold, hard (flat tops) or soft (tanh).

    Hard clipping sets every sample beyond the threshold T to +-T; soft clipping maps x to
    T * tanh(x / T), smooth and monotonic, approaching T without reaching it. T is
    relative to full scale (1.0) or to the clip's own peak.
    """

    id = "degrade.clip"
    summary = "Hard or soft (tanh) clipping at a threshold in dB."
    accepts = CPU

    class Params(StageParams):
        threshold_db: float = Field(-3.0, ge=-60, le=0,
                                    description="Clipping level in dB (-1.94 dB is 0.8, -0.45 dB is 0.95).")
        mode: Literal["hard", "soft"] = Field("hard", description="hard: flat tops; soft: tanh saturation.")
        reference: Literal["full_scale", "peak"] = Field(
            "full_scale", description="full_scale: threshold_db is dBFS; peak: relative to the clip's peak.")

    def process(self, audio):
        from restorekit.dsp import db_to_gain
        from restorekit_plugins.degrade import ops

        p = self.params
        x = audio.numpy()
        threshold = db_to_gain(p.threshold_db) * (ops.peak(x) if p.reference == "peak" else 1.0)
        if p.reference == "peak" and threshold == 0.0:
            return _wrap(audio, x.copy())
        return _wrap(audio, ops.clip(x, threshold, p.mode))


class Mp3(Stage):
    """Encode to MP3 with LAME (pedalboard) and decode, aligned sample for sample with the input.

    `cbr` encodes at a true constant bitrate (pedalboard.io.AudioFile, codec delay of
    1105 frames removed). `vbr` uses pedalboard.MP3Compressor, which takes LAME's VBR
    quality only (0 best .. 10 worst; LAME documents averages for 44.1 kHz stereo of
    ~245 kbit/s at -V0, ~190 at -V2, ~165 at -V4, ~115 at -V6, ~65 at -V9). LAME picks
    its own low-pass (at 44.1 kHz: ~17 kHz at 64 kbit/s, ~20.5 kHz at 128). Rates MP3
    lacks are resampled to the next MP3 rate and back. With `probability` below 1, only
    that share of files (drawn from the seed) is coded.
    """

    id = "degrade.mp3"
    summary = "MP3 encode and decode with LAME (pedalboard) at a bitrate or VBR quality."
    accepts = CPU

    class Params(StageParams):
        mode: Literal["cbr", "vbr"] = Field("cbr", description="cbr: constant bitrate_kbps; vbr: LAME vbr_quality.")
        bitrate_kbps: int = Field(
            64, ge=32, le=320, description="cbr: bitrate in kbit/s, one of 32 40 48 56 64 80 96 112 128 160 192 224 "
                                           "256 320 (below 32 kHz LAME caps it: 160 at 16-24 kHz, 64 below).")
        vbr_quality: float = Field(4.0, ge=0, le=10, description="vbr: LAME VBR quality, 0 (best) to 10 (worst).")
        probability: float = Field(1.0, ge=0, le=1, description="Chance that a file is coded at all (drawn per "
                                                               "file); the others pass unchanged.")

        @field_validator("bitrate_kbps")
        @classmethod
        def _mp3_bitrate(cls, value: int) -> int:
            if value not in MP3_CBR_KBPS:
                raise ValueError(f"MP3 has no {value} kbit/s; choose one of {', '.join(map(str, MP3_CBR_KBPS))}")
            return value

    def process(self, audio):
        from restorekit_plugins.degrade import ops

        p = self.params
        if self.rng().random() >= p.probability:
            return audio
        return _wrap(audio, ops.mp3(audio.numpy(), audio.sample_rate, p.mode, p.bitrate_kbps, p.vbr_quality))


class SpectralGaps(Stage):
    """Zero random runs of STFT time frames covering a fraction of the clip.

    STFT: Hann window of `frame_ms`, hop a quarter of it. The fraction of frames zeroed is
    drawn uniformly from [fraction_min, fraction_max] per clip, in runs of `gap_ms` placed
    at random. Zeroing whole frames and inverting the STFT is exactly a smooth gain
    envelope (each gap fades over one window), and that envelope is what is applied: no
    spectrogram of the whole file is held in memory.
    """

    id = "degrade.spectral_gaps"
    summary = "Zero random runs of spectrogram time frames covering 10-70 % of the clip."
    accepts = CPU

    class Params(StageParams):
        fraction_min: float = Field(0.1, ge=0, le=1, description="Smallest fraction of STFT frames zeroed in a clip.")
        fraction_max: float = Field(0.7, ge=0, le=1, description="Largest fraction of STFT frames zeroed in a clip.")
        gap_ms: float = Field(100.0, ge=1, le=10000, description="Length of each gap (a run of zeroed frames), in ms.")
        frame_ms: float = Field(32.0, ge=2, le=500, description="STFT window length in ms (hop: a quarter of it).")

        @model_validator(mode="after")
        def _fractions(self):
            return _ordered(self, "fraction_min", "fraction_max")

    def process(self, audio):
        from restorekit_plugins.degrade import ops

        p = self.params
        rng = self.rng()
        fraction = float(rng.uniform(p.fraction_min, p.fraction_max))
        out, zeroed = ops.spectral_gaps(audio.numpy(), audio.sample_rate, fraction, p.gap_ms, p.frame_ms, rng)
        log.debug("%s: zeroed %d of %d frames (fraction %.3f drawn)", self.id, int(zeroed.sum()), len(zeroed), fraction)
        return _wrap(audio, out)


class Dropouts(Stage):
    """Zero random blocks of the signal in every channel: the drop-outs of transfers and streams, muted blocks.

    `count_min` to `count_max` blocks per clip, each `gap_min_ms` to `gap_max_ms` long
    (log-uniform: short drop-outs are as likely per octave of length as long ones), placed
    at random at least `edge_ms` from the clip's ends and from each other. Inside a block
    the samples are exactly zero (the gaps `inpaint.*` find and fill).
    """

    id = "degrade.dropouts"
    summary = "Zero random blocks of 20-1000 ms in every channel (drop-outs, muted blocks)."
    accepts = CPU

    class Params(StageParams):
        count_min: int = Field(1, ge=0, le=1000, description="Fewest blocks zeroed in a clip.")
        count_max: int = Field(3, ge=0, le=1000, description="Most blocks zeroed in a clip.")
        gap_min_ms: float = Field(20.0, ge=0.1, le=60_000, description="Shortest block in ms.")
        gap_max_ms: float = Field(1000.0, ge=0.1, le=60_000, description="Longest block in ms.")
        edge_ms: float = Field(250.0, ge=0, le=60_000,
                               description="Music kept at the clip's ends and between blocks, in ms.")

        @model_validator(mode="after")
        def _ranges(self):
            return _ordered(_ordered(self, "count_min", "count_max"), "gap_min_ms", "gap_max_ms")

    def process(self, audio):
        from restorekit_plugins.degrade import ops

        p = self.params
        rng = self.rng()
        count = int(rng.integers(p.count_min, p.count_max + 1))
        out, blocks = ops.dropouts(audio.numpy(), audio.sample_rate, count, p.gap_min_ms, p.gap_max_ms, p.edge_ms,
                                   rng)
        log.debug("%s: zeroed %s", self.id, blocks)
        return _wrap(audio, out)


class Codec(Stage):
    """Codec-like damage: band limit plus coarse per-band requantization of STFT magnitudes.

    STFT with a Hann window at 75 % overlap; bins above `cutoff_hz` are zeroed, the rest
    split into `bands` log-spaced bands whose peak (the scale factor, rounded to
    `scale_step_db`) normalises the magnitudes, which are rounded to 2**bits - 1 levels
    after a 3/4 power law; the phase is kept. Few bits leave spectral holes and
    "birdies", like a starved MP3/AAC encoder.
    """

    id = "degrade.codec"
    summary = "Codec-like damage: band limit plus coarse per-band requantization of STFT magnitudes."
    accepts = CPU

    class Params(StageParams):
        cutoff_hz: float = Field(7000.0, ge=500, le=96000, description="Bins above this frequency are zeroed, in Hz.")
        bits: int = Field(3, ge=1, le=16, description="Bits per magnitude within a band (levels: 2**bits - 1).")
        bands: int = Field(20, ge=1, le=64, description="Number of log-spaced bands with their own scale factor.")
        frame_ms: float = Field(23.0, ge=2, le=200, description="STFT window length in ms (hop: a quarter of it).")
        scale_step_db: float = Field(1.5, ge=0, le=12, description="Step of the band scale factors in dB; 0: exact.")

    def process(self, audio):
        from restorekit_plugins.degrade import ops

        p = self.params
        return _wrap(audio, ops.codec(audio.numpy(), audio.sample_rate, p.cutoff_hz, p.bits, p.bands,
                                      p.frame_ms, p.scale_step_db))


class GenerativeMix(Stage):
    """Random per-clip degradation mix for training restorers of generated music.

    With probability `clean_fraction` a clip passes untouched; otherwise, in signal-chain
    order: exponential reverb (RT60 and wet level drawn; the peak is kept at the input's),
    resampling down to a rate drawn from [through_rate_min_hz, through_rate_max_hz] and
    back, clipping at a threshold drawn from [clip_threshold_min, clip_threshold_max]
    (linear, relative to the clip's peak by default), and quantization to a bit depth
    drawn from [bits_min, bits_max] with TPDF dither. Every draw is uniform.
    """

    id = "degrade.generative_mix"
    summary = "Random per-clip mix: dithered 8-12 bit quantization, 16-22 kHz resampling, reverb, clipping; 15 % clean."
    accepts = CPU

    class Params(StageParams):
        clean_fraction: float = Field(0.15, ge=0, le=1, description="Probability that a clip passes unchanged.")
        bits_min: int = Field(8, ge=2, le=24, description="Smallest bit depth drawn, in bits.")
        bits_max: int = Field(12, ge=2, le=24, description="Largest bit depth drawn, in bits.")
        dither: Literal["none", "tpdf"] = Field("tpdf", description="Dither for the quantization: none or tpdf.")
        through_rate_min_hz: int = Field(16000, ge=1000, le=384000, description="Lowest rate passed through, in Hz.")
        through_rate_max_hz: int = Field(22050, ge=1000, le=384000, description="Highest rate passed through, in Hz.")
        rt60_min_s: float = Field(0.2, ge=0.05, le=20, description="Shortest reverb RT60 drawn, in seconds.")
        rt60_max_s: float = Field(1.0, ge=0.05, le=20, description="Longest reverb RT60 drawn, in seconds.")
        wet_min_db: float = Field(-20.0, ge=-60, le=20, description="Lowest reverb level relative to the dry, in dB.")
        wet_max_db: float = Field(-8.0, ge=-60, le=20, description="Highest reverb level relative to the dry, in dB.")
        pre_delay_ms: float = Field(10.0, ge=0, le=500, description="Reverb pre-delay, in ms.")
        clip_threshold_min: float = Field(0.8, gt=0, le=1, description="Lowest clipping level (linear; 0.8 = -1.9 dB).")
        clip_threshold_max: float = Field(0.95, gt=0, le=1,
                                          description="Highest clipping level (linear; 0.95 = -0.45 dB).")
        clip_mode: Literal["hard", "soft"] = Field("hard", description="hard or soft (tanh) clipping.")
        clip_reference: Literal["full_scale", "peak"] = Field(
            "peak", description="peak: thresholds are relative to the clip's peak (it always clips); "
                                "full_scale: relative to 1.0 (quiet clips pass unclipped).")

        @model_validator(mode="after")
        def _ranges(self):
            for low, high in (("bits_min", "bits_max"), ("through_rate_min_hz", "through_rate_max_hz"),
                              ("rt60_min_s", "rt60_max_s"), ("wet_min_db", "wet_max_db"),
                              ("clip_threshold_min", "clip_threshold_max")):
                _ordered(self, low, high)
            return self

    def draw(self, rng: np.random.Generator) -> dict | None:
        """The recipe for one clip (None: the clip stays clean), drawn from `rng`."""
        p = self.params
        if rng.random() < p.clean_fraction:
            return None
        return {
            "rt60_s": float(rng.uniform(p.rt60_min_s, p.rt60_max_s)),
            "wet_db": float(rng.uniform(p.wet_min_db, p.wet_max_db)),
            "through_rate_hz": int(rng.integers(p.through_rate_min_hz, p.through_rate_max_hz, endpoint=True)),
            "clip_threshold": float(rng.uniform(p.clip_threshold_min, p.clip_threshold_max)),
            "bits": int(rng.integers(p.bits_min, p.bits_max, endpoint=True)),
        }

    def process(self, audio):
        from restorekit_plugins.degrade import ops

        p = self.params
        rng = self.rng()
        recipe = self.draw(rng)
        log.debug("%s (seed %d): %s", self.id, self.seed, recipe or "clean")
        if recipe is None:
            return audio
        x = audio.numpy()
        rate = audio.sample_rate
        in_peak = ops.peak(x)
        y = ops.reverb(x, rate, recipe["rt60_s"], recipe["wet_db"], p.pre_delay_ms, rng)
        out_peak = ops.peak(y)
        if out_peak > 0:
            y *= in_peak / out_peak
        y = ops.band_limit_resample(y, rate, recipe["through_rate_hz"])
        reference = ops.peak(y) if p.clip_reference == "peak" else 1.0
        y = ops.clip(y, recipe["clip_threshold"] * reference, p.clip_mode) if reference > 0 else y
        y = ops.quantize(y, recipe["bits"], p.dither, rng)
        return _wrap(audio, y)


class NoiseSubstitute(Stage):
    """Replace the fine structure above an onset frequency by band-shaped noise, as a neural codec does.

    In each STFT frame (Hann `frame_ms`, 75 % overlap) the power of every band
    (`bands_per_octave` log-spaced bands from the onset up) is kept and its bins become
    Gaussian noise of that power, so the band's level follows the music frame by frame
    (cymbals and air keep their timing and level) while its detail becomes noise. The
    onset is drawn per file from [onset_min_hz, onset_max_hz] and the share of the
    original power mixed back from [keep_min, keep_max]. The substitution fades in over
    one band above the onset.
    """

    id = "degrade.noise_substitute"
    summary = "Codec-like noise substitution: the band above a drawn onset becomes noise with the music's envelope."
    accepts = CPU

    class Params(StageParams):
        onset_min_hz: float = Field(6000.0, ge=100, le=96000, description="Lowest onset frequency drawn, in Hz.")
        onset_max_hz: float = Field(12000.0, ge=100, le=96000, description="Highest onset frequency drawn, in Hz.")
        keep_min: float = Field(0.0, ge=0, le=1, description="Smallest share of the original power kept in the "
                                                             "substituted band (0: pure noise).")
        keep_max: float = Field(0.3, ge=0, le=1, description="Largest share of the original power kept.")
        bands_per_octave: float = Field(6.0, ge=1, le=48, description="Resolution of the kept envelope, in bands "
                                                                      "per octave.")
        frame_ms: float = Field(20.0, ge=2, le=200, description="STFT window length in ms (hop: a quarter of it).")

        @model_validator(mode="after")
        def _ranges(self):
            _ordered(self, "onset_min_hz", "onset_max_hz")
            return _ordered(self, "keep_min", "keep_max")

    def process(self, audio):
        from restorekit_plugins.degrade import ops

        p = self.params
        rng = self.rng()
        onset = float(rng.uniform(p.onset_min_hz, p.onset_max_hz))
        keep = float(rng.uniform(p.keep_min, p.keep_max))
        log.debug("%s: onset %.0f Hz, keep %.2f", self.id, onset, keep)
        return _wrap(audio, ops.noise_substitute(audio.numpy(), audio.sample_rate, onset, keep,
                                                 p.bands_per_octave, p.frame_ms, rng))


class Tilt(Stage):
    """Tilt the spectrum above a corner frequency by a slope drawn per file (zero-phase).

    The gain is `slope` dB per octave above `corner_hz` and 0 dB below it, the slope drawn
    uniformly from [slope_min_db_per_oct, slope_max_db_per_oct] (negative: darker).
    """

    id = "degrade.tilt"
    summary = "Spectral tilt above a corner frequency, slope in dB per octave drawn per file."
    accepts = CPU

    class Params(StageParams):
        corner_hz: float = Field(4000.0, ge=20, le=96000, description="Where the tilt starts, in Hz.")
        slope_min_db_per_oct: float = Field(-6.0, ge=-60, le=24, description="Lowest slope drawn, in dB per octave.")
        slope_max_db_per_oct: float = Field(0.0, ge=-60, le=24, description="Highest slope drawn, in dB per octave.")

        @model_validator(mode="after")
        def _ranges(self):
            return _ordered(self, "slope_min_db_per_oct", "slope_max_db_per_oct")

    def process(self, audio):
        from restorekit_plugins.degrade import ops

        p = self.params
        slope = float(self.rng().uniform(p.slope_min_db_per_oct, p.slope_max_db_per_oct))
        return _wrap(audio, ops.tilt(audio.numpy(), audio.sample_rate, p.corner_hz, slope))


class Level(Stage):
    """Set the integrated loudness (ITU-R BS.1770) to a value drawn per file, as generators leave it.

    The loudness is drawn from [lufs_min, lufs_max]; where that would put the sample peak
    above `peak_max` the gain is lowered to reach it instead. A `peak_max` above 1.0 makes
    float files with peaks above full scale, as raw generator output has. Silence stays silent.
    """

    id = "degrade.level"
    summary = "Random loudness (LUFS drawn per file) with a sample-peak limit that may exceed full scale."
    accepts = CPU

    class Params(StageParams):
        lufs_min: float = Field(-23.0, ge=-70, le=0, description="Lowest integrated loudness drawn, in LUFS.")
        lufs_max: float = Field(-14.0, ge=-70, le=0, description="Highest integrated loudness drawn, in LUFS.")
        peak_max: float = Field(1.06, gt=0, le=4, description="Highest sample peak allowed (linear; 1.06 = "
                                                              "+0.5 dBFS, above full scale).")

        @model_validator(mode="after")
        def _ranges(self):
            return _ordered(self, "lufs_min", "lufs_max")

    def process(self, audio):
        import math

        import numpy as np

        from restorekit_plugins.degrade import ops
        from restorekit_plugins.master import integrated_loudness

        p = self.params
        target = float(self.rng().uniform(p.lufs_min, p.lufs_max))
        x = audio.numpy()
        loudness = integrated_loudness(x, audio.sample_rate)
        if not math.isfinite(loudness):
            return audio
        gain = 10.0 ** ((target - loudness) / 20.0)
        peak = ops.peak(x)
        if peak * gain > p.peak_max:
            gain = p.peak_max / peak
        return _wrap(audio, x * np.float32(gain))


class DcFault(Stage):
    """Add a slowly drifting DC offset to some files, clipped at full scale (one-sided clipping).

    With probability `probability` a file gets an offset drawn from [offset_min, offset_max]
    (sign drawn too) plus a drift of up to `drift_fraction` of it that varies at
    `drift_hz`; with `clip` the result is clipped to +-1, so the side the offset pushes
    flattens, as in raw generator output written through a fixed-point stage.
    """

    id = "degrade.dc_offset"
    summary = "Occasional DC offset with slow drift, clipped at full scale (one-sided clipping)."
    accepts = CPU

    class Params(StageParams):
        probability: float = Field(0.1, ge=0, le=1, description="Chance that a file gets the fault (per file).")
        offset_min: float = Field(0.02, ge=0, le=1, description="Smallest |offset| drawn (linear, full scale 1).")
        offset_max: float = Field(0.3, ge=0, le=1, description="Largest |offset| drawn (linear).")
        drift_fraction: float = Field(0.3, ge=0, le=1, description="Drift amplitude as a fraction of the offset.")
        drift_hz: float = Field(0.2, ge=0, le=20, description="Rate of the drift, in Hz.")
        clip: bool = Field(True, description="Clip to +-1 afterwards (one-sided clipping).")

        @model_validator(mode="after")
        def _ranges(self):
            return _ordered(self, "offset_min", "offset_max")

    def process(self, audio):
        from restorekit_plugins.degrade import ops

        p = self.params
        rng = self.rng()
        if rng.random() >= p.probability:
            return audio
        offset = float(rng.uniform(p.offset_min, p.offset_max)) * (1 if rng.random() < 0.5 else -1)
        phase = float(rng.uniform(0, 6.283185307179586))
        return _wrap(audio, ops.dc_fault(audio.numpy(), audio.sample_rate, offset, offset * p.drift_fraction,
                                         p.drift_hz, phase, 1.0 if p.clip else None))


STAGES = (BandLimit, RandomLowpass, Quantize, Noise, Reverb, Clip, Mp3, SpectralGaps, Dropouts, Codec, GenerativeMix,
          NoiseSubstitute, Tilt, Level, DcFault)
