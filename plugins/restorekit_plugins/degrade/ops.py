"""Array operations behind the degradation stages.

Every function takes float32 samples shaped (channels, frames), returns a new float32
array of the same shape (the input is never modified) and draws randomness only from
the generator it is given. The stages import this module inside `process`, so loading
the plugin never imports numpy or scipy.
"""

from __future__ import annotations

import io
import logging
import math

import numpy as np

log = logging.getLogger("restorekit")

BLOCK_FRAMES = 1 << 16  # elementwise work is done in blocks so temporaries stay small
RESAMPLE_QUALITY = "VHQ"
LOWPASS_STOPBAND_DB = 100.0
LOWPASS_TRANSITION = 0.05  # the FIR passband ends 5 % below the cutoff
PINK_FLOOR_HZ = 20.0
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
MP3_CODEC_DELAY = 1105  # LAME encoder delay (576) + decoder delay (529), in frames, at every rate
STFT_CHUNK_FRAMES = 512
CONVOLVE_SEGMENT_FRAMES = 1 << 18


def _fit_length(y: np.ndarray, frames: int) -> np.ndarray:
    """Cut or zero-pad the last axis to `frames`."""
    if y.shape[-1] >= frames:
        return y[..., :frames]
    return np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, frames - y.shape[-1])])


def _resample_rows(x: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """soxr resampling of each channel (soxr compensates its own delay)."""
    import soxr

    return np.stack([soxr.resample(np.ascontiguousarray(row), rate, new_rate, quality=RESAMPLE_QUALITY)
                     for row in x]).astype(np.float32, copy=False)


# -- band limitation -------------------------------------------------------------------
def band_limit_resample(x: np.ndarray, rate: int, through_rate: int) -> np.ndarray:
    """Resample down to `through_rate` and back (soxr VHQ); the band ends at through_rate / 2."""
    if through_rate >= rate:
        return x.copy()
    out = np.empty_like(x)
    for c, row in enumerate(x):  # one channel at a time: only one channel's temporaries live at once
        down = _resample_rows(row[None], rate, through_rate)
        out[c] = _fit_length(_resample_rows(down, through_rate, rate), x.shape[1])[0]
    return out


def lowpass_fir(x: np.ndarray, rate: int, cutoff_hz: float) -> np.ndarray:
    """Zero-phase Kaiser FIR low-pass: >= 100 dB down from `cutoff_hz`, flat up to 95 % of it."""
    from scipy import signal

    if cutoff_hz >= rate / 2:
        return x.copy()
    width = min(max(LOWPASS_TRANSITION * cutoff_hz, 1e-3 * rate), cutoff_hz)  # bounds the filter length
    taps, beta = signal.kaiserord(LOWPASS_STOPBAND_DB, width / (rate / 2))
    taps |= 1  # odd length: a whole-sample delay that mode="same" removes exactly
    h = signal.firwin(taps, cutoff_hz - width / 2, window=("kaiser", beta), fs=rate).astype(np.float32)
    return signal.oaconvolve(x, h[None], mode="same", axes=-1).astype(np.float32, copy=False)


def lowpass_family(x: np.ndarray, rate: int, cutoff_hz: float, family: str, order: int) -> np.ndarray:
    """Low-pass x at `cutoff_hz` with a filter of `family` (see `degrade.random_lowpass`); zero phase."""
    from scipy import signal

    if family == "fir":
        return lowpass_fir(x, rate, cutoff_hz)
    if family == "resample":
        return band_limit_resample(x, rate, max(2, int(round(2 * cutoff_hz))))
    designs = {
        "butterworth": lambda: signal.butter(order, cutoff_hz, fs=rate, output="sos"),
        "chebyshev1": lambda: signal.cheby1(order, 1.0, cutoff_hz, fs=rate, output="sos"),
        "chebyshev2": lambda: signal.cheby2(order, 60.0, cutoff_hz, fs=rate, output="sos"),
        "elliptic": lambda: signal.ellip(order, 1.0, 60.0, cutoff_hz, fs=rate, output="sos"),
        "bessel": lambda: signal.bessel(order, cutoff_hz, fs=rate, output="sos", norm="mag"),
    }
    if family not in designs:
        raise ValueError(f"unknown low-pass family {family!r}")
    sos = designs[family]()
    # scipy's default edge padding (3 x the filter length) needs that much signal; shorter clips pad less
    padlen = min(3 * (2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum())), x.shape[-1] - 1)
    return signal.sosfiltfilt(sos, x.astype(np.float64), axis=-1, padlen=padlen).astype(np.float32)


