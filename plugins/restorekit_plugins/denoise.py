"""Spectral gating noise reduction: `denoise.spectral_gate`.

noisereduce's algorithm (stationary and non-stationary spectral gating) rewritten as a
vectorized torch path that runs on the CPU or a CUDA GPU, block by block with the same
result as one pass over the whole signal; noisereduce itself stays available as the
reference implementation (`implementation: noisereduce`). docs/stages/denoise.md explains
the algorithm, the parameters and where the two paths differ.

Diagnose, then treat: by default the stage first measures whether the input holds a
steady noise floor (`detect_noise_floor`, see `measure_noise_floor`) and gates only the
bands where it found one; with none, the input comes back unchanged.

Nothing heavy is imported at module import time (torch, numpy and noisereduce load in
`process`/`load`), so listing plugins stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from restorekit.hookspecs import hookimpl
from restorekit.stage import Accepts, Stage, StageParams
from restorekit_plugins._stft_blocks import Block, Frames, plan_blocks, stft, write_istft

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from restorekit.audio import Audio

EPS = 2.220446049250313e-16  # numpy.finfo(float64).eps: noisereduce's floor inside its dB conversion
NOISE_TOP_DB = 80.0  # noisereduce floors the noise spectrogram this far below its per-bin maximum
SILENT_FRAME_POWER = 1e-12  # frames quieter than -120 dBFS (digital silence) never count as noise
CPU_BLOCK_SAMPLES = 1 << 17  # ~3 s at 44.1 kHz: fits the caches, measured fastest on the CPU
CUDA_BLOCK_SAMPLES = 1 << 22  # ~95 s at 44.1 kHz on a GPU
STAT_BATCH_FRAMES = 1024  # noise-profile frames transformed at once (8 MB per channel)
SCAN_CHUNK = 64  # frames per chunk of the blocked exponential-smoothing scan
# noise-floor detection (measure_noise_floor)
FLOOR_SMOOTH_S = 0.1  # band powers are averaged over 100 ms before their percentiles are taken ...
FLOOR_MIN_BIN_FRAMES = 400  # ... or longer in narrow bands: at least this many bins x frames per average
FLOOR_LOW_PERCENTILE = 10.0  # a band's floor: this percentile of its 100 ms level
FLOOR_BAND_OCTAVES = 0.5  # detection bands are half an octave wide ...
FLOOR_MIN_BINS = 16  # ... and at least this many STFT bins
FLOOR_MIN_FLATNESS = 0.2  # median in-band spectral flatness of a floor (white noise: 0.56, a held tone: < 0.1)
FLOOR_MIN_FRAMES = 8  # fewer non-silent 100 ms frames in a band than this: too short to tell
FLOOR_BLOCK_FRAMES = 4096  # STFT frames transformed at once by the detector (a multiple of the step below)
FLOOR_FLATNESS_STEP = 4  # in-band flatness is measured on every 4th frame


class SpectralGate(Stage):
    """Spectral gating (noisereduce semantics): attenuate time-frequency bins below a noise threshold.

    Stationary: the threshold of each frequency bin is mean + `n_std_thresh` standard
    deviations of the noise's dB spectrogram, the noise being `noise_clip` or the quietest
    frames of the input. Non-stationary: a bin passes when it rises `thresh_n_mult_nonstationary`
    times above its own level smoothed over `time_constant_s` (sigmoid mask). The mask is
    smoothed over `freq_mask_smooth_hz` x `time_mask_smooth_ms` and mixed by `prop_decrease`.

    First, with `detect_noise_floor` (default), `measure_noise_floor` looks for a steady,
    noise-like floor per half-octave band; none found: the input is returned unchanged; found:
    only those bands are gated (`gate_floor_bands_only`). The finding goes into the notes.
    """

    id = "denoise.spectral_gate"
    summary = "Spectral gating noise reduction (noisereduce semantics, fast torch path on CPU or GPU)."
    accepts = Accepts(devices=frozenset({"cpu", "cuda"}))
    streams = True  # measures the floor and the noise profile in passes over its input, then gates block by block

    class Params(StageParams):
        stationary: bool = Field(
            True, description="True: one noise threshold per frequency from a noise profile; "
                              "False: non-stationary gating against a running average of each bin.")
        prop_decrease: float = Field(
            0.8, ge=0, le=1, description="How much of the noise to remove (1.0 = all of it, 0 = none).")
        n_fft: int = Field(
            1024, ge=64, le=16384, multiple_of=2, description="FFT size in samples (even).")
        hop_length: int | None = Field(
            None, ge=16, le=8192, description="Hop between STFT frames in samples; empty: n_fft // 4.")
        n_std_thresh: float = Field(
            1.5, ge=0, le=10, description="Stationary threshold: standard deviations above the noise's mean dB level.")
        freq_mask_smooth_hz: float = Field(
            200.0, ge=0, le=20000, description="Width in Hz over which the mask is smoothed along frequency (0: none). "
                                               "noisereduce's 500 takes ~1 dB off steady tones at n_fft 1024 and "
                                               "44.1 kHz, 200 takes < 0.01 dB; keep it near 4 bins (4*rate/n_fft).")
        time_mask_smooth_ms: float = Field(
            50.0, ge=0, le=5000, description="Width in ms over which the mask is smoothed along time (0: none).")
        time_constant_s: float = Field(
            2.0, ge=0.01, le=60, description="Non-stationary: time constant in seconds of each bin's running average.")
        thresh_n_mult_nonstationary: float = Field(
            2.0, ge=0, le=100, description="Non-stationary: a bin passes when it exceeds its running average "
                                           "by this many times the average (sigmoid midpoint).")
        sigmoid_slope_nonstationary: float = Field(
            10.0, gt=0, le=1000, description="Non-stationary: slope of the sigmoid mask (higher: harder gate).")
        noise_clip: str | None = Field(
            None, description="Stationary: path of an audio file holding only noise, for the noise profile; "
                              "empty: estimate the profile from the quietest frames of the input.")
        noise_quietest_fraction: float = Field(
            0.1, gt=0, le=1, description="Stationary, no noise_clip: fraction of the (non-silent) frames with the "
                                         "lowest energy taken as noise; 1.0 uses every frame as noisereduce does.")
        per_channel_profile: bool = Field(
            True, description="Stationary: give each channel the noise profile of that channel (of the noise clip "
                              "when it has as many channels, else of the input's quietest frames). False: one "
                              "profile of the channel mean, as noisereduce; with noise that differs between "
                              "channels that profile sits 3 dB low and removes less.")
        normalize_mask_edges: bool = Field(
            True, description="Smooth the mask without darkening the spectrogram's edges. noisereduce zero-pads "
                              "there, which attenuates the lowest bins (-3 dB at 40 Hz, -1.3 dB at 100 Hz with "
                              "n_fft 1024 at 44.1 kHz) and the first and last frames; false does exactly that. "
                              "The noisereduce implementation always zero-pads.")
        implementation: Literal["auto", "torch", "noisereduce"] = Field(
            "auto", description="auto/torch: the vectorized torch path on the stage's device (CUDA when the "
                                "pipeline runs there); noisereduce: the reference library on the CPU (slow).")
        block_s: float | None = Field(
            None, ge=0.05, le=3600, description="Length in seconds of the blocks the torch path processes at once "
                                                "(the result does not depend on it); empty: automatic.")
        detect_noise_floor: bool = Field(
            True, description="Diagnose first: gate only where a steady noise floor is measured (a half-octave "
                              "band whose median 100 ms level sits within floor_spread_db of its 10th "
                              "percentile, is noise-like and louder than min_floor_dbfs); none found: the input "
                              "passes unchanged (bit-identical) and the notes say so. false: always gate, as "
                              "noisereduce does. Not used with noise_clip (the clip is the diagnosis).")
        floor_spread_db: float = Field(
            1.0, ge=0.1, le=12, description="Detection: a band holds a steady floor when its median 100 ms level is "
                                            "at most this many dB above its 10th percentile (measured: steady "
                                            "noise 0.2-0.7 dB; music, noise-like music included, 1.3 dB and "
                                            "more).")
        min_floor_dbfs: float = Field(
            -100.0, ge=-200, le=0, description="Detection: a band's floor (its 10th-percentile level, dBFS) quieter "
                                               "than this is left alone (dither, near-silence).")
        gate_floor_bands_only: bool = Field(
            True, description="With detection: gate only the bands where a floor was found, pass the others "
                              "through; false: gate every frequency once a floor was found anywhere.")

        @model_validator(mode="after")
        def _consistent(self):
            if self.hop_length is not None and self.hop_length > self.n_fft // 2:
                raise ValueError(f"hop_length ({self.hop_length}) must be at most n_fft // 2 ({self.n_fft // 2}) "
                                 "so the frames overlap enough to be inverted")
            if self.noise_clip is not None and not self.stationary:
                raise ValueError("noise_clip is used by stationary gating only; set stationary: true or "
                                 "remove noise_clip")
            return self

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._noise: Audio | None = None

    def load(self) -> None:
        """Read the noise clip (if any) once, before any audio is processed."""
        from restorekit.errors import AudioFileError, StageError
        from restorekit.io import read_audio

        self._noise = None
        path = self.params.noise_clip
        if path is None:
            return
        try:
            self._noise = read_audio(path)
        except AudioFileError as exc:
            raise StageError(f"noise_clip: {exc}") from exc

    @property
    def hop(self) -> int:
        return self.params.hop_length or self.params.n_fft // 4

    def whole_file_reason(self) -> str | None:
        if self.params.implementation == "noisereduce":
            return "implementation noisereduce (the reference library) works on the whole file"
        return None

    def process(self, audio: Audio) -> Audio:
        import torch

        from restorekit.streaming import TensorSource

        p = self.params
        self.ensure_loaded()
        if p.implementation == "noisereduce":
            return self._process_noisereduce(audio)
        audio = audio.to(self.device)  # a whole-track stage: it moves the track to its device itself
        out = torch.empty_like(audio.samples)

        def put(a, b, y):
            out[:, a:b] = y

        changed = self._gate(TensorSource(audio.samples, audio.sample_rate), put)
        return audio.with_samples(out) if changed else audio

    def stream(self, source, sink) -> None:
        from restorekit.streaming import copy, spill

        self.ensure_loaded()
        if self.params.stationary:
            if not self._gate(source, lambda a, b, y: sink.write(y.cpu())):
                copy(source, sink)  # nothing to treat: bit-identical
            return
        parked, places = spill(source.sample_rate, source.channels), []  # non-stationary: blocks come last first

        def park(a, b, y):
            places.append((a, b, parked.frames))
            parked.write(y.cpu())

        try:
            if not self._gate(source, park):
                return copy(source, sink)
            for a, b, at in sorted(places):
                sink.write(parked.read(at, at + b - a))
        finally:
            parked.close()

    def _gate(self, source, emit) -> bool:
        """Diagnose, then gate `source` (a Source) into emit(a, b, samples) in order; False: nothing to treat."""
        import torch

        p = self.params
        noise = self._noise_for(source)
        active = None
        with torch.no_grad():
            if p.detect_noise_floor and noise is None:
                floor = measure_noise_floor(source, source.sample_rate, p.n_fft, self.hop, p.floor_spread_db,
                                            p.min_floor_dbfs, device=self.device)
                self.note(floor.describe(p.gate_floor_bands_only))
                if not floor.found:
                    return False
                if p.gate_floor_bands_only:
                    active = floor.active.to(self.device)
            thresh_db = None
            if p.stationary:
                thresh_db = self._threshold(source, noise)
                if thresh_db is None:  # digital silence: nothing to gate
                    return False
                if active is not None:
                    thresh_db = only_active(thresh_db, active)
            gate(source, source.sample_rate, self._config(source.sample_rate, self.device), thresh_db,
                 active=None if p.stationary else active, emit=emit, device=self.device)
        return True

    def _process_noisereduce(self, audio: Audio) -> Audio:
        import torch

        p = self.params
        noise = self._noise_for(audio)
        active = None
        if p.detect_noise_floor and noise is None:
            with torch.no_grad():
                floor = measure_noise_floor(audio.samples, audio.sample_rate, p.n_fft, self.hop, p.floor_spread_db,
                                            p.min_floor_dbfs)
            self.note(floor.describe(p.gate_floor_bands_only))
            if not floor.found:
                return audio  # nothing to treat: bit-identical
            if p.gate_floor_bands_only:
                active = floor.active
        return audio.with_samples(self._run_noisereduce(audio, noise, active).to(audio.device))

    # -- helpers ----------------------------------------------------------------------
    def _threshold(self, x, noise: Audio | None) -> torch.Tensor | None:
        """Stationary noise threshold in dB, (1 or channels, bins); None when the input is all silence.

        `x`: a tensor or a Source (read as often as needed: the quietest frames are picked, then read again).
        """
        from restorekit.streaming import as_source

        p = self.params
        x = as_source(x)
        if noise is not None:
            clip = noise.samples.to(self.device)
            mix = not (p.per_channel_profile and clip.shape[0] == x.shape[0])
            return noise_threshold_db(clip, None, p.n_fft, self.hop, p.n_std_thresh, mix=mix)
        frames = quietest_frames(x, p.n_fft, self.hop, p.noise_quietest_fraction)
        if frames is None:
            return None
        return noise_threshold_db(x, frames, p.n_fft, self.hop, p.n_std_thresh, mix=not p.per_channel_profile)

    def _noise_for(self, audio: Audio) -> Audio | None:
        """The noise clip at the audio's sample rate, or None."""
        from restorekit.dsp import resample
        from restorekit.errors import StageError

        if self._noise is None:
            return None
        noise = resample(self._noise, audio.sample_rate)
        if noise.frames < self.params.n_fft:
            raise StageError(f"noise_clip holds {noise.frames} frames at {audio.sample_rate} Hz, fewer than "
                             f"n_fft ({self.params.n_fft}); give a longer noise clip or a smaller n_fft")
        return noise

    def _config(self, sample_rate: int, device) -> GateConfig:
        p = self.params
        block = p.block_s * sample_rate if p.block_s is not None else (
            CUDA_BLOCK_SAMPLES if str(device).startswith("cuda") else CPU_BLOCK_SAMPLES)
        return GateConfig(
            stationary=p.stationary, prop_decrease=p.prop_decrease, n_fft=p.n_fft, hop=self.hop,
            n_grad_freq=smoothing_bins(p.freq_mask_smooth_hz, sample_rate / (p.n_fft / 2)),
            n_grad_time=smoothing_bins(p.time_mask_smooth_ms, self.hop / sample_rate * 1000),
            time_constant_s=p.time_constant_s, thresh_n_mult=p.thresh_n_mult_nonstationary,
            sigmoid_slope=p.sigmoid_slope_nonstationary, block_samples=max(1, round(block)),
            normalize_edges=p.normalize_mask_edges,
        )

    def _run_noisereduce(self, audio: Audio, noise: Audio | None, active=None) -> torch.Tensor:
        """The reference: noisereduce's own numpy/scipy implementation, on the whole signal at once."""
        import numpy as np
        import torch
        from noisereduce import reduce_noise

        p = self.params
        sr = audio.sample_rate
        x = audio.samples.detach().cpu()
        n = x.shape[1]
        if n < 2 * p.n_fft:  # scipy cannot frame shorter input: pad with silence, cut it off afterwards
            x = torch.nn.functional.pad(x, (0, 2 * p.n_fft - n))
        y = x.numpy()
        common = {
            "prop_decrease": p.prop_decrease, "n_fft": p.n_fft, "win_length": p.n_fft, "hop_length": self.hop,
            # noisereduce rejects smoothing narrower than one bin/frame; None means "no smoothing" there,
            # which is what the torch path does with a width under one bin (see smoothing_bins)
            "freq_mask_smooth_hz": _none_if_below(p.freq_mask_smooth_hz, sr / (p.n_fft / 2)),
            "time_mask_smooth_ms": _none_if_below(p.time_mask_smooth_ms, self.hop / sr * 1000),
            "time_constant_s": p.time_constant_s, "chunk_size": None, "padding": 0, "use_tqdm": False,
            "n_jobs": 1, "tmp_folder": None,
        }
        if not p.stationary:
            if active is not None:
                self.note("implementation noisereduce gates every band in non-stationary mode "
                          "(gate_floor_bands_only applies to the torch path)")
            out = reduce_noise(y=y, sr=sr, stationary=False, thresh_n_mult_nonstationary=p.thresh_n_mult_nonstationary,
                               sigmoid_slope_nonstationary=p.sigmoid_slope_nonstationary, **common)
        elif noise is not None:
            clip = noise.numpy()
            if p.per_channel_profile and clip.shape[0] == y.shape[0]:  # each channel with its own noise
                out = np.stack([reduce_noise(y=y[c], sr=sr, stationary=True, y_noise=clip[c],
                                             n_std_thresh_stationary=p.n_std_thresh, clip_noise_stationary=False,
                                             **common) for c in range(y.shape[0])])
            else:
                out = reduce_noise(y=y, sr=sr, stationary=True, y_noise=clip, n_std_thresh_stationary=p.n_std_thresh,
                                   clip_noise_stationary=False, **common)
        else:
            thresh = self._threshold(x[:, :n], None)
            if thresh is None:
                return audio.samples
            if active is not None:
                thresh = only_active(thresh, active.cpu())
            gate_class = _fixed_threshold_gate()
            rows = [gate_class(y=y if len(thresh) == 1 else y[c:c + 1], sr=sr, noise_thresh=thresh[c].numpy(),
                               **common).get_traces() for c in range(len(thresh))]
            out = np.concatenate(rows)
        out = np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(y.shape)[:, :n])
        return torch.from_numpy(out)


