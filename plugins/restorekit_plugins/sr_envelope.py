"""`srenvelope`: the level of the band above a cutoff, predicted frame by frame from the band below it.

sr.flow's network generates the missing band's texture and phase; how loud each part of
that band should be is the harder guess, and the one log-spectral distance punishes most.
This small model makes it: per STFT frame (sr.flow's STFT: 44.1 kHz, n_fft 1024, hop 512)
it reads the levels of fixed 1/6-octave bands below the cutoff, relative to the octave just
below the cutoff, and (`edge_points`) a finer view of the two octaves just below the cutoff,
over up to 0.9 s of context, and predicts the level of every band above (`EnvelopeTCN`: a
dilated 1-D convolution stack). sr.flow's envelope match then scales its
generated band to the prediction (`envelope: srenvelope`, the default). Trained with
`restorekit train srenvelope` on the same pairs as srflow (docs/models.md).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from restorekit.training.spec import ModelSpec
from restorekit_plugins import WEIGHTS_DIR
from restorekit_plugins.sr import EDGE_FRAMES, N_FFT, SAMPLE_RATE, TeachingHparams, stft, taught_bins

if TYPE_CHECKING:  # pragma: no cover
    import torch

SHIPPED = "srenvelope"
LEVEL_SCALE_DB = 20.0  # network units: 1 = 20 dB
LOWEST_EDGE_HZ = 500.0  # 1/6-octave bands from here up; below it two bands, 0-250 and 250-500 Hz
BANDS_PER_OCTAVE = 6
FLOOR = 1e-20  # added to powers before the logarithm
REF_CENTER_DB = 20.0  # the reference octave's level (unnormalized STFT power, dB) a network input of 0 stands for
EDGE_POINTS_PER_OCTAVE = 24  # the optional fine view of the spectrum just below the cutoff (`edge_points`)


def band_edges_hz(rate: int = SAMPLE_RATE) -> list[float]:
    """Edges of the fixed bands: 0, 250, 500, then 1/6 octave apart, the last band ending at Nyquist."""
    nyquist = rate / 2
    k = math.floor(BANDS_PER_OCTAVE * math.log2(nyquist / LOWEST_EDGE_HZ) - 1e-9)
    return [0.0, 250.0, *(LOWEST_EDGE_HZ * 2 ** (i / BANDS_PER_OCTAVE) for i in range(k + 1)), nyquist]


BANDS = len(band_edges_hz()) - 1
INPUTS = 3 * BANDS + 2  # without the fine view below the cutoff (`edge_points` more with it)


class Layout:
    """The fixed bands on sr.flow's STFT bins: averaging matrix, edges and centres (on a device)."""

    def __init__(self, device="cpu") -> None:
        import torch

        edges = torch.tensor(band_edges_hz(), dtype=torch.float64, device=device)
        freqs = torch.arange(N_FFT // 2 + 1, dtype=torch.float64, device=device) * (SAMPLE_RATE / N_FFT)
        idx = (torch.bucketize(freqs, edges, right=True) - 1).clamp(0, BANDS - 1)
        onehot = torch.nn.functional.one_hot(idx, BANDS).to(torch.float64)
        self.avg = onehot / onehot.sum(0).clamp_min(1)  # (bins, bands)
        self.lo, self.hi = edges[:-1], edges[1:]
        self.centers = torch.where(self.lo > 0, torch.sqrt(self.lo * self.hi), self.hi / 2)
        self.freqs = freqs

    def features(self, power: torch.Tensor, first: torch.Tensor,
                 edge_points: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(network input (N, INPUTS + edge_points, T), reference level in dB (N, T), known bands (N, BANDS)).

        power: (N, bins, T) STFT power; first: (N,) the first missing bin of each item. A band is
        known when it ends at or below the cutoff. Inputs: each known band's level in dB relative
        to the reference (the mean power of the octave below the cutoff in each frame) and its
        flatness (geometric over arithmetic mean of its bins' power, dB: tonal or noise-like),
        zero for the others; which bands are known; the reference's level; the cutoff; and, with
        `edge_points`, the fine view below the cutoff (`edge_levels`).
        """
        import torch

        n, _, t = power.shape
        power = power.double()
        cutoff = first.double() * (SAMPLE_RATE / N_FFT)
        known = (self.hi[None] <= cutoff[:, None] + 1e-6)  # (N, BANDS)
        k = torch.arange(power.shape[1], device=power.device)
        octave = ((k[None] >= (first[:, None] // 2).clamp_min(1)) & (k[None] < first[:, None])).double()  # (N, bins)
        ref_db = 10 * torch.log10((power * octave[:, :, None]).sum(1) / octave.sum(1, keepdim=True).clamp_min(1)
                                  + FLOOR)  # (N, T)
        band_db = 10 * torch.log10(torch.einsum("nft,fb->nbt", power, self.avg) + FLOOR)
        level = ((band_db - ref_db[:, None]).clamp(-100, 40) / LEVEL_SCALE_DB) * known[:, :, None]
        geometric_db = torch.einsum("nft,fb->nbt", 10 * torch.log10(power + FLOOR), self.avg)
        flatness = ((geometric_db - band_db).clamp(-40, 0) / LEVEL_SCALE_DB) * known[:, :, None]  # 0: flat, noise-like
        loudness = ((ref_db - REF_CENTER_DB) / LEVEL_SCALE_DB).clamp(-3, 3)[:, None]  # frame by frame: chunks agree
        where = (torch.log2(cutoff / 1000.0) / 4)[:, None, None].expand(n, 1, t)
        parts = [level, flatness, known[:, :, None].double().expand(n, BANDS, t), loudness, where]
        if edge_points:
            parts.append(self.edge_levels(power, first, ref_db, edge_points))
        return torch.cat(parts, dim=1).float(), ref_db, known

    def edge_levels(self, power: torch.Tensor, first: torch.Tensor, ref_db: torch.Tensor,
                    points: int) -> torch.Tensor:
        """(N, points, T): the level, relative to the reference, at `points` frequencies below the cutoff,
        1/24 octave apart going down from it (each the mean power of the bins within 1/48 octave of
        it, or of the nearest bin): where the fixed 1/6-octave bands see the spectrum at a fixed
        place and coarsely, this sees how it behaves as it approaches the cutoff, at any cutoff."""
        import torch

        bins = power.shape[1]
        k = torch.arange(1, points + 1, dtype=torch.float64, device=power.device)
        centre = first.double()[:, None] * 2 ** (-k / EDGE_POINTS_PER_OCTAVE)  # (N, points), in bins
        half = 2 ** (1 / (2 * EDGE_POINTS_PER_OCTAVE))
        f = torch.arange(bins, dtype=torch.float64, device=power.device)
        near = (f >= centre[..., None] / half) & (f < centre[..., None] * half)  # (N, points, bins)
        nearest = torch.nn.functional.one_hot(centre.round().long().clamp(0, bins - 1), bins).bool()
        w = torch.where(near.any(-1, keepdim=True), near, nearest).double()
        w = w / w.sum(-1, keepdim=True)
        db = 10 * torch.log10(torch.einsum("nft,npf->npt", power, w) + FLOOR) - ref_db[:, None]
        return db.clamp(-100, 40) / LEVEL_SCALE_DB

    def interpolation(self, first: int, top: int) -> torch.Tensor:
        """(BANDS, top - first): each bin from `first` to `top` as a blend of the two nearest band centres in
        log frequency (held beyond the outer centres)."""
        import torch

        x = torch.log2(self.centers)
        f = torch.log2(self.freqs[first:top].clamp_min(1.0))
        j = (torch.bucketize(f, x) - 1).clamp(0, BANDS - 2)
        w = ((f - x[j]) / (x[j + 1] - x[j])).clamp(0, 1)
        m = torch.zeros(BANDS, len(f), dtype=torch.float64, device=f.device)
        cols = torch.arange(len(f), device=f.device)
        m[j, cols] = 1 - w
        m[j + 1, cols] += w
        return m


class EnvelopeHparams(TeachingHparams):
    channels: int = Field(128, ge=4, le=512, description="Channels of the convolution stack.")
    dilations: tuple[int, ...] = Field((1, 2, 4, 8, 16, 1, 2, 4), min_length=1, max_length=12,
                                       description="Dilation of each residual block's 3-tap convolution (frames); "
                                                   "the sum (by default 38 frames each side, 0.44 s; the shipped model's 78, "
                                                   "0.9 s) must stay within sr.flow's "
                                                   "context_s for chunked output to equal whole-file output.")
    huber_db: float = Field(40.0, gt=0, description="The loss is quadratic in the level error below this many dB, "
                                                    "linear above: 40 is nearly the squared error LSD weighs; 10 (the "
                                                    "first phase) is robust to targets with dropouts.")
    edge_points: int = Field(0, ge=0, le=96, description="Also read the level at this many points below the "
                                                          "cutoff, 1/24 octave apart (0: only the fixed bands).")
    quiet_db: float = Field(60.0, gt=0, description="Training: frames whose reference octave is this far below the "
                                                    "segment's loudest frame teach nothing.")


class EnvelopeSpec(ModelSpec):
    name = "srenvelope"
    architecture = "envelope_tcn"
    summary = "Level of each 1/6-octave band above a cutoff, per STFT frame, predicted from the bands below it."
    Hparams = EnvelopeHparams
    tiny: ClassVar[dict] = {"channels": 4, "dilations": (1, 2)}
    sample_rate = SAMPLE_RATE
    default_degrade = "sr-lowpass"
    default_lr = 1e-3
    shipped_dirs = (WEIGHTS_DIR,)

    def build(self, hparams):
        from restorekit_plugins.nets.envelope_tcn import EnvelopeTCN

        return EnvelopeTCN(INPUTS + hparams.edge_points, BANDS, hparams.channels, tuple(hparams.dilations))

    def make_batch(self, degraded, clean):
        """inputs (B, INPUTS + edge_points, T): the degraded input's features; targets (B, 2 * BANDS, T): the clean
        levels relative to the input's reference octave, and the loss weight (bands not known, inside the
        clean segment's own band, frames not at the segment's edges and not near-silent)."""
        import torch

        layout = Layout()
        missing, weight = taught_bins(degraded[:, 0], clean[:, 0], self.hparams)
        bins = missing.shape[1]
        first = torch.where(missing.any(-1), missing.argmax(-1), torch.full((len(missing),), bins))
        d, c = stft(degraded[:, 0]), stft(clean[:, 0])
        x, ref_db, known = layout.features(d.abs().square(), first.clamp_min(2), self.hparams.edge_points)
        clean_db = 10 * torch.log10(torch.einsum("nft,fb->nbt", c.abs().square().double(), layout.avg) + FLOOR)
        target = ((clean_db - ref_db[:, None]).clamp(-100, 40) / LEVEL_SCALE_DB).float()
        edge_hz = (weight * torch.arange(bins)).amax(-1).double() * (SAMPLE_RATE / N_FFT)  # last taught bin
        taught = ~known & (layout.lo[None] < edge_hz[:, None]) & (first < bins)[:, None]  # (B, BANDS)
        loud = ref_db > ref_db.amax(-1, keepdim=True) - self.hparams.quiet_db  # (B, T)
        loud[:, :EDGE_FRAMES] = False
        loud[:, -EDGE_FRAMES:] = False
        w = (taught[:, :, None] & loud[:, None]).float()
        return x, torch.cat([target, w], 1)

    def loss(self, model, inputs, targets):
        import torch

        target, weight = targets[:, :BANDS], targets[:, BANDS:]
        pred = model(inputs)
        delta = self.hparams.huber_db / LEVEL_SCALE_DB
        err = torch.nn.functional.huber_loss(pred, target, reduction="none", delta=delta) / delta
        total = (err * weight).sum() / weight.sum().clamp_min(1.0)
        mae_db = ((pred - target).abs() * weight).sum() / weight.sum().clamp_min(1.0) * LEVEL_SCALE_DB
        return total, {"mae_db": mae_db.item()}


class LearnedEnvelope:
    """Per-bin power (N, T, top - first) of the band from `first` to `top` for sr.flow's envelope match."""

    def __init__(self, model, hparams: EnvelopeHparams, first: int, top: int, device) -> None:
        self.model = model  # an EnvelopeTCN and its hyper-parameters: `EnvelopeSpec().load_with_hparams(name)`
        self.edge_points = hparams.edge_points
        self.layout = Layout(device)
        self.first, self.top = first, top
        self.spread = self.layout.interpolation(first, top)

    def __call__(self, power: torch.Tensor) -> torch.Tensor:
        """power: (N, bins, T) of the input -> (N, T, top - first) float64."""
        import torch

        first = torch.full((power.shape[0],), self.first, device=power.device)
        x, ref_db, known = self.layout.features(power, first, self.edge_points)
        with torch.no_grad():
            pred = self.model(x.to(next(self.model.parameters()).dtype)).double() * LEVEL_SCALE_DB
        have = x[:, :BANDS].double() * LEVEL_SCALE_DB
        level = torch.where(known[:, :, None], have, pred) + ref_db[:, None]  # (N, BANDS, T) dB
        return torch.pow(10.0, torch.einsum("nbt,bf->ntf", level, self.spread) / 10)
