"""`sr.flow`: generative super-resolution by a few-step flow on the compressed STFT (issue 12).

The model (`srflow`, nets/flow_unet2d.py) works at 44.1 kHz on an STFT (n_fft 1024, hop
512, square-root Hann) whose values are compressed, c = |X/S|^0.3 * X/|X|, with the real
and imaginary parts of c as channels. The flow starts from the input's own spectrum with
noise only in the band to generate (a bridge from the degraded spectrum, not from pure
noise) and moves, in `steps` Euler (or Heun) steps, towards the clean spectrum the network
predicts. Only the frequency region from a margin below the cutoff to the top is computed.
After generation the input's bins below the cutoff are put back (the band the input has is
untouched; only the difference above the cutoff is added). docs/models.md explains each
choice and gives the measured effect; docs/stages/sr.md how to use the stage.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from restorekit.hookspecs import hookimpl
from restorekit.stage import Accepts, Stage, StageParams
from restorekit.training.spec import TINY, Hparams, ModelSpec
from restorekit_plugins import WEIGHTS_DIR
from restorekit_plugins._band_limit import DetectionParams, Finding, find_extension

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger("restorekit")

SHIPPED = "srflow"
SAMPLE_RATE = 44100
N_FFT = 1024
HOP = 512
ALPHA = 0.3  # magnitude compression exponent
SCALE = 1.0  # STFT values are divided by this before compression
RAMP_BINS = 4  # the generated band fades in over this many bins above the cutoff
TOP_FADE_HZ = 500.0  # and out over this many Hz below max_hz
AUTO_FLOW_FROM_HZ = 14500.0  # detail 'auto': noise below this cutoff, the flow from it up (docs/models.md)
FLOW_ONLY = frozenset({"steps", "solver"})  # parameters only the flow uses
MIN_WIDTH = 0.03  # a cutoff within this fraction of max_hz leaves nothing to generate (bwe.harmonic: 0.06)
NOISE_BLOCK = 64  # frames per block of the positional prior noise
TOP_FRACTION = 0.98
EDGE_FRAMES = 2  # training: frames at each end of a segment that see its cut edge


# -- the spectral representation ---------------------------------------------------------
def _window(device) -> torch.Tensor:
    import torch

    return torch.hann_window(N_FFT, periodic=True, device=device).sqrt()


def stft(x: torch.Tensor) -> torch.Tensor:
    """Complex STFT (..., bins, frames) of (..., samples); frame j is centred on sample j * HOP."""
    import torch

    shape = x.shape
    spec = torch.stft(x.reshape(-1, shape[-1]).float(), N_FFT, HOP, window=_window(x.device), center=True,
                      return_complex=True)
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def istft(spec: torch.Tensor, length: int) -> torch.Tensor:
    import torch

    shape = spec.shape
    x = torch.istft(spec.reshape(-1, *shape[-2:]), N_FFT, HOP, window=_window(spec.device), center=True,
                    length=length)
    return x.reshape(*shape[:-2], length)


def compress(spec: torch.Tensor) -> torch.Tensor:
    """(..., F, T) complex -> (..., 2, F, T) real: real and imaginary part of |X/S|^a * X/|X|."""
    import torch

    mag = spec.abs().clamp_min(1e-8)
    c = spec * ((mag / SCALE) ** ALPHA / mag)
    return torch.stack([c.real, c.imag], dim=-3)


def decompress(c: torch.Tensor) -> torch.Tensor:
    """The inverse of `compress`: (..., 2, F, T) -> complex (..., F, T)."""
    import torch

    z = torch.complex(c[..., 0, :, :].float(), c[..., 1, :, :].float())
    mag = z.abs().clamp_min(1e-8)
    return z * (SCALE * mag ** (1 / ALPHA) / mag)


def _analysis_power(x: torch.Tensor) -> torch.Tensor:
    """Long-term power per bin of (B, samples), for finding what is missing: a Kaiser window (beta 12, side
    lobes near -90 dB; the square-root Hann window of the model leaks strong low bins into an empty high band
    at about -100 dB below them), without the frames at the segment's cut edges (broadband)."""
    import torch

    window = torch.kaiser_window(N_FFT, periodic=True, beta=12.0, device=x.device)
    spec = torch.stft(x.float(), N_FFT, HOP, window=window, center=True, return_complex=True)
    return spec[..., EDGE_FRAMES:-EDGE_FRAMES].abs().square().mean(-1)