def _none_if_below(width: float, step: float) -> float | None:
    return None if width <= 0 or int(width / step) < 1 else width


def smoothing_bins(width: float, step: float) -> int:
    """noisereduce's `n_grad`: how many bins (or frames) of `step` fit in `width`, at least 1."""
    if width <= 0:
        return 1
    return max(1, int(width / step))


@dataclass(frozen=True)
class GateConfig:
    """Everything the torch gate needs, in bins, frames and samples."""

    stationary: bool
    prop_decrease: float
    n_fft: int
    hop: int
    n_grad_freq: int
    n_grad_time: int
    time_constant_s: float
    thresh_n_mult: float
    sigmoid_slope: float
    block_samples: int
    normalize_edges: bool = True

    @property
    def smooth(self) -> bool:
        return not (self.n_grad_freq == 1 and self.n_grad_time == 1)


# -- the torch gate -------------------------------------------------------------------------
def gate(x, sample_rate: int, cfg: GateConfig, thresh_db: torch.Tensor | None,
         active: torch.Tensor | None = None, emit=None, device=None) -> torch.Tensor | None:
    """Spectral gate of x (channels, frames; a tensor or a Source), block by block; `thresh_db` (1 or
    channels, bins) for stationary.

    Non-stationary: `active` (1 or channels, bins), when given, limits the gate to the True
    bins (the others get mask 1 before smoothing). The stationary path does the same through
    a threshold of -inf dB (see `only_active`). With `emit`, each block's output samples
    [a, b) go to emit(a, b, samples) in order and nothing is returned; else the output.
    `device`: where to compute (default: where x is).
    """
    import torch

    from restorekit.streaming import as_source

    src = as_source(x, sample_rate)
    device = torch.device(device) if device is not None else src.device
    out = None
    if emit is None:
        out = torch.empty(src.shape, dtype=torch.float32, device=device)

        def emit(a, b, y):
            out[:, a:b] = y

    frames = Frames(src.frames, cfg.n_fft, cfg.hop)
    extra = cfg.n_grad_time if cfg.smooth else 0
    blocks = plan_blocks(frames, cfg.block_samples, extra)
    smoother = MaskSmoother(cfg.n_grad_freq, cfg.n_grad_time, device) if cfg.smooth else None

    def inverse(spec, blk):
        y = torch.empty(src.channels, blk.b - blk.a, dtype=spec.real.dtype, device=device)
        write_istft(y, spec, blk, frames, offset=blk.a)
        emit(blk.a, blk.b, y)

    if cfg.stationary:
        thresh_pow = power_threshold(thresh_db, cfg.n_fft).to(device=device, dtype=torch.float32)
        for blk in blocks:
            spec = stft(src.read(blk.s0, blk.s1).to(device), cfg.n_fft, cfg.hop)
            mask = stationary_mask(spec, thresh_pow, cfg.prop_decrease, smoother, cfg.normalize_edges)
            inverse(spec.mul_(mask), blk)
        return out
    for blk, spec, smoothed in _nonstationary_blocks(src, frames, blocks, sample_rate, cfg, device):
        mask = nonstationary_mask(spec.abs(), smoothed, cfg, smoother, active)
        inverse(spec.mul_(mask), blk)
    return out