# -- quantization ----------------------------------------------------------------------
def quantize(x: np.ndarray, bits: int, dither: str, rng: np.random.Generator) -> np.ndarray:
    """Round to the 2**(bits-1) grid of signed PCM (clipping to [-1, 1 - LSB]), TPDF dither optional.

    TPDF dither is the difference of two uniform variables, +-1 LSB peak; with it the
    error power is LSB**2 / 4 instead of LSB**2 / 12, and no longer follows the signal.
    """
    scale = np.float32(2.0 ** (bits - 1))
    out = np.empty_like(x)
    for start in range(0, x.shape[1], BLOCK_FRAMES):
        block = x[:, start:start + BLOCK_FRAMES] * scale
        if dither == "tpdf":
            block += rng.random(block.shape, dtype=np.float32)
            block -= rng.random(block.shape, dtype=np.float32)
        np.rint(block, out=block)
        np.clip(block, -scale, scale - 1, out=block)
        out[:, start:start + BLOCK_FRAMES] = block / scale
    return out


# -- noise -----------------------------------------------------------------------------
def make_noise(channels: int, frames: int, rate: int, color: str, rng: np.random.Generator,
               hum_hz: float = 50.0, hum_harmonics: int = 5) -> np.ndarray:
    """Noise of a colour, any level: white, pink (-3 dB/octave above 20 Hz) or mains hum."""
    if color == "white":
        return rng.standard_normal((channels, frames), dtype=np.float32)
    if color == "pink":
        from scipy import fft

        spectrum = fft.rfft(rng.standard_normal((channels, frames), dtype=np.float32), axis=-1)
        freqs = np.fft.rfftfreq(frames, 1.0 / rate).astype(np.float32)
        shape = 1.0 / np.sqrt(np.maximum(freqs, PINK_FLOOR_HZ))
        shape[0] = 0.0
        spectrum *= shape
        return fft.irfft(spectrum, n=frames, axis=-1).astype(np.float32, copy=False)
    if color == "hum":
        # Mains hum is the same in every channel: harmonics k * hum_hz with level 1/k.
        t = np.arange(frames, dtype=np.float64) / rate
        phases = rng.uniform(0, 2 * np.pi, hum_harmonics)
        hum = np.zeros(frames, dtype=np.float64)
        for k in range(1, hum_harmonics + 1):  # a handful of harmonics, each vectorized over time
            if k * hum_hz >= rate / 2:
                break
            hum += np.sin(2 * np.pi * k * hum_hz * t + phases[k - 1]) / k
        return np.broadcast_to(hum.astype(np.float32), (channels, frames))
    raise ValueError(f"unknown noise colour {color!r}")


def mean_power(x: np.ndarray) -> float:
    """Mean square over all channels and frames, accumulated in float64."""
    total = 0.0
    for start in range(0, x.shape[-1], BLOCK_FRAMES):
        block = x[..., start:start + BLOCK_FRAMES].astype(np.float64)
        total += float(np.sum(np.square(block, out=block)))  # no BLAS: its threads cost more than they save
    return total / max(x.size, 1)


