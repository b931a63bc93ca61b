"""Training losses shared by the learned stages."""

from __future__ import annotations

import torch
from torch.nn import functional as F

STFT_SIZES = ((512, 128), (1024, 256), (2048, 512))


def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """|STFT| of (batch, frames) audio with a Hann window, floored to avoid log(0)."""
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop, window=window, return_complex=True)
    return spec.abs().clamp_min(1e-7)


def multi_resolution_stft_loss(estimate: torch.Tensor, target: torch.Tensor,
                               sizes=STFT_SIZES) -> torch.Tensor:
    """Spectral convergence + log-magnitude L1, averaged over STFT resolutions (Yamamoto et al. 2020)."""
    est, ref = estimate.reshape(-1, estimate.shape[-1]), target.reshape(-1, target.shape[-1])
    total = est.new_zeros(())
    for n_fft, hop in sizes:
        e, r = stft_magnitude(est, n_fft, hop), stft_magnitude(ref, n_fft, hop)
        convergence = torch.linalg.norm(r - e) / torch.linalg.norm(r).clamp_min(1e-7)
        log_mag = F.l1_loss(e.log(), r.log())
        total = total + convergence + log_mag
    return total / len(sizes)


def negative_si_sdr(estimate: torch.Tensor, target: torch.Tensor, eps: float = 1e-8,
                    max_db: float | None = None) -> torch.Tensor:
    """Minus the mean scale-invariant SDR in dB of (batch, ..., frames) signals (Le Roux et al. 2019).

    `max_db` soft-caps each item's SDR (Wisdom et al. 2020: the noise power gets
    10**(-max_db/10) of the signal power added): without it an item the network already
    gets nearly right (an identity pair, say) has a gradient that grows without bound as
    its error shrinks, and such items swamp the rest of the batch.
    """
    est, ref = estimate.reshape(-1, estimate.shape[-1]), target.reshape(-1, target.shape[-1])
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    scale = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    projection = scale * ref
    noise = est - projection
    signal = projection.pow(2).sum(-1)
    floor = signal * 10.0 ** (-max_db / 10.0) if max_db is not None else 0.0
    ratio = signal / (noise.pow(2).sum(-1) + floor + eps)
    return -(10 * torch.log10(ratio + eps)).mean()