def power_threshold(thresh_db: torch.Tensor, n_fft: int) -> torch.Tensor:
    """dB threshold on noisereduce's scale (|X|/sum(window), + eps) as a power threshold on |torch.stft|^2.

    `20*log10(|X|/S + eps) > t`  is  `|X|^2 > (S*(10^(t/20) - eps))^2`  (S = sum of the window = n_fft/2),
    so the mask needs no logarithm of the signal's spectrogram.
    """
    import torch

    amp = (torch.pow(10.0, thresh_db.double() / 20) - EPS).clamp_min(0) * (n_fft / 2)
    return amp.square().float()


def stationary_mask(spec: torch.Tensor, thresh_pow: torch.Tensor, prop: float,
                    smoother: MaskSmoother | None, normalize_edges: bool = True) -> torch.Tensor:
    """noisereduce's stationary mask: (bin above threshold) mixed by prop_decrease, then smoothed."""
    import torch

    power = spec.real.square().addcmul_(spec.imag, spec.imag)  # (C, F, T), F varying fastest
    thresh = thresh_pow[:, :, None]  # (1 or C, F, 1)
    if smoother is None:
        return (power > thresh).to(power.dtype).mul_(prop).add_(1.0 - prop)
    mask = smoother(lambda out: torch.gt(power, thresh, out=out), power.shape, power.dtype, scale=prop)
    # smoothing is linear: smooth(p*m + (1-p)) = p*smooth(m) + (1-p)*smooth(1), where smooth(1) is 1
    # except within the filter's half-width of the spectrogram's edges (zero padding)
    if normalize_edges:
        return smoother.divide_edges_(mask).add_(1.0 - prop)
    return mask.add_(smoother.edge_gain(mask.shape[-2], mask.shape[-1], mask.dtype), alpha=1.0 - prop)