def add_noise(x: np.ndarray, rate: int, snr_db: float, color: str, rng: np.random.Generator,
              hum_hz: float = 50.0, hum_harmonics: int = 5) -> np.ndarray:
    """Add noise scaled so that signal power / noise power is exactly `snr_db` over the clip.

    The signal power is taken over all channels together, so a silent channel of a
    stereo file still gets noise; completely silent input is returned unchanged.
    """
    noise = make_noise(x.shape[0], x.shape[1], rate, color, rng, hum_hz, hum_harmonics)
    p_signal, p_noise = mean_power(x), mean_power(noise)
    if p_signal == 0.0 or p_noise == 0.0:
        return x.copy()
    gain = np.float32(math.sqrt(p_signal / p_noise / 10.0 ** (snr_db / 10.0)))
    return x + gain * noise


# -- reverb ----------------------------------------------------------------------------
def exponential_ir(rate: int, channels: int, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise under an exponential envelope that falls 60 dB in `rt60_s`; unit energy per channel.

    Each channel gets its own noise, so a stereo reverb is decorrelated like a room's.
    """
    length = max(1, round(rt60_s * rate))
    t = np.arange(length, dtype=np.float64) / rate
    envelope = 10.0 ** (-3.0 * t / rt60_s)  # amplitude: -60 dB at t = rt60
    h = rng.standard_normal((channels, length)) * envelope
    h /= np.sqrt(np.sum(h * h, axis=1, keepdims=True))
    return h.astype(np.float32)


def reverb(x: np.ndarray, rate: int, rt60_s: float, wet_db: float, pre_delay_ms: float,
           rng: np.random.Generator) -> np.ndarray:
    """Dry signal plus its convolution with an exponential-decay noise IR, `wet_db` relative to it.

    The reverberant tail past the end of the clip is cut: the length stays the same.
    """
    from scipy import signal

    channels, frames = x.shape
    h = exponential_ir(rate, channels, rt60_s, rng)
    delay = round(pre_delay_ms * rate / 1000.0)
    out = x.copy()
    if delay >= frames:
        return out
    keep = frames - delay
    h = h[:, :keep] * np.float32(10.0 ** (wet_db / 20.0))
    wet = out[:, delay:]  # a view: each segment's convolution is added in place
    segment = max(CONVOLVE_SEGMENT_FRAMES, 4 * h.shape[1])
    for start in range(0, keep, segment):  # overlap-add of long segments keeps temporaries small
        y = signal.oaconvolve(x[:, start:start + segment], h, mode="full", axes=-1)
        stop = min(keep, start + y.shape[1])
        wet[:, start:stop] += y[:, :stop - start]
    return out


# -- clipping --------------------------------------------------------------------------
def clip(x: np.ndarray, threshold: float, mode: str) -> np.ndarray:
    """Hard clip to +-threshold, or soft clip with threshold * tanh(x / threshold) (never reaches it)."""
    if threshold <= 0.0:
        return np.zeros_like(x)
    t = np.float32(threshold)
    if mode == "hard":
        return np.clip(x, -t, t)
    out = np.empty_like(x)
    for start in range(0, x.shape[1], BLOCK_FRAMES):
        block = x[:, start:start + BLOCK_FRAMES] / t
        out[:, start:start + BLOCK_FRAMES] = np.tanh(block, out=block) * t
    return out


def peak(x: np.ndarray) -> float:
    return float(np.max(np.abs(x))) if x.size else 0.0


# -- MP3 -------------------------------------------------------------------------------
def mp3_rate(rate: int) -> int:
    """The MP3 sample rate to encode at: `rate` itself, else the lowest above it, else 48 kHz."""
    if rate in MP3_RATES:
        return rate
    above = [r for r in MP3_RATES if r > rate]
    return min(above) if above else max(MP3_RATES)


def mp3_max_kbps(rate: int) -> int:
    """The highest CBR bitrate LAME allows: MPEG-1 320, MPEG-2 160, MPEG-2.5 64 kbit/s."""
    return 320 if rate >= 32000 else 160 if rate >= 16000 else 64


def mp3(x: np.ndarray, rate: int, mode: str, bitrate_kbps: int, vbr_quality: float) -> np.ndarray:
    """Encode to MP3 with LAME (pedalboard) and decode again, aligned with the input.

    Rates MP3 lacks are resampled to the next MP3 rate and back. Mono and stereo are
    encoded as they are (stereo as joint stereo); more channels one by one.
    """
    frames = x.shape[1]
    enc_rate = mp3_rate(rate)
    y = _resample_rows(x, rate, enc_rate) if enc_rate != rate else x
    groups = [y] if y.shape[0] <= 2 else [row[None] for row in y]
    if mode == "cbr" and bitrate_kbps > mp3_max_kbps(enc_rate):
        log.warning("degrade.mp3: %d kbit/s is above what MP3 allows at %d Hz; LAME encodes at %d kbit/s",
                    bitrate_kbps, enc_rate, mp3_max_kbps(enc_rate))
    coded = np.concatenate([_mp3_group(g, enc_rate, mode, bitrate_kbps, vbr_quality) for g in groups])
    if enc_rate != rate:
        coded = _fit_length(_resample_rows(coded, enc_rate, rate), frames)
    return np.ascontiguousarray(coded, dtype=np.float32)


def _mp3_group(x: np.ndarray, rate: int, mode: str, bitrate_kbps: int, vbr_quality: float) -> np.ndarray:
    frames = x.shape[1]
    if mode == "vbr":
        from pedalboard import MP3Compressor

        # pedalboard reports the codec latency and compensates it: output lines up with input
        return MP3Compressor(vbr_quality=vbr_quality).process(np.ascontiguousarray(x), rate)
    from pedalboard.io import AudioFile

    buffer = io.BytesIO()
    with AudioFile(buffer, "w", rate, x.shape[0], format="mp3", quality=int(bitrate_kbps)) as f:
        f.write(np.ascontiguousarray(x))
    with AudioFile(io.BytesIO(buffer.getvalue()), "r") as f:
        decoded = f.read(f.frames)
    return _fit_length(decoded[:, MP3_CODEC_DELAY:], frames)


# -- spectrogram gaps ------------------------------------------------------------------
def gap_mask(n_frames: int, fraction: float, run_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of STFT frames to zero: round(fraction * n_frames) frames in runs of `run_frames`.

    The runs are placed uniformly at random without overlapping (stars and bars: the
    kept frames are split into random gaps between the runs); the last run may be shorter.
    """
    zeroed = int(round(fraction * n_frames))
    mask = np.zeros(n_frames, dtype=bool)
    if zeroed <= 0:
        return mask
    if zeroed >= n_frames:
        mask[:] = True
        return mask
    run_frames = max(1, run_frames)
    n_runs = -(-zeroed // run_frames)
    lengths = np.full(n_runs, run_frames)
    lengths[-1] = zeroed - (n_runs - 1) * run_frames
    free = n_frames - zeroed
    slots = np.sort(rng.choice(free + n_runs, n_runs, replace=False))
    starts = slots - np.arange(n_runs) + np.concatenate([[0], np.cumsum(lengths)[:-1]])
    edges = np.zeros(n_frames + 1, dtype=np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + lengths, -1)
    return np.cumsum(edges[:-1]) > 0


def hann(length: int) -> np.ndarray:
    """Periodic Hann window (sums to a constant at hop length / 4 when squared)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)


def gap_envelope(frames: int, hop: int, zeroed: np.ndarray) -> np.ndarray:
    """The gain that zeroing STFT frames implies, computed without an STFT.

    Frame m of a centered STFT (Hann window of 4 * hop, frame m centred on sample
    m * hop) is inverted by windowed overlap-add normalised by the summed squared window;
    zeroing frames then multiplies sample t by  sum_kept w^2(t - m hop) / sum_all w^2(t - m hop).
    That is exactly what this returns, for the `zeroed` mask over n = frames // hop + 1 frames.
    """
    w2 = (hann(4 * hop) ** 2).reshape(4, hop)
    n_blocks = -(-frames // hop)
    exists = np.zeros(n_blocks + 3)
    exists[1:1 + len(zeroed)] = 1.0  # exists[i + 1] is frame i; frames -1 and past the end do not exist
    kept = exists.copy()
    kept[1:1 + len(zeroed)][zeroed] = 0.0
    num = np.zeros((n_blocks, hop))
    den = np.zeros((n_blocks, hop))
    for j in range(4):  # block b gets segment j of frame b + 2 - j (4 overlapping frames)
        lo = 3 - j
        num += kept[lo:lo + n_blocks, None] * w2[j]
        den += exists[lo:lo + n_blocks, None] * w2[j]
    return (num / den).reshape(-1)[:frames].astype(np.float32)


def spectral_gaps(x: np.ndarray, rate: int, fraction: float, gap_ms: float, frame_ms: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Zero a fraction of STFT time frames in runs of `gap_ms`; returns (audio, zeroed frame mask)."""
    hop = max(1, round(frame_ms * rate / 4000.0))
    n_frames = x.shape[1] // hop + 1
    run = max(1, round(gap_ms * rate / 1000.0 / hop))
    zeroed = gap_mask(n_frames, fraction, run, rng)
    gain = gap_envelope(x.shape[1], hop, zeroed)
    return x * gain, zeroed


# -- drop-outs ----------------------------------------------------------------------------
def dropouts(x: np.ndarray, rate: int, count: int, min_ms: float, max_ms: float, edge_ms: float,
             rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Zero `count` blocks (all channels) with lengths log-uniform in [min_ms, max_ms], placed at random
    without overlapping, at least `edge_ms` from either end and from each other; returns (audio, [(start, stop)]).
    Fewer blocks are placed where the clip is too short for them."""
    n = x.shape[1]
    edge = int(round(edge_ms * rate / 1000))
    out = x.copy()
    blocks: list[tuple[int, int]] = []
    for _ in range(count):
        length = int(round(np.exp(rng.uniform(np.log(min_ms), np.log(max_ms))) * rate / 1000))
        free = [(lo, hi) for lo, hi in _free_spans(blocks, edge, n - edge, edge) if hi - lo >= length]
        if length < 1 or not free:
            continue
        sizes = np.array([hi - lo - length + 1 for lo, hi in free], dtype=np.float64)
        span = free[int(rng.choice(len(free), p=sizes / sizes.sum()))]
        start = span[0] + int(rng.integers(0, span[1] - span[0] - length + 1))
        blocks.append((start, start + length))
        out[:, start:start + length] = 0.0
    return out, sorted(blocks)


def _free_spans(blocks: list[tuple[int, int]], lo: int, hi: int, gap: int) -> list[tuple[int, int]]:
    """The parts of [lo, hi) at least `gap` samples clear of every block."""
    spans, at = [], lo
    for start, stop in sorted(blocks):
        if start - gap > at:
            spans.append((at, start - gap))
        at = max(at, stop + gap)
    if hi > at:
        spans.append((at, hi))
    return spans


# -- codec-like requantization ----------------------------------------------------------
def band_edges(n_bins: int, bands: int) -> np.ndarray:
    """Start bins of `bands` log-spaced bands over bins 0..n_bins-1 (fewer when bins run short)."""
    if n_bins <= 1:
        return np.zeros(1, dtype=np.int64)
    edges = np.unique(np.round(np.geomspace(1, n_bins, bands + 1)).astype(np.int64))[:-1]
    edges[0] = 0
    return edges


def stft_map(x: np.ndarray, rate: int, frame_ms: float, fn) -> np.ndarray:
    """Apply `fn` to the STFT of x and invert it: Hann window of `frame_ms`, 75 % overlap.

    `fn(spec, freqs)` gets a chunk of frames shaped (channels, frames, bins) (complex64; it
    may modify it in place) and the bin frequencies in Hz, and returns the new spectrum.
    Frames are processed in chunks, so memory stays near the size of the signal; with
    `fn` the identity the output equals the input to float precision.
    """
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy import fft

    channels, frames = x.shape
    hop = max(1, round(frame_ms * rate / 4000.0))
    win_len = 4 * hop
    window = hann(win_len).astype(np.float32)
    n_blocks = -(-frames // hop) + 6  # 3 hops of zeros each side: every sample is in 4 frames
    padded = np.zeros((channels, n_blocks * hop), dtype=np.float32)
    padded[:, 3 * hop:3 * hop + frames] = x
    out = np.zeros_like(padded)
    out_blocks = out.reshape(channels, n_blocks, hop)
    n_frames = n_blocks - 3
    freqs = np.arange(win_len // 2 + 1) * (rate / win_len)
    windows = sliding_window_view(padded, win_len, axis=-1)[:, ::hop]
    for m0 in range(0, n_frames, STFT_CHUNK_FRAMES):  # chunks of frames, each fully vectorized
        m1 = min(n_frames, m0 + STFT_CHUNK_FRAMES)
        spec = fn(fft.rfft(windows[:, m0:m1] * window, axis=-1), freqs)
        y = fft.irfft(spec, n=win_len, axis=-1) * window
        y = y.reshape(channels, m1 - m0, 4, hop)
        for j in range(4):  # overlap-add: frame m covers blocks m .. m + 3 of the padded signal
            out_blocks[:, m0 + j:m1 + j] += y[:, :, j]
    out /= np.float32(1.5)  # sum of the squared periodic Hann at hop = length / 4
    return np.ascontiguousarray(out[:, 3 * hop:3 * hop + frames])


def codec(x: np.ndarray, rate: int, cutoff_hz: float, bits: int, bands: int, frame_ms: float,
          scale_step_db: float) -> np.ndarray:
    """Band-limit and coarsely requantize STFT magnitudes per band, keeping the phase.

    Hann STFT at 75 % overlap. In each frame, bins above `cutoff_hz` are zeroed; the bins
    below are split into `bands` log-spaced bands; each band's peak magnitude is the
    band's scale factor, rounded to `scale_step_db`; the magnitudes, divided by it, go
    through a 3/4 power law (as in MP3 and AAC) and are rounded to 2**bits - 1 levels.
    """
    hop = max(1, round(frame_ms * rate / 4000.0))
    win_len = 4 * hop
    keep_bins = min(win_len // 2 + 1, int(math.floor(cutoff_hz * win_len / rate)) + 1)
    edges = band_edges(keep_bins, bands)
    widths = np.diff(np.append(edges, keep_bins))
    levels = float(2 ** bits - 1)

    def requantize(spec, freqs):
        spec[..., keep_bins:] = 0
        band = spec[..., :keep_bins]
        mag = np.abs(band)
        scale = np.maximum.reduceat(mag, edges, axis=-1)
        if scale_step_db > 0:
            with np.errstate(divide="ignore"):
                scale_db = np.round(20 * np.log10(scale) / scale_step_db) * scale_step_db
            scale = np.where(scale > 0, 10.0 ** (scale_db / 20), 0).astype(np.float32)
        scale = np.repeat(scale, widths, axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            norm = np.where(scale > 0, np.minimum(mag / scale, 1.0), 0)
            q = np.round(norm ** 0.75 * levels) / levels
            gain = np.where(mag > 0, scale * q ** (4.0 / 3.0) / mag, 0).astype(np.float32)
        band *= gain
        return spec

    return stft_map(x, rate, frame_ms, requantize)


# -- text-to-music damage ----------------------------------------------------------------
def noise_substitute(x: np.ndarray, rate: int, onset_hz: float, keep: float, bands_per_octave: float,
                     frame_ms: float, rng: np.random.Generator) -> np.ndarray:
    """Replace the fine structure above `onset_hz` by noise with the same short-time band envelope.

    What a neural audio codec at a low bitrate (or a perceptual codec's noise filling)
    does to the top of the spectrum: in every STFT frame the power of each band
    (`bands_per_octave` log-spaced bands from `onset_hz` up) is kept, but the bins inside a
    band become complex Gaussian noise of that power; a fraction `keep` of the original
    power is mixed back (0: pure noise). The substitution fades in over one band above
    `onset_hz`, so there is no step. The band envelope follows the music frame by frame:
    cymbals stay cymbals in time and level, only their detail becomes noise.
    """
    if onset_hz >= rate / 2:
        return x.copy()

    def substitute(spec, freqs):
        lo = int(np.searchsorted(freqs, onset_hz))
        up = freqs[lo:]
        if up.size == 0:
            return spec
        band_of = np.floor(np.log2(up / onset_hz) * bands_per_octave).astype(np.int64)
        n_bands = int(band_of.max()) + 1
        onehot = np.zeros((up.size, n_bands), dtype=np.float32)
        onehot[np.arange(up.size), band_of] = 1.0
        counts = onehot.sum(axis=0)
        part = spec[..., lo:]
        power = (part.real ** 2 + part.imag ** 2) @ (onehot / np.maximum(counts, 1))  # (C, T, bands)
        rms = np.sqrt(power @ onehot.T)  # back to bins
        # Frames of independent noise do not add up coherently in the overlap-add: with a Hann
        # window at 75 % overlap they come out at (3/8) / 1.5 = 1/4 of the power a coherent
        # signal of the same spectrum would; a gain of 2 gives the band its power back.
        noise = (rng.standard_normal(part.shape, dtype=np.float32)
                 + 1j * rng.standard_normal(part.shape, dtype=np.float32)) * np.float32(2.0 * math.sqrt(0.5))
        ramp = np.clip(np.log2(up / onset_hz) * bands_per_octave, 0, 1).astype(np.float32)  # one band of fade-in
        mix = 1.0 - (1.0 - keep) * ramp  # share of the original's power kept, per bin
        spec[..., lo:] = part * np.sqrt(mix) + noise * rms * np.sqrt(1.0 - mix)
        return spec

    return stft_map(x, rate, frame_ms, substitute)


def tilt(x: np.ndarray, rate: int, corner_hz: float, slope_db_per_oct: float, frame_ms: float = 20.0) -> np.ndarray:
    """Zero-phase spectral tilt: a gain of `slope_db_per_oct` per octave above `corner_hz`, 0 dB below."""
    if slope_db_per_oct == 0 or corner_hz >= rate / 2:
        return x.copy()

    def shape(spec, freqs):
        octaves = np.log2(np.maximum(freqs, corner_hz) / corner_hz)
        spec *= (10.0 ** (slope_db_per_oct * octaves / 20.0)).astype(np.float32)
        return spec

    return stft_map(x, rate, frame_ms, shape)


def dc_fault(x: np.ndarray, rate: int, offset: float, drift: float, drift_hz: float, phase: float,
             clip_at: float | None) -> np.ndarray:
    """Add a DC offset that drifts slowly (offset + drift * sin(2 pi drift_hz t + phase)) to every channel.

    With `clip_at`, the result is clipped to +-clip_at afterwards, as a fixed-point stage
    behind the fault would: one side of the waveform flattens, the other does not.
    """
    out = np.empty_like(x)
    for start in range(0, x.shape[1], BLOCK_FRAMES):
        t = np.arange(start, min(x.shape[1], start + BLOCK_FRAMES)) / rate
        shift = (offset + drift * np.sin(2 * np.pi * drift_hz * t + phase)).astype(np.float32)
        block = x[:, start:start + BLOCK_FRAMES] + shift
        if clip_at is not None:
            np.clip(block, -clip_at, clip_at, out=block)
        out[:, start:start + BLOCK_FRAMES] = block
    return out
