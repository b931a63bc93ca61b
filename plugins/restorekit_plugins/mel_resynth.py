"""From a restored mel spectrogram back to a waveform, keeping the input's phase where it can.

A mel spectrogram has no phase and 128 bands for hundreds of STFT bins, so it cannot be
inverted exactly. The restored mel is applied to the input instead:

1. **Bands the input has** (its mel energy is within `missing_db` of the restored band):
   the ratio restored/input of each band, in dB, is interpolated across the STFT bins
   with the mel filters' weights, clamped to [`min_gain_db`, `max_gain_db`] and applied
   as a gain to the input's complex STFT. The input's phase, its fine harmonic structure
   inside each band, and everything above the mel range (16 kHz) are kept.
2. **Bands the input lacks** (more than `missing_db` below the restored band, e.g. the
   highs removed by a band limit, or a dropout, and within `fill_range_db` of the
   frame's loudest restored band, so near-silent frames are not filled with noise): the magnitude is the restored band
   energy spread evenly over its bins, and the phase is estimated by the fast
   Griffin-Lim algorithm (Perraudin et al. 2013; momentum 0.99) while the bins of step 1
   stay fixed, so the estimate is consistent with the phase the input does have.

Limits: filled bands have the mel resolution (no harmonic structure finer than one mel
band, which is wide at high frequencies) and Griffin-Lim phase (slightly diffuse, "phasey"
transients); gains cannot undo nonlinear damage inside a band (clipping harmonics,
quantization noise correlated with the signal) beyond scaling it.
"""

from __future__ import annotations

import torch

from restorekit_plugins.nets.crnn_mel import MelFrontend

FILL_FLOOR_DB = -90.0  # re a full-scale sine; quieter restored bands are never filled


def resynthesize(front: MelFrontend, spec: torch.Tensor, target_mel: torch.Tensor, length: int, *,
                 missing_db: float = 15.0, fill_range_db: float = 50.0, min_gain_db: float = -40.0, max_gain_db: float = 20.0,
                 iterations: int = 2, momentum: float = 0.99, seed: int = 0,
                 input_mel: torch.Tensor | None = None) -> torch.Tensor:
    """A waveform (batch, length) whose mel spectrogram follows `target_mel`.

    `spec`: the input's scaled complex STFT (batch, bins, steps) from `front.stft`;
    `target_mel`: the restored mel power (batch, mels, steps); `input_mel`: the input's
    (`front.spec_mel(spec)`, computed here when not given). Bands more than
    `fill_range_db` below the frame's loudest restored band (or below FILL_FLOOR_DB) are
    never filled: near-silence stays silent.
    """
    tiny = 1e-12
    if input_mel is None:
        input_mel = front.spec_mel(spec)
    band_gain_db = 10 * torch.log10((target_mel + tiny) / (input_mel + tiny))

    target_db = 10 * torch.log10(target_mel + tiny)
    audible = target_db > torch.maximum(target_db.amax(dim=1, keepdim=True) - fill_range_db,
                                        torch.full((), FILL_FLOOR_DB, device=spec.device))
    missing = front.to_bins(((band_gain_db > missing_db) & audible).float()) > 0.5
    fixed = spec * torch.pow(10.0, front.to_bins(band_gain_db).clamp(min_gain_db, max_gain_db) / 20)
    rows = missing.any(dim=2).any(dim=0).nonzero()
    if rows.numel() == 0:
        return front.istft(fixed, length)
    lo, hi = int(rows[0]), int(rows[-1]) + 1  # Griffin-Lim works on the bins between the missing ones
    missing, kept = missing[:, lo:hi], fixed[:, lo:hi]
    fill_mag = fill_magnitude(front, target_mel, lo, hi)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    phase = torch.rand(kept.shape, generator=generator).to(spec.device) * (2 * torch.pi)
    current = fixed.clone()
    previous = current[:, lo:hi] = torch.where(missing, torch.polar(fill_mag, phase), kept)
    for _ in range(iterations):
        rebuilt = front.stft(front.istft(current, length))[:, lo:hi]
        projected = torch.where(missing, fill_mag * torch.sgn(rebuilt), kept)
        current[:, lo:hi] = projected + momentum * (projected - previous)
        previous = projected
    current[:, lo:hi] = previous
    return front.istft(current, length)


def fill_magnitude(front: MelFrontend, target_mel: torch.Tensor, lo: int = 0, hi: int | None = None) -> torch.Tensor:
    """The magnitude Griffin-Lim gives bins lo:hi (batch, bins, steps) it fills: each band's restored power
    spread evenly over its bins, interpolated in dB with the filters' weights (1 above the mel range,
    whose bins are never filled)."""
    density = target_mel / front.band_bins.clamp_min(1e-6)[None, :, None]  # power per bin in each band
    return torch.pow(10.0, front.to_bins(torch.log10(density + 1e-12), lo, hi) / 2)