def nonstationary_mask(mag: torch.Tensor, smoothed: torch.Tensor, cfg: GateConfig,
                       smoother: MaskSmoother | None, active: torch.Tensor | None = None) -> torch.Tensor:
    """noisereduce's non-stationary mask: sigmoid of the rise above the running average, smoothed, mixed.

    `active` (1 or channels, bins): bins where it is False get mask 1 (pass) before smoothing.
    """
    import torch

    def fill(out):
        ratio = (mag - smoothed).div_(smoothed.clamp_min(torch.finfo(mag.dtype).tiny))
        torch.sigmoid(ratio.sub_(cfg.thresh_n_mult).mul_(cfg.sigmoid_slope), out=out)
        if active is not None:
            out.masked_fill_(~active[:, :, None].expand_as(out), 1.0)

    p = cfg.prop_decrease
    if smoother is None:
        mask = torch.empty_like(mag)
        fill(mask)
        return mask.mul_(p).add_(1.0 - p)
    mask = smoother(fill, mag.shape, mag.dtype, scale=p)
    if cfg.normalize_edges:
        smoother.divide_edges_(mask)
    return mask.add_(1.0 - p)


class MaskSmoother:
    """noisereduce's mask smoothing filter (a triangle along frequency times one along time), 'same' size.

    The filter is separable, so it runs as two banded convolutions, each a batched matrix
    product over chunks of `chunk` rows along a non-contiguous axis (the layout BLAS wants):
    time first on the (C, T, F) layout torch.stft produces, then frequency after one
    transposing copy. The mask is written straight into the zero-padded buffer of the first
    product and the transposing copy into that of the second. On the CPU this is about 7x
    faster than the 2-D convolution of noisereduce's torch gate, with the same values.
    """

    def __init__(self, n_grad_freq: int, n_grad_time: int, device, chunk: int = 16) -> None:
        self.vf = _triangle(n_grad_freq)
        self.vt = _triangle(n_grad_time)
        self.device = device
        self.chunk = chunk
        self._cache: dict = {}

    def _band(self, v, dtype, scale: float):
        """(chunk, chunk + 2n) matrix taking a padded chunk of rows to `chunk` smoothed rows."""
        import torch

        key = ("band", len(v), id(v), dtype, scale)
        if key not in self._cache:
            n, L = (len(v) - 1) // 2, self.chunk
            band = torch.zeros(L, L + 2 * n, dtype=torch.float64)
            for j in range(L):  # a small constant matrix, built once per stage run
                band[j, j:j + 2 * n + 1] = v * scale
            self._cache[key] = band.to(device=self.device, dtype=dtype)
        return self._cache[key]

    def _padded(self, v, rows: int, cols: int, lead: int, dtype):
        """Zero-padded buffer (lead, chunks*chunk + 2n, cols) for `rows` rows, and its interior."""
        import torch

        n, L = (len(v) - 1) // 2, self.chunk
        total = -(-rows // L) * L + 2 * n
        buf = torch.empty(lead, total, cols, dtype=dtype, device=self.device)
        buf[:, :n].zero_()
        buf[:, n + rows:].zero_()
        return buf, buf[:, n:n + rows]

    def _product(self, v, buf, rows: int, scale: float):
        """The banded product over a padded buffer: `rows` smoothed rows (lead, rows, cols)."""
        n, L = (len(v) - 1) // 2, self.chunk
        lead, total, cols = buf.shape
        nch = (total - 2 * n) // L
        view = buf.as_strided((lead, nch, L + 2 * n, cols), (buf.stride(0), L * cols, cols, 1))
        return (self._band(v, buf.dtype, scale) @ view).view(lead, nch * L, cols)[:, :rows]

    def __call__(self, fill, shape, dtype, scale: float = 1.0):
        """Smoothed mask times `scale`, (C, F, T); fill(out) writes the raw mask into an (C, F, T) view."""
        import torch

        C, F, T = shape
        if len(self.vt) > 1:
            buf, inner = self._padded(self.vt, T, F, C, dtype)
            fill(inner.transpose(1, 2))
            m = self._product(self.vt, buf, T, scale)  # (C, T, F)
            scale = 1.0
        else:
            m = torch.empty(C, T, F, dtype=dtype, device=self.device)
            fill(m.transpose(1, 2))
        if len(self.vf) == 1:
            return (m.mul_(scale) if scale != 1.0 else m).transpose(1, 2)
        buf, inner = self._padded(self.vf, F, T, C, dtype)
        inner.copy_(m.transpose(1, 2))
        return self._product(self.vf, buf, F, scale)  # (C, F, T), T varying fastest

    def divide_edges_(self, mask):
        """Divide mask (C, F, T) in place by the smoothed all-ones mask: only its edge rows and columns."""
        _, F, T = mask.shape
        nf, nt = (len(self.vf) - 1) // 2, (len(self.vt) - 1) // 2
        if F < 2 * nf or T < 2 * nt:
            return mask.div_(self.edge_gain(F, T, mask.dtype))
        ef, et = self._edge(self.vf, F, mask.dtype), self._edge(self.vt, T, mask.dtype)
        if nf:
            mask[:, :nf].div_(ef[:nf, None])
            mask[:, F - nf:].div_(ef[F - nf:, None])
        if nt:
            mask[:, :, :nt].div_(et[:nt])
            mask[:, :, T - nt:].div_(et[T - nt:])
        return mask

    def edge_gain(self, n_freq: int, n_time: int, dtype):
        """The smoothed all-ones mask (F, T): 1 inside, less within a half-width of the edges."""
        return self._edge(self.vf, n_freq, dtype)[:, None] * self._edge(self.vt, n_time, dtype)[None, :]

    def _edge(self, v, n: int, dtype):
        import torch
        import torch.nn.functional as F

        key = ("edge", len(v), id(v), n, dtype)
        if key not in self._cache:
            if len(self._cache) > 64:
                self._cache = {k: val for k, val in self._cache.items() if k[0] == "band"}
            if len(v) == 1:
                edge = torch.ones(n, dtype=dtype, device=self.device)
            else:
                w = v.to(device=self.device, dtype=dtype)
                edge = F.conv1d(torch.ones(1, 1, n, dtype=dtype, device=self.device), w.view(1, 1, -1),
                                padding=(len(v) - 1) // 2).view(n)
            self._cache[key] = edge
        return self._cache[key]


def _triangle(n: int):
    """noisereduce's smoothing ramp for n_grad = n: 2n+1 taps rising to 1 and back, normalized."""
    import torch

    k = torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)
    v = torch.cat([k, torch.ones(1, dtype=torch.float64), k.flip(0)])
    return v / v.sum()


# -- non-stationary: running average of each bin (noisereduce's filtfilt) ---------------------
def ema_coefficient(time_constant_s: float, sample_rate: int, hop: int) -> float:
    """noisereduce's one-pole coefficient b for a time constant (y[t] = b*x[t] + (1-b)*y[t-1])."""
    t_frames = time_constant_s * sample_rate / float(hop)
    return (math.sqrt(1 + 4 * t_frames ** 2) - 1) / (2 * t_frames ** 2)


def ema_scan(x: torch.Tensor, b: float, init: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """One-pole smoothing along dim 1 of x (C, T, F): y[t] = b*x[t] + (1-b)*y[t-1], y[-1] = init (C, F).

    With reverse=True it runs backwards: y[t] = b*x[t] + (1-b)*y[t+1], y[T] = init. Exact (no
    truncated impulse response) and vectorized: chunks of SCAN_CHUNK frames are filtered from
    a zero state by one matrix product, and the chunk states are carried by a second one.
    """
    import torch
    import torch.nn.functional as F

    C, T, K = x.shape
    L = min(SCAN_CHUNK, T)
    nch = -(-T // L)
    pad = nch * L - T
    a = 1.0 - b
    dev, dt = x.device, x.dtype
    i = torch.arange(L, device=dev, dtype=torch.float64)
    diff = i[:, None] - i[None, :]
    kern = torch.where(diff >= 0, b * a ** diff.clamp_min(0), torch.zeros((), dtype=torch.float64, device=dev))
    k = torch.arange(nch, device=dev, dtype=torch.float64)
    kd = k[:, None] - k[None, :]
    carry = torch.where(kd >= 0, a ** (L * kd.clamp_min(0)), torch.zeros((), dtype=torch.float64, device=dev))
    if not reverse:
        xc = F.pad(x, (0, 0, 0, pad)).view(C, nch, L, K)
        local = kern.to(dt) @ xc  # (C, nch, L, K): each chunk from a zero state
        ends = local[:, :, -1, :]
        states = carry.to(dt) @ ends + (a ** (L * (k + 1))).to(dt)[:, None] * init[:, None, :]
        before = torch.cat([init[:, None, :], states[:, :-1]], dim=1)  # state entering each chunk
        y = local.add_((a ** (i + 1)).to(dt)[None, None, :, None] * before[:, :, None, :])
        return y.view(C, nch * L, K)[:, :T]
    xc = F.pad(x, (0, 0, pad, 0)).view(C, nch, L, K)
    local = kern.T.to(dt) @ xc
    starts = local[:, :, 0, :]
    states = carry.T.to(dt) @ starts + (a ** (L * (nch - k))).to(dt)[:, None] * init[:, None, :]
    after = torch.cat([states[:, 1:], init[:, None, :]], dim=1)  # state leaving each chunk
    y = local.add_((a ** (L - i)).to(dt)[None, None, :, None] * after[:, :, None, :])
    return y.view(C, nch * L, K)[:, pad:]


def _nonstationary_blocks(x, frames: Frames, blocks: list[Block], sample_rate: int, cfg: GateConfig, device):
    """Yield (block, segment STFT, running average of |STFT| on the segment's frames), exactly.

    noisereduce smooths |X| of each bin with scipy's filtfilt (forward then backward one-pole
    filter, each started in its steady state). That reaches the whole file, so blocks need
    two passes: a forward pass over all frames records the forward filter's state where each
    block's frames begin; then blocks run last to first, each carrying the backward filter's
    state to the block before it. Memory stays at one block.
    """
    import torch

    b = ema_coefficient(cfg.time_constant_s, sample_rate, cfg.hop)
    T = frames.count
    wanted = {blk.t0 - 1 for blk in blocks if blk.t0 > 0}
    fwd_state: dict[int, torch.Tensor] = {}
    state = None
    step = blocks[0].b - blocks[0].a if blocks else 1
    own = [(min(T, blk.a // cfg.hop), min(T, blk.a // cfg.hop + step // cfg.hop)) for blk in blocks]
    own[-1] = (own[-1][0], T)
    for u0, u1 in own:  # pass 1: forward filter over the frames each block owns
        if u1 <= u0:
            continue
        s0, s1 = frames.segment(u0, u1)
        j0 = u0 - s0 // cfg.hop
        mag = stft(x.read(s0, s1).to(device), cfg.n_fft, cfg.hop)[:, :, j0:j0 + (u1 - u0)].abs().transpose(1, 2)
        if state is None:
            state = mag[:, 0].clone()
        f = ema_scan(mag, b, state)
        for t in wanted:
            if u0 <= t < u1:
                fwd_state[t] = f[:, t - u0].clone()
        state = f[:, -1].clone()
    last_fwd = state
    back_state: dict[int, torch.Tensor] = {}
    for blk in reversed(blocks):  # pass 2: backward filter, last block first
        spec = stft(x.read(blk.s0, blk.s1).to(device), cfg.n_fft, cfg.hop)
        j0 = blk.t0 - blk.s0 // cfg.hop
        mag = spec[:, :, j0:j0 + (blk.t1 - blk.t0)].abs().transpose(1, 2).contiguous()  # (C, T, F)
        init = fwd_state[blk.t0 - 1] if blk.t0 > 0 else mag[:, 0]
        f = ema_scan(mag, b, init)
        g = ema_scan(f, b, last_fwd if blk.t1 >= T else back_state[blk.t1], reverse=True)
        for t in list(back_state):
            if t > blk.t1:
                del back_state[t]
        for other in blocks:
            if blk.t0 <= other.t1 < blk.t1:
                back_state[other.t1] = g[:, other.t1 - blk.t0].clone()
        C, K, J = spec.shape  # frames outside [t0, t1) are never used for the output
        smoothed = torch.ones(C, J, K, dtype=g.dtype, device=g.device).transpose(1, 2)
        smoothed[:, :, j0:j0 + (blk.t1 - blk.t0)] = g.transpose(1, 2)
        yield blk, spec, smoothed


# -- noise-floor detection (diagnose, then treat) ---------------------------------------------
def floor_bands(n_fft: int, sample_rate: int) -> list[tuple[int, int]]:
    """Detection bands as bin ranges [lo, hi) covering every bin: half an octave, at least FLOOR_MIN_BINS bins."""
    n_bins = n_fft // 2 + 1
    edges = [0]
    lo = 1
    while lo < n_bins:
        hi = max(lo + FLOOR_MIN_BINS, round(lo * 2 ** FLOOR_BAND_OCTAVES))
        if n_bins - hi < FLOOR_MIN_BINS:  # too little left for a band of its own
            hi = n_bins
        edges.append(min(hi, n_bins))
        lo = hi
    return list(pairwise(edges))


@dataclass
class NoiseFloor:
    """What `measure_noise_floor` found, per channel and detection band."""

    bands: list[tuple[int, int]]  # bin ranges [lo, hi)
    bin_hz: float
    n_bins: int
    found_mask: object  # numpy bool (channels, bands)
    level_dbfs: object  # numpy (channels, bands): 10th percentile of the 100 ms level; nan where not measured
    spread_db: object  # numpy (channels, bands): median minus 10th percentile of the 100 ms level
    flatness: object  # numpy (channels, bands): median in-band spectral flatness
    signal_dbfs: float  # rms level of the input over the analysed frames
    reason: str | None = None  # why nothing could be measured
    spread_limit_db: float = 0.0  # the criteria it was measured with, for the notes
    min_dbfs: float = 0.0

    @property
    def found(self) -> bool:
        return bool(self.found_mask.any())

    @property
    def active(self):
        """torch bool (channels, bins): True in the bins of the bands where a floor was found."""
        import torch

        mask = torch.zeros(self.found_mask.shape[0], self.n_bins, dtype=torch.bool)
        for c, b in zip(*self.found_mask.nonzero()):
            lo, hi = self.bands[b]
            mask[c, lo:hi] = True
        return mask

    def floor_dbfs(self) -> float:
        """Level of the floor in the bands where it was found (dBFS, power mean over channels)."""
        import numpy as np

        power = np.where(self.found_mask, 10 ** (np.nan_to_num(self.level_dbfs, nan=-300.0) / 10), 0.0)
        return float(10 * np.log10(power.sum(axis=1).mean() + 1e-30))

    def _ranges(self, found_bands) -> str:
        runs: list[list[int]] = []
        for b in sorted(found_bands):
            if runs and runs[-1][1] == b - 1:
                runs[-1][1] = b
            else:
                runs.append([b, b])
        return ", ".join(f"{_khz(self.bands[a][0] * self.bin_hz)}-{_khz(self.bands[z][1] * self.bin_hz)} kHz"
                         for a, z in runs)

    def describe(self, restricted: bool = True) -> str:
        import numpy as np

        if self.reason:
            return f"no noise floor measured ({self.reason}): passed through unchanged"
        if not self.found:
            with np.errstate(invalid="ignore"):
                eligible = (self.level_dbfs >= self.min_dbfs) & (self.flatness >= FLOOR_MIN_FLATNESS)
            spread = np.where(eligible & np.isfinite(self.spread_db), self.spread_db, np.inf)
            c, b = np.unravel_index(np.argmin(spread), spread.shape)
            closest = (f"; steadiest band {self._ranges([b])} at {spread[c, b]:.1f} dB"
                       if np.isfinite(spread[c, b]) else "")
            return ("no steady noise floor found (no noise-like band whose median 100 ms level is within "
                    f"{self.spread_limit_db:g} dB of its 10th percentile, above {self.min_dbfs:g} dBFS{closest}): "
                    "passed through unchanged")
        union = sorted({int(b) for b in self.found_mask.nonzero()[1]})
        text = (f"noise floor found in {self._ranges(union)} ({len(union)} of {len(self.bands)} bands, "
                f"spread {np.nanmax(np.where(self.found_mask, self.spread_db, np.nan)):.2f} dB at most): "
                f"{self.floor_dbfs():.1f} dBFS there, {self.signal_dbfs - self.floor_dbfs():.1f} dB below the "
                f"signal ({self.signal_dbfs:.1f} dBFS); gating {'only those bands' if restricted else 'every band'}")
        rows = [sorted(int(b) for b in self.found_mask[c].nonzero()[0]) for c in range(self.found_mask.shape[0])]
        if len(rows) > 1 and any(r != rows[0] for r in rows):
            text += "; per channel: " + ", ".join(f"{c + 1}: {self._ranges(r) if r else 'none'}"
                                                  for c, r in enumerate(rows))
        return text


def _khz(hz: float) -> str:
    return f"{hz / 1000:.1f}".rstrip("0").rstrip(".")


def measure_noise_floor(x, sample_rate: int, n_fft: int, hop: int, spread_db: float,
                        min_floor_dbfs: float, device=None) -> NoiseFloor:
    """Find the bands of x (channels, frames) that hold a steady, noise-like floor.

    Per channel and half-octave band (at least FLOOR_MIN_BINS bins of an `n_fft` STFT): the
    band's power in each frame, averaged over 100 ms; a floor is present where the median
    of that level is within `spread_db` of its 10th percentile (steady: the band sits at
    its floor at least half the time, as a noise floor does and music, which follows notes
    and beats, does not), the median in-band spectral flatness of its frames is at least
    FLOOR_MIN_FLATNESS (noise-like, not a held tone) and the floor (the 10th percentile) is
    louder than `min_floor_dbfs`. Frames that are digital silence (below -150 dBFS in the
    band) do not count. The STFT runs in blocks of x (a tensor or a Source), and the per-frame
    band powers go to disk for long input (`RowSpill`), so memory stays small.
    """
    import numpy as np
    import torch

    from restorekit.streaming import as_source
    from restorekit_plugins._blocks import RowSpill

    x = as_source(x, sample_rate)
    device = torch.device(device) if device is not None else x.device
    C, n = x.shape
    bands = floor_bands(n_fft, sample_rate)
    n_bins = n_fft // 2 + 1
    nb = len(bands)
    empty = np.full((C, nb), np.nan)
    report = NoiseFloor(bands, sample_rate / n_fft, n_bins, np.zeros((C, nb), bool), empty, empty.copy(),
                        empty.copy(), -200.0, spread_limit_db=spread_db, min_dbfs=min_floor_dbfs)
    smooth = max(1, round(FLOOR_SMOOTH_S * sample_rate / hop))
    frames = 1 + (n - n_fft) // hop if n >= n_fft else 0
    if frames - smooth + 1 < FLOOR_MIN_FRAMES:
        report.reason = f"{n / sample_rate:.2f} s is too short to measure"
        return report
    window = torch.hann_window(n_fft, dtype=torch.float32, device=device)
    # band power as mean square: sum of |X|^2 over the band's bins * 2 / (n_fft * sum(w^2))
    member = torch.zeros(n_bins, nb, dtype=torch.float32, device=device)
    for b, (lo, hi) in enumerate(bands):
        member[lo:hi, b] = 1.0
    counts = member.sum(0)
    scale = 2.0 / (n_fft * float(window.double().square().sum()))
    power = RowSpill(C * nb)  # (channel, band) rows of per-frame band power, on disk for long input
    flat = RowSpill(C * nb)  # flatness of every FLOOR_FLATNESS_STEP-th frame: its median needs no more
    tiny = 1e-30
    total = 0.0
    for t0 in range(0, frames, FLOOR_BLOCK_FRAMES):
        t1 = min(frames, t0 + FLOOR_BLOCK_FRAMES)
        seg = x.read(t0 * hop, (t1 - 1) * hop + n_fft).to(device).float()
        spec = torch.stft(seg, n_fft, hop, window=window, center=False, return_complex=True).transpose(1, 2)
        p = spec.real.square().addcmul_(spec.imag, spec.imag)  # (C, T, F)
        band_sum = p @ member  # (C, T, nb)
        block_power = (band_sum.double() * scale).transpose(1, 2).cpu().numpy()
        total += float(block_power.sum())
        power.append(block_power.reshape(C * nb, -1))
        first = (-t0) % FLOOR_FLATNESS_STEP
        some = p[:, first::FLOOR_FLATNESS_STEP]
        log_mean = torch.log(some.double() + tiny) @ member.double() / counts.double()
        flat.append((torch.exp(log_mean) / (band_sum[:, first::FLOOR_FLATNESS_STEP].double() / counts + tiny))
                    .transpose(1, 2).cpu().numpy().reshape(C * nb, -1))
    report.signal_dbfs = float(10 * np.log10(total / (C * frames) + tiny))
    silent = 1e-15
    for b, (lo, hi) in enumerate(bands):
        k = min(frames, max(smooth, -(-FLOOR_MIN_BIN_FRAMES // (hi - lo))))
        for c in range(C):
            row = power.row(c * nb + b)
            csum = np.concatenate([np.zeros(1), np.cumsum(row)])
            smoothed = (csum[k:] - csum[:-k]) / k
            level = smoothed[smoothed > silent]
            if level.size < FLOOR_MIN_FRAMES:
                continue
            low, mid = np.percentile(10 * np.log10(level), [FLOOR_LOW_PERCENTILE, 50.0])
            report.level_dbfs[c, b] = low
            report.spread_db[c, b] = mid - low
            sounding = row[::FLOOR_FLATNESS_STEP] > silent
            flat_row = flat.row(c * nb + b)
            report.flatness[c, b] = float(np.median(flat_row[sounding])) if sounding.any() else 0.0
    with np.errstate(invalid="ignore"):
        report.found_mask = ((report.spread_db <= spread_db) & (report.level_dbfs >= min_floor_dbfs)
                             & (report.flatness >= FLOOR_MIN_FLATNESS))
    if not np.isfinite(report.level_dbfs).any():
        report.reason = "digital silence"
    return report


def only_active(thresh_db: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """The stationary threshold (1 or channels, bins) with -inf dB (everything passes) outside `active`."""
    import torch

    rows = max(thresh_db.shape[0], active.shape[0])
    thresh = thresh_db.expand(rows, -1)
    return torch.where(active.to(thresh.device).expand(rows, -1), thresh,
                       torch.full_like(thresh, -math.inf))


# -- noise profile --------------------------------------------------------------------------
def frame_energies(x, n_fft: int, hop: int, t0: int, t1: int) -> torch.Tensor:
    """Windowed energy of the channel mean in frames t0..t1-1 (the STFT's framing) of x (a tensor or a Source)."""
    import torch
    import torch.nn.functional as F

    from restorekit.streaming import as_source

    x = as_source(x)
    frames = Frames(x.frames, n_fft, hop)
    s0, s1 = frames.segment(t0, t1)
    mono = x.read(s0, s1).mean(dim=0)
    half = n_fft // 2
    w2 = torch.hann_window(n_fft, dtype=mono.dtype, device=mono.device).square()
    e = F.conv1d(F.pad(mono.square()[None, None], (half, half)), w2.view(1, 1, -1), stride=hop).view(-1)
    j0 = t0 - s0 // hop
    return e[j0:j0 + (t1 - t0)]


def quietest_frames(x, n_fft: int, hop: int, fraction: float) -> torch.Tensor | None:
    """Indices of the quietest `fraction` of the non-silent frames of x (a tensor or a Source), or None
    when all are silent. Keeps one energy per frame (4 bytes per hop)."""
    import torch

    from restorekit.streaming import as_source

    x = as_source(x)
    frames = Frames(x.frames, n_fft, hop)
    T = frames.count
    step = max(1, CPU_BLOCK_SAMPLES // hop)
    energy = torch.cat([frame_energies(x, n_fft, hop, t, min(T, t + step)) for t in range(0, T, step)])
    w2sum = float(torch.hann_window(n_fft, dtype=torch.float64).square().sum())
    valid = torch.nonzero(energy / w2sum > SILENT_FRAME_POWER).view(-1)
    if valid.numel() == 0:
        return None
    k = max(1, round(fraction * valid.numel()))
    if k >= valid.numel():
        return valid
    return valid[torch.topk(energy[valid], k, largest=False).indices].sort().values


def _frame_db(x, idx: torch.Tensor, n_fft: int, hop: int, mix: bool) -> torch.Tensor:
    """dB spectra (channels, frames, bins) at frame indices idx (sorted) of x (a Source) on noisereduce's
    scale; mix: of the channel mean. Frames close together are read together, at most CPU_BLOCK_SAMPLES
    samples at a time; frames that run past either end are zero padded."""
    import torch

    n, half = x.frames, n_fft // 2
    channels = 1 if mix else x.channels
    starts = (idx.cpu() * hop - half).tolist()
    seg = torch.empty(channels, len(starts), n_fft, dtype=torch.float32, device=x.device)
    offsets = torch.arange(n_fft)
    i = 0
    while i < len(starts):
        j = i + 1
        while j < len(starts) and starts[j] - starts[j - 1] <= n_fft and starts[j] - starts[i] < CPU_BLOCK_SAMPLES:
            j += 1
        lo, hi = starts[i], starts[j - 1] + n_fft
        piece = x.read(max(lo, 0), min(hi, n))
        if lo < 0 or hi > n:
            piece = torch.nn.functional.pad(piece, (max(0, -lo), max(0, hi - n)))
        picked = piece[:, (torch.tensor(starts[i:j]) - lo)[:, None] + offsets[None, :]]
        seg[:, i:j] = picked.mean(dim=0, keepdim=True) if mix else picked
        i = j
    window = torch.hann_window(n_fft, dtype=seg.dtype, device=seg.device)
    mag = torch.fft.rfft(seg.mul_(window), dim=-1).abs().double() / (n_fft / 2)
    return 20 * torch.log10(mag + EPS)


def noise_threshold_db(x, idx: torch.Tensor | None, n_fft: int, hop: int, n_std: float,
                       mix: bool = True) -> torch.Tensor:
    """Per-bin noise threshold (float64, (channels, bins)): mean + n_std * std of the noise frames' dB spectra.

    As noisereduce: each bin is floored 80 dB below its maximum over the noise frames, the
    standard deviation is the population one, and with mix=True the channels are averaged
    first (one threshold row); mix=False gives each channel its own row. `idx` selects the
    frames (None: all frames of x, a tensor or a Source); they are read and transformed in
    batches (twice: the maximum first), so memory stays bounded.
    """
    import torch

    from restorekit.streaming import as_source

    x = as_source(x)
    if idx is None:
        idx = torch.arange(Frames(x.frames, n_fft, hop).count)
    batches = torch.split(idx, STAT_BATCH_FRAMES)
    if len(batches) == 1:
        db = _frame_db(x, batches[0], n_fft, hop, mix)
        db = torch.maximum(db, db.max(dim=1, keepdim=True).values - NOISE_TOP_DB)
        std, mean = torch.std_mean(db, dim=1, correction=0)
        return mean + n_std * std
    peak = torch.stack([_frame_db(x, bt, n_fft, hop, mix).max(dim=1).values for bt in batches]).max(dim=0).values
    total = torch.zeros_like(peak)
    total_sq = torch.zeros_like(peak)
    for bt in batches:
        db = torch.maximum(_frame_db(x, bt, n_fft, hop, mix), (peak - NOISE_TOP_DB)[:, None])
        total += db.sum(dim=1)
        total_sq += db.square().sum(dim=1)
    mean = total / idx.numel()
    std = (total_sq / idx.numel() - mean.square()).clamp_min(0).sqrt()
    return mean + n_std * std


def _fixed_threshold_gate():
    """noisereduce's stationary gate with a noise threshold given directly (not computed from a clip)."""
    from noisereduce.spectralgate.base import SpectralGate as NRGate
    from noisereduce.spectralgate.stationary import SpectralGateStationary

    class FixedThresholdGate(SpectralGateStationary):
        def __init__(self, y, sr, noise_thresh, **kwargs):
            NRGate.__init__(self, y=y, sr=sr, **kwargs)
            self.noise_thresh = noise_thresh
            self.mean_freq_noise = noise_thresh  # only its length is read

    return FixedThresholdGate


@hookimpl
def register_stages(register):
    register(SpectralGate)