def cutoff_bin(cutoff_hz: float, sample_rate: int = SAMPLE_RATE) -> int:
    """The first bin of the band to generate."""
    return max(1, min(N_FFT // 2, math.ceil(cutoff_hz / (sample_rate / N_FFT))))


def crop_region(first_missing_bin: int, multiple: int, margin: float) -> tuple[int, int]:
    """(first bin computed, zero bins padded above the top): the region from a margin below the cutoff
    to the top, `multiple` bins high; the margin is `margin` of the cutoff frequency, at least 16 bins."""
    bins = N_FFT // 2 + 1
    lo = max(0, first_missing_bin - max(16, int(margin * first_missing_bin)))
    height = -(-(bins - lo) // multiple) * multiple
    lo = bins - height
    if lo >= 0:
        return lo, 0
    return 0, -lo


def network_inputs(state: torch.Tensor, cond: torch.Tensor, missing: torch.Tensor, lo: int) -> torch.Tensor:
    """(B, 6, F, T): state (2), condition (2), mask of the band to generate (1), bin frequency 0..1 (1)."""
    import torch

    b, _, f, t = state.shape
    freq = (torch.arange(lo, lo + f, device=state.device, dtype=state.dtype) / (N_FFT // 2))
    inputs = torch.cat([state, cond, missing.to(state.dtype), freq[None, None, :, None].expand(b, 1, f, t)], dim=1)
    return inputs.contiguous(memory_format=torch.channels_last)  # as the network is loaded (FlowSpec)


def _pad_frames(x: torch.Tensor, multiple: int) -> torch.Tensor:
    import torch.nn.functional as F

    extra = -x.shape[-1] % multiple
    return F.pad(x, (0, extra)) if extra else x


def _pad_bins(x: torch.Tensor, top: int) -> torch.Tensor:
    import torch.nn.functional as F

    return F.pad(x, (0, 0, 0, top)) if top else x


def sample_flow(model, cond: torch.Tensor, missing: torch.Tensor, noise: torch.Tensor, lo: int, steps: int,
                solver: str = "euler", prior_std: float = 0.2) -> torch.Tensor:
    """Integrate the flow from the prior (the condition, plus noise where `missing`) to t = 1.

    cond, noise: (B, 2, F, T); missing: (B, 1, F, T) in {0, 1}. The network predicts the
    clean spectrum x1 from (x_t, t); the velocity is (x1 - x_t) / (1 - t). Outside the
    missing band the state stays the condition. Returns the estimate of x1.
    """
    import torch

    keep = 1 - missing
    x = cond * keep + prior_std * noise * missing
    times = torch.linspace(0, 1, steps + 1).tolist()

    def predict(state, t):
        tt = torch.full((state.shape[0],), t, device=state.device, dtype=state.dtype)
        out = model(network_inputs(state, cond, missing, lo), tt)
        return cond * keep + out.to(state.dtype) * missing

    for i in range(steps):
        t0, t1 = times[i], times[i + 1]
        x1 = predict(x, t0)
        if i == steps - 1:
            return x1
        v0 = (x1 - x) / (1 - t0)
        nxt = x + (t1 - t0) * v0
        if solver == "heun":
            v1 = (predict(nxt, t1) - nxt) / (1 - t1)
            nxt = x + (t1 - t0) * 0.5 * (v0 + v1)
        x = nxt
    return x


# -- the model family ---------------------------------------------------------------------
class FlowNetHparams(Hparams):
    """The network and the flow's loss: shared by every model family built on `flow_unet2d` (srflow, inpaintflow)."""

    channels: int = Field(16, ge=2, le=128, description="Channels of the first level.")
    depth: int = Field(4, ge=1, le=6, description="Number of down-sampling levels (each halves frequency and time).")
    max_channels: int = Field(256, ge=4, le=1024, description="Channel cap of the deeper levels.")
    prior_std: float = Field(0.2, gt=0, le=10, description="Standard deviation of the prior noise in the region to "
                                                           "generate, in compressed-spectrum units.")
    mag_weight: float = Field(3.0, ge=0, description="Weight of the log-magnitude L1 loss on the estimate of x1.")
    t0_fraction: float = Field(0.3, ge=0, le=1, description="Share of training items drawn at t = 0 (the one-step "
                                                            "estimate); the rest uniform in [0, 1).")
    mse_at_t0: bool = Field(False, description="Apply the MSE to the one-step (t = 0) estimates too; false: only "
                                              "the log-magnitude loss there, so one step gives a sample with the "
                                              "right level instead of the (darker) conditional mean.")


class TeachingHparams(Hparams):
    """Which bins of a (degraded, clean) training pair teach the missing band (srflow, srenvelope)."""

    missing_db: float = Field(-10.0, le=-3, description="Training: a bin is missing when the degraded input's power "
                                                        "is this far below the target's.")
    edge_drop_db: float = Field(25.0, ge=6, description="Training: a cliff of this many dB in the target's spectrum "
                                                         "ends its band (a lossy source); nothing above it is taught.")
    silent_db: float = Field(-90.0, le=-20, description="Training: bins of the target this far below its 1-4 kHz "
                                                        "level count as silent, not as content the input kept.")


class FlowHparams(FlowNetHparams, TeachingHparams):
    margin: float = Field(0.25, ge=0, le=1, description="Region computed below the cutoff, as a fraction of the "
                                                        "cutoff frequency (at least 16 bins).")


class FlowSpec(ModelSpec):
    name = "srflow"
    architecture = "flow_unet2d"
    summary = "Super-resolution flow: 2-D U-Net on the compressed STFT, bridge from the input's spectrum."
    Hparams = FlowHparams
    tiny: ClassVar[dict] = {"channels": 2, "depth": 4, "max_channels": 4}  # the shipped depth: the same chunk grid
    sample_rate = SAMPLE_RATE
    default_degrade = "sr-lowpass"
    shipped_dirs = (WEIGHTS_DIR,)
    # on the CPU the convolutions then go to oneDNN instead of the unfolding fallback: one pass over a 6 s
    # piece at a 4 kHz cutoff 0.26 -> 0.19 s and 130 -> 48 MB of peak memory, the same values within 2e-6
    channels_last = True

    def build(self, hparams):
        from restorekit_plugins.nets.flow_unet2d import FlowUNet2d

        return FlowUNet2d(hparams.channels, hparams.depth, hparams.max_channels)

    def randomize_tiny(self, model):
        import torch

        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.05)

    def make_batch(self, degraded, clean):
        """inputs (B, 3, F, T): the degraded compressed spectrum and the mask of missing bins; targets
        (B, 3, F, T): the clean compressed spectrum and the loss weight (missing and inside the clean band)."""
        import torch

        d, c = stft(degraded[:, 0]), stft(clean[:, 0])
        missing, weight = taught_bins(degraded[:, 0], clean[:, 0], self.hparams)
        t = d.shape[-1]
        m = missing[:, None, :, None].expand(-1, 1, -1, t)
        w = weight[:, None, :, None].expand(-1, 1, -1, t).clone()
        w[..., :EDGE_FRAMES] = 0
        w[..., -EDGE_FRAMES:] = 0
        return torch.cat([compress(d), m], 1), torch.cat([compress(c), w], 1)

    def loss(self, model, inputs, targets):
        hp = self.hparams
        missing, weight = inputs[:, 2:3], targets[:, 2:3]
        per_item = missing[:, 0, :, 0]  # (B, F): the first missing bin of the items that miss something
        has = per_item.any(-1)
        first = int(per_item[has].argmax(-1).clamp_min(1).min()) if bool(has.any()) else N_FFT // 2
        lo, top = crop_region(first, model.multiple, hp.margin)

        def region(x):
            return _pad_frames(_pad_bins(x[:, :, lo:], top), model.multiple)

        missing, weight = region(missing), region(weight)
        cond, x1 = region(inputs[:, :2]) * (1 - missing), region(targets[:, :2])
        return flow_matching_loss(model, hp, cond, x1, missing, weight, lo)


def band_end_bin(x, edge_drop_db: float) -> int:
    """The last bin of a clean segment's own band: below a cliff (a lossy source's low-pass), else the top."""
    from restorekit_plugins._band_limit import analyze_spectrum, find_cutoff

    found = find_cutoff(analyze_spectrum(x[None], SAMPLE_RATE), edge_drop_db, floor_drop_db=None)
    return N_FFT // 2 if found.cutoff_hz is None else int(found.cutoff_hz / (SAMPLE_RATE / N_FFT))


def taught_bins(degraded: torch.Tensor, clean: torch.Tensor, hp: TeachingHparams) -> tuple[torch.Tensor, torch.Tensor]:
    """(missing, weight), each (B, bins) in {0, 1}, of (B, samples) segments at 44.1 kHz: missing = every bin
    above the last one the degraded input kept; weight = missing and inside the clean segment's own band."""
    import torch

    pd, pc = _analysis_power(degraded), _analysis_power(clean)  # (B, F) long-term power
    smooth = torch.nn.functional.avg_pool1d(pc[:, None], 5, 1, 2, count_include_pad=False)[:, 0]
    bins = pc.shape[1]
    freqs = torch.arange(bins) * (SAMPLE_RATE / N_FFT)
    ref = pc[:, (freqs >= 1000) & (freqs < 4000)].mean(-1, keepdim=True).clamp_min(1e-12)
    edge = torch.tensor([band_end_bin(x, hp.edge_drop_db) for x in clean])
    ratio_db = 10 * torch.log10((pd + 1e-12) / (pc + 1e-12))
    informative = smooth > ref * 10 ** (hp.silent_db / 10)
    k = torch.arange(bins)
    present = (ratio_db > hp.missing_db) & informative & (k[None] <= edge[:, None])  # above the edge: no content
    last = torch.where(present.any(-1), bins - 1 - present.flip(-1).int().argmax(-1), torch.zeros(len(pc)).long())
    missing = (k[None] > last[:, None]).float()  # (B, F)
    return missing, missing * (k[None] <= edge[:, None]).float()


def flow_matching_loss(model, hp: FlowNetHparams, cond: torch.Tensor, x1: torch.Tensor, missing: torch.Tensor,
                       weight: torch.Tensor, lo: int) -> tuple[torch.Tensor, dict]:
    """The loss of one batch of the bridge flow, shared by srflow and inpaintflow.

    cond, x1: (B, 2, F, T) compressed spectra of the input and the target; missing: (B, 1, F, T)
    the region to generate (the prior there is noise, elsewhere the condition); weight: (B, 1, F,
    T) where the loss counts; lo: the first bin of the region. Training draws t uniformly, or 0 for
    a share `t0_fraction`; evaluation uses fixed t and noise. MSE on the network's estimate of x1
    (not at t = 0 unless `mse_at_t0`) plus `mag_weight` times the L1 of the log magnitudes.
    """
    import torch

    b = len(cond)
    gen = None if model.training else torch.Generator(device=cond.device).manual_seed(0)
    noise = torch.randn(cond.shape, generator=gen, device=cond.device)
    if model.training:
        t = torch.rand(b, device=cond.device)
        t = torch.where(torch.rand(b, device=cond.device) < hp.t0_fraction, torch.zeros_like(t), t)
    else:
        t = torch.linspace(0, 0.9, b, device=cond.device)
    keep = 1 - missing
    x0 = cond * keep + hp.prior_std * noise * missing
    x1 = cond * keep + x1 * missing
    tt = t[:, None, None, None]
    xt = (1 - tt) * x0 + tt * x1
    pred = model(network_inputs(xt, cond, missing, lo), t)
    total_w = weight.sum().clamp_min(1.0)
    if not hp.mse_at_t0:  # at t = 0 the MSE's optimum is the conditional mean, which loses the level of
        weight_mse = weight * (t > 0)[:, None, None, None].to(weight.dtype)  # unpredictable detail
    else:
        weight_mse = weight
    mse = ((pred - x1).square() * weight_mse).sum() / (2 * weight_mse.sum().clamp_min(1.0))
    eps = 1e-2  # compressed units: a linear magnitude of 2e-7 (-134 dB), below anything audible
    mag = lambda z: (z.square().sum(1, keepdim=True) + eps ** 2).sqrt().log()  # noqa: E731
    mag_l1 = ((mag(pred) - mag(x1)).abs() * weight).sum() / total_w
    total = mse + hp.mag_weight * mag_l1
    return total, {"mse": mse.item(), "log_mag": mag_l1.item()}


def load_flow(checkpoint: str, device: str):
    """(network, its hyper-parameters, its sample rate) for a checkpoint name/path or `tiny`."""
    model, hparams, config = FlowSpec().load_with_hparams(checkpoint, device)
    return model, hparams, int(config.get("sample_rate", SAMPLE_RATE))


class FlowSamplingParams(StageParams):
    """How a flow stage samples: solver, noise seed, arithmetic (sr.flow and inpaint.flow)."""

    solver: Literal["euler", "heun"] = Field("euler", description="ODE solver of the flow.")
    seed: int | None = Field(None, ge=0, description="Seed of the prior noise; empty: the run's seed.")
    precision: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Arithmetic of the network: auto = float16 on CUDA, float32 on the CPU.")


ENVELOPE_FIT_BANDS = 6  # log-spaced bands of the top octave below the cutoff, for the envelope's fit
ENVELOPE_BANDS_PER_OCTAVE = 6  # bands of the generated band whose level is matched
MAX_CUT_DB = 80.0  # the envelope match may take a band down this far


class LineEnvelope:
    """The level above the cutoff extrapolated from the octave below it (bwe.harmonic's rule).

    Per STFT frame the power of the octave below the cutoff is fitted in log-spaced bands by a
    line in dB over octaves, its slope kept between -`max_rolloff` and -`min_rolloff` dB per
    octave, and the line is extended to the bins from `first` to `top`.
    """

    def __init__(self, first: int, top: int, rate: int, min_rolloff: float, max_rolloff: float, device) -> None:
        import torch

        from restorekit_plugins.bwe import _band_matrix

        bin_hz = rate / N_FFT
        freqs = torch.arange(N_FFT // 2 + 1, dtype=torch.float64, device=device) * bin_hz
        cutoff = first * bin_hz
        self.first, self.low = first, max(1, first // 2)
        self.fit_avg, centers = _band_matrix(freqs[self.low:first], cutoff / 2, cutoff, ENVELOPE_FIT_BANDS)
        xs = torch.log2(centers / cutoff)
        self.fit_x, self.fit_xmean = xs - xs.mean(), float(xs.mean())
        self.fit_xvar = max(float((self.fit_x ** 2).sum()), 1e-12)
        self.up_octaves = torch.log2(freqs[first:top] / cutoff)
        self.min_rolloff, self.max_rolloff = min_rolloff, max_rolloff

    def __call__(self, power: torch.Tensor) -> torch.Tensor:
        """power: (N, bins, T) of the input -> (N, T, top - first) float64."""
        import torch

        level = 10 * torch.log10(power[:, self.low:self.first].double().transpose(1, 2) @ self.fit_avg + 1e-20)
        mean = level.mean(dim=-1, keepdim=True)
        slope = (((level - mean) @ self.fit_x[:, None]) / self.fit_xvar).clamp(-self.max_rolloff, -self.min_rolloff)
        return torch.pow(10.0, (mean - slope * self.fit_xmean + slope * self.up_octaves) / 10)


class EnvelopeMatch:
    """Each frame's generated band brought to an envelope's level, band by band.

    `envelope` gives the wanted per-bin power above the cutoff from the input's STFT power
    (`LineEnvelope`, or sr_envelope.LearnedEnvelope: a small network's per-frame prediction).
    Each 1/6-octave band of the generated spectrum is scaled to it, moved by `offset_db`, up by
    at most `max_boost_db`, down by at most `max_cut_db` (infinite limits for noise, whose own
    level means nothing). The network keeps the fine structure and phase; the level follows the music.
    """

    def __init__(self, first: int, top: int, rate: int, max_boost_db: float, envelope, device,
                 offset_db: float = 0.0, max_cut_db: float = MAX_CUT_DB) -> None:
        import torch

        from restorekit_plugins.bwe import _band_matrix

        self.first, self.top, self.max_boost_db, self.envelope = first, top, max_boost_db, envelope
        self.offset_db, self.max_cut_db = offset_db, max_cut_db
        if top <= first:  # nothing to match
            return
        bin_hz = rate / N_FFT
        up = torch.arange(first, top, dtype=torch.float64, device=device) * bin_hz
        cutoff = first * bin_hz
        n_bands = max(1, math.ceil(math.log2(up[-1] / cutoff) * ENVELOPE_BANDS_PER_OCTAVE))
        self.band_avg, _ = _band_matrix(up, cutoff, float(up[-1]) * (1 + 1e-9), n_bands)
        self.band_back = (self.band_avg > 0).to(torch.float64).T.contiguous()

    def __call__(self, spec: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """`generated` (N, bins, T) complex with its bins first..top rescaled, from the input's `spec` (N, bins, T)."""
        import torch

        if self.top <= self.first:
            return generated
        env = self.envelope(spec.real.square() + spec.imag.square())  # (N, T, F up)
        band = generated[:, self.first:self.top]
        have = (band.real.square() + band.imag.square()).double().transpose(1, 2) @ self.band_avg
        want = env @ self.band_avg
        gain_db = (10 * torch.log10((want + 1e-30) / (have + 1e-30)) + self.offset_db).clamp(-self.max_cut_db,
                                                                                             self.max_boost_db)
        gain = torch.pow(10.0, (gain_db @ self.band_back) / 20).transpose(1, 2).to(generated.real.dtype)
        out = generated.clone()
        out[:, self.first:self.top] *= gain
        return out


def positional_noise(seed: int, first_frame: int, frames: int, device, stream: int = 0) -> torch.Tensor:
    """(2, bins, frames) standard normal noise that depends only on the seed, the stream (another
    independent draw for the same seed) and the absolute frame index, so overlapping chunks draw the
    same noise where they overlap."""
    import numpy as np
    import torch

    bins = N_FFT // 2 + 1
    b0, b1 = first_frame // NOISE_BLOCK, (first_frame + frames - 1) // NOISE_BLOCK
    blocks = []
    for b in range(b0, b1 + 1):
        if stream == 0:  # (the CPU generator keeps only the low 32 bits of a seed: other streams hash theirs)
            block_seed = (seed * 1_000_003 + b) % (2 ** 63)
        else:
            block_seed = int(np.random.SeedSequence([seed, stream, b % 2 ** 63]).generate_state(1)[0])
        gen = torch.Generator().manual_seed(block_seed)
        blocks.append(torch.randn(2, bins, NOISE_BLOCK, generator=gen))
    noise = torch.cat(blocks, dim=-1)
    start = first_frame - b0 * NOISE_BLOCK
    return noise[..., start:start + frames].to(device)


def band_correlation(spec: torch.Tensor, channels: int, lo_bin: int, hi_bin: int) -> torch.Tensor:
    """(B, T) in [0, 1]: per frame, how alike the channels of (B * channels, bins, T) are in the bins
    lo_bin..hi_bin: the real part of their normalized cross-spectrum over those bins (parametric
    stereo's inter-channel coherence), the mean over channel pairs, negative values as 0, silent
    frames as 1."""
    import torch

    x = spec[:, lo_bin:hi_bin].reshape(-1, channels, hi_bin - lo_bin, spec.shape[-1])
    if channels == 1:
        return torch.ones(x.shape[0], x.shape[-1], device=spec.device)
    power = x.real.square().add(x.imag.square()).sum(2)  # (B, C, T)
    total, pairs = 0.0, 0
    for i in range(channels):
        for j in range(i + 1, channels):
            cross = (x[:, i] * x[:, j].conj()).real.sum(1)
            norm = (power[:, i] * power[:, j]).sqrt()
            silent = norm < 1e-20  # nothing to tell: one shared band
            total = total + torch.where(silent, torch.ones_like(norm), cross / norm.clamp_min(1e-20))
            pairs += 1
    rho = (total / pairs).clamp(0, 1)
    return torch.where(rho > 1 - 1e-6, torch.ones_like(rho), rho)  # identical channels: exactly 1, one band


def channel_noise(common: torch.Tensor, rho: torch.Tensor, seed: int, starts, channels: int) -> torch.Tensor:
    """Noise detail for (B * channels, 2, bins, T) as alike between channels as the input is: per frame,
    sqrt(rho) of the noise all channels share (`common`) and sqrt(1 - rho) of each channel's own
    (positional, stream 1 + channel); `rho` (B, T) from `band_correlation`."""
    import torch

    if channels == 1:
        return common
    frames = common.shape[-1]
    own = torch.stack([positional_noise(seed, s // HOP, frames, common.device, stream=1 + ch)
                       for s in starts for ch in range(channels)])
    r = rho.repeat_interleave(channels, dim=0)[:, None, None, :].to(common.dtype)
    return common * r.sqrt() + own.to(common.dtype) * (1 - r).sqrt()


class FlowSuperResolution(Stage):
    """Super-resolution: finds where the input's band ends and generates the band above it.

    The cutoff is `cutoff_hz` or detected as `bwe.harmonic` detects it (a cliff, a fall onto
    a noise floor, or content reaching the input's own Nyquist frequency when the output
    rate is higher: the 16 kHz edge of 32 kHz text-to-music output). Full-band input is only
    resampled to `sample_rate_hz`. Otherwise the input is resampled to the model's rate
    (44.1 kHz) and the band above the cutoff is generated: its detail is Gaussian noise
    (`detail: noise`) or `steps` steps of the trained flow (`detail: flow`; `auto`, the default:
    noise for a cutoff below 14.5 kHz, the flow for one at or above), its level per 1/6 octave and frame
    the envelope's (`match_envelope_db`, `envelope`). Only that band is added: everything below
    the cutoff stays as the input had it. The model's band ends at 22.05 kHz, so at 48 kHz the
    top 2 kHz stay empty. Deterministic for a `seed`.
    """

    id = "sr.flow"
    summary = ("Super-resolution: generates the band above the input's cutoff at a learned envelope's level, "
               "its detail noise or a trained flow's.")
    accepts = Accepts(devices=frozenset({"cpu", "cuda"}))
    streams = True  # detects in a first pass; resamples into a spill file; the band is generated and added in order
    test_params: ClassVar[dict] = {"checkpoint": TINY, "envelope": TINY}

    class Params(DetectionParams, FlowSamplingParams):
        checkpoint: str = Field(SHIPPED, description="Checkpoint name or path (.safetensors with its .json); "
                                                     "'srflow' = shipped weights, 'tiny' = random test model.")
        sample_rate_hz: Literal[44100, 48000] = Field(44100, description="Sample rate of the output in Hz.")
        cutoff_hz: float | None = Field(
            None, ge=1000, le=22000, description="Where the input's content ends, in Hz; empty: detect it.")
        max_hz: float = Field(20000.0, ge=4000, le=24000, description="Top of the generated band in Hz (it fades out "
                                                                      "over the 500 Hz below); as bwe.harmonic's.")
        steps: int = Field(2, ge=1, le=8, description="Flow steps where the flow runs (`detail`; network "
                                                      "evaluations: Euler one per step, Heun two per step but the "
                                                      "last).")
        detail: Literal["auto", "flow", "noise"] = Field(
            "auto", description="What fills the generated band before the envelope match sets its level: 'flow' = "
                                "the trained flow's output, 'noise' = Gaussian noise (the flow network does not "
                                "run; the envelope match gives it its whole level, without the boost cap), "
                                "'auto' = noise when the input's band ends below 14.5 kHz and the flow when it "
                                "ends at 14.5 kHz or above (or without the envelope match), as measured best "
                                "(docs/models.md).")
        segment_s: float = Field(4.0, ge=0.5, le=120, description="Length of each inference segment in seconds.")
        overlap_s: float = Field(0.5, ge=0, le=10, description="Cross-fade between segments in seconds.")
        context_s: float = Field(1.0, ge=0, le=10, description="Context computed and discarded on each side of a "
                                                               "segment (at 1 s chunked output matches whole-file "
                                                               "output within 2e-6 of the generated band).")
        batch_size: int = Field(1, ge=1, le=64, description="Segments per forward pass.")
        match_envelope_db: float = Field(
            24.0, ge=0, le=60, description="Bring each frame's generated band to the level `envelope` gives it, "
                                          "boosting the flow's band by at most this many dB (cuts are free; noise "
                                          "detail has no cap, only whether this is above 0 matters); 0: the "
                                          "network's own level.")
        envelope: str = Field(
            "srenvelope", min_length=1,
            description="Where the envelope match's levels come from: 'srenvelope' = the shipped predictor (each "
                        "1/6-octave band above the cutoff, per frame, from the bands below), a checkpoint path of "
                        "that family, 'tiny' = random test model, or 'line' = a line in dB over octaves fitted to "
                        "the octave below the cutoff and extended (bwe.harmonic's rule).")
        level_offset_db: float = Field(
            0.0, ge=-24, le=24, description="Added to the envelope's level of every generated band, in dB: "
                                            "a brightness control for the envelope match (0 = the predicted "
                                            "level; the flow's boost cap still applies).")
        min_rolloff_db_per_oct: float = Field(3.0, ge=0, le=96, description="envelope 'line': the extrapolation "
                                                                            "falls at least this fast above the cutoff.")
        max_rolloff_db_per_oct: float = Field(24.0, ge=0, le=96, description="And at most this fast.")

        @model_validator(mode="after")
        def _offset_needs_match(self):
            if self.level_offset_db and self.match_envelope_db == 0:
                raise ValueError("level_offset_db moves the envelope match's level, which match_envelope_db: 0 "
                                 "turns off; set match_envelope_db above 0 or leave level_offset_db at 0")
            return self

        @model_validator(mode="after")
        def _noise_needs_match(self):
            if self.detail != "noise":
                return self
            if self.match_envelope_db == 0:
                raise ValueError("detail: noise has no level of its own, which the envelope match gives it; set "
                                 "match_envelope_db above 0 or set detail: flow")
            flow_only = sorted(FLOW_ONLY & self.model_fields_set)
            if flow_only:
                names, verb = " and ".join(flow_only), "tell" if len(flow_only) > 1 else "tells"
                raise ValueError(f"{names} {verb} the flow how to sample, but detail: noise runs no flow; set "
                                 f"detail: flow or auto, or leave {names} out")
            return self

    def output_spec(self, sample_rate: int, channels: int) -> tuple[int, int]:
        return self.params.sample_rate_hz, channels

    def load(self):
        p = self.params
        self.model, self.hparams, self.model_rate = load_flow(p.checkpoint, self.device)
        self.envelope_model = None
        if p.match_envelope_db > 0 and p.envelope != "line":
            from restorekit_plugins.sr_envelope import EnvelopeSpec

            self.envelope_model, self.envelope_hparams, _ = EnvelopeSpec().load_with_hparams(p.envelope, self.device)

    def _detail(self, cutoff_hz: float) -> str:
        """'flow' or 'noise': what fills the band above this cutoff (`detail`, with 'auto' resolved)."""
        p = self.params
        if p.detail != "auto":
            return p.detail
        return "noise" if p.match_envelope_db > 0 and cutoff_hz < AUTO_FLOW_FROM_HZ else "flow"

    def _level_note(self, detail: str) -> str:
        """Where the generated band's level comes from, for the manifest's note."""
        p = self.params
        if p.match_envelope_db == 0:
            return "the network's own"
        source = "a line from the octave below" if p.envelope == "line" else p.envelope
        offset = f" {p.level_offset_db:+g} dB" if p.level_offset_db else ""
        return f"{source}{offset}" + ("" if detail == "noise" else f", boost at most {p.match_envelope_db:g} dB")

    def find(self, audio) -> Finding:
        """Where the input's band ends and why, or why there is nothing to generate; Audio or a Source."""
        p = self.params
        top = min(p.max_hz, TOP_FRACTION * p.sample_rate_hz / 2, self.model_rate / 2)
        return find_extension(audio, top, p, cutoff_hz=p.cutoff_hz, min_width=MIN_WIDTH)

    def _diagnose(self, audio):
        """The Finding for `audio` (Audio or a Source), noted and logged."""
        p = self.params
        finding = self.find(audio)
        if finding.cutoff_hz is None:
            line = finding.describe(audio.sample_rate, p.sample_rate_hz)
        else:
            detail = self._detail(finding.cutoff_hz)
            action = ("generating (noise detail)" if detail == "noise" else
                      f"generating ({p.steps} {p.solver} step{'s' * (p.steps > 1)})")
            line = finding.describe(audio.sample_rate, p.sample_rate_hz, action=action)
            line += f"; level: {self._level_note(detail)}"
            unused = sorted(FLOW_ONLY & p.model_fields_set)
            if detail == "noise" and unused:
                line += (f" ({' and '.join(unused)} unused: detail auto runs the flow from a "
                         f"{AUTO_FLOW_FROM_HZ / 1000:g} kHz cutoff up; detail: flow to run it here)")
        self.note(line)
        log.info("sr.flow: %s", line)
        return finding

    def process(self, audio):
        import torch

        from restorekit.audio import Audio
        from restorekit.dsp import resample

        p = self.params
        finding = self._diagnose(audio)
        if finding.cutoff_hz is None:
            return resample(audio, p.sample_rate_hz)
        added = self.generate(resample(audio, self.model_rate).samples, finding.cutoff_hz, finding.top_hz)
        # the input goes to the output rate once (untouched at the same rate); only the generated band is
        # resampled from the model's rate and added
        out = resample(audio, p.sample_rate_hz)
        band = resample(Audio(added, self.model_rate), p.sample_rate_hz).samples[:, :out.frames]
        if band.shape[1] < out.frames:  # (no copy of the band otherwise: it is this call's own buffer)
            band = torch.nn.functional.pad(band, (0, out.frames - band.shape[1]))
        return out.with_samples(band.to(out.samples.device).add_(out.samples))

    def stream(self, source, sink):
        """`process` block by block, the same samples: the input goes to the output rate as a stream, the
        generated band (made from a spill of the input at the model's rate) is resampled and added as it comes."""
        import torch

        from restorekit_plugins._blocks import Resampler, resampled

        p, channels = self.params, source.channels
        finding = self._diagnose(source)

        def stream_at(src, rate_out):  # a source's blocks at another rate, as `resample` would give them at once
            back = Resampler(src.sample_rate, rate_out, channels) if src.sample_rate != rate_out else None
            for _, block in src.blocks():
                yield back.push(block) if back else block
            if back:
                yield back.finish()

        if finding.cutoff_hz is None:
            for block in stream_at(source, p.sample_rate_hz):
                sink.write(block)
            return
        main = stream_at(source, p.sample_rate_hz)
        pending = torch.zeros(channels, 0)  # the input at the output rate, waiting for its band

        def add(band):  # the next frames of the band, at the output rate: summed with the input and written
            nonlocal pending
            while pending.shape[1] < band.shape[1]:
                block = next(main, None)
                if block is None:  # past the input's end: the rest of the band is dropped
                    band = band[:, :pending.shape[1]]
                    break
                pending = torch.cat([pending, block], dim=1)
            if band.shape[1]:
                sink.write(band.add_(pending[:, :band.shape[1]]))
                pending = pending[:, band.shape[1]:]

        at_model = resampled(source, self.model_rate)
        back = Resampler(self.model_rate, p.sample_rate_hz, channels) if self.model_rate != p.sample_rate_hz else None
        try:
            self.generate(at_model, finding.cutoff_hz, finding.top_hz,
                          emit=lambda band: add(back.push(band) if back else band))
        finally:
            if at_model is not source:
                at_model.close()
        if back:
            add(back.finish())
        for block in [pending, *main]:  # input the band did not reach (its resampled length fell short)
            sink.write(block)

    def generate(self, samples, cutoff_hz: float, top_hz: float, emit=None) -> torch.Tensor | None:
        """(channels, frames) at the model's rate -> the band from `cutoff_hz` to `top_hz` to add to it.

        `samples` may be a Source (read a piece at a time); with `emit`, the band's frames go there
        in order as they are finished and nothing is returned.

        Every piece the chunk helper hands over starts on a multiple of HOP * model.multiple
        samples (segment, overlap, context and the padded length are multiples of it), so
        overlapping pieces see the same STFT frames at the same place in the U-Net's
        down-sampling grid and draw the same positional noise: they agree where they overlap.
        """
        import torch

        from restorekit.chunking import ChunkPlan, process_in_chunks

        p, model, hp = self.params, self.model, self.hparams
        n = samples.shape[1]
        grid = HOP * model.multiple
        padded = zero_padded(samples, n + (-n % grid))
        first = cutoff_bin(cutoff_hz, self.model_rate)
        lo, top = crop_region(first, model.multiple, hp.margin)
        seed = p.seed if p.seed is not None else self.seed
        detail = self._detail(cutoff_hz)
        plan = ChunkPlan.from_seconds(self.model_rate, p.segment_s, p.overlap_s, context_s=p.context_s,
                                      multiple_of=grid)
        k = torch.arange(N_FFT // 2 + 1)
        fade_out = ((top_hz - k * (self.model_rate / N_FFT)) / TOP_FADE_HZ).clamp(0, 1)
        ramp = ((k - first + 1) / RAMP_BINS).clamp(0, 1) * fade_out
        match = None
        if p.match_envelope_db > 0:
            top_bin = min(N_FFT // 2 + 1, math.ceil(top_hz * N_FFT / self.model_rate) + 1)
            if self.envelope_model is not None:
                from restorekit_plugins.sr_envelope import LearnedEnvelope

                envelope = LearnedEnvelope(self.envelope_model, self.envelope_hparams, first, top_bin, self.device)
            else:
                envelope = LineEnvelope(first, top_bin, self.model_rate, p.min_rolloff_db_per_oct,
                                        p.max_rolloff_db_per_oct, self.device)
            # noise has no level of its own: no limits; the flow's band is boosted by at most match_envelope_db
            boost, cut = (math.inf, math.inf) if detail == "noise" else (p.match_envelope_db, MAX_CUT_DB)
            match = EnvelopeMatch(first, top_bin, self.model_rate, boost, envelope, self.device, p.level_offset_db,
                                  max_cut_db=cut)

        def run(batch, starts):  # (B, C, L) pieces starting at samples `starts` (multiples of the grid)
            b, c, length = batch.shape
            spec = stft(batch.reshape(b * c, length))  # (B*C, bins, T)
            frames = spec.shape[-1]
            noise = torch.stack([positional_noise(seed, s // HOP, frames, batch.device) for s in starts])
            noise = noise.repeat_interleave(c, dim=0)  # the same noise for every channel
            if detail == "noise":  # as alike as the channels are in the octave below; the match sets its level
                noise = channel_noise(noise, band_correlation(spec, c, first // 2, first), seed, starts, c)
                generated = torch.complex(noise[:, 0, lo:].float(), noise[:, 1, lo:].float())
            else:
                cond = _pad_frames(_pad_bins(compress(spec)[:, :, lo:], top), model.multiple)
                noise = _pad_frames(_pad_bins(noise[:, :, lo:], top), model.multiple)
                k = torch.arange(lo, lo + cond.shape[2], device=batch.device)
                missing = (k >= first).to(cond.dtype)[None, None, :, None].expand(len(cond), 1, -1, cond.shape[-1])
                cond = cond * (1 - missing)
                noise = noise.to(cond.dtype)
                est = torch.cat([sample_flow(model, cond[i:i + 1], missing[i:i + 1], noise[i:i + 1], lo, p.steps,
                                             p.solver, hp.prior_std) for i in range(len(cond))])  # one at a time
                generated = decompress(est.float()[:, :, :N_FFT // 2 + 1 - lo, :frames])
            if match is not None:  # the level of the generated band follows the music, frame by frame
                full = torch.zeros_like(spec)
                full[:, lo:] = generated
                generated = match(spec, full)[:, lo:]
            delta = torch.zeros_like(spec)
            delta[:, lo:] = (generated - spec[:, lo:]) * ramp[lo:, None].to(batch.device)
            added = istft(delta, length)
            # the inverse STFT of a band spreads a little below it (window side lobes): once more through the
            # STFT with everything below the cutoff zeroed, so the band the input has stays as it was
            again = stft(added)
            again[:, :first] = 0
            return istft(again, length).reshape(b, c, length)

        if emit is not None:
            done = [0]

            def keep(band):  # only the input's own frames: the grid's zero padding is not output
                take = min(band.shape[1], n - done[0])
                done[0] += band.shape[1]
                if take > 0:
                    emit(band[:, :take])

        out = process_in_chunks(run, padded, plan, batch_size=p.batch_size, device=self.device,
                                precision=p.precision, positions=True, emit=keep if emit else None)
        return None if emit else out[:, :n]


def zero_padded(samples, frames: int):
    """A tensor or Source as a Source `frames` long, zeros after its end (the chunk helper's grid)."""
    import torch

    from restorekit.streaming import Source, as_source

    class ZeroPadded(Source):
        def __init__(self) -> None:
            self.inner = as_source(samples)
            self.sample_rate, self.channels, self.frames = self.inner.sample_rate, self.inner.channels, frames

        def read(self, start: int, stop: int) -> torch.Tensor:
            have = self.inner.read(min(start, self.inner.frames), min(stop, self.inner.frames))
            return torch.nn.functional.pad(have, (0, stop - start - have.shape[1]))

    return ZeroPadded()


@hookimpl
def register_stages(register):
    register(FlowSuperResolution)


@hookimpl
def register_models(register):
    from restorekit_plugins.sr_envelope import EnvelopeSpec

    register(FlowSpec)
    register(EnvelopeSpec)
