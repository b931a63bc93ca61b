"""`inpaint.flow`: learned gap inpainting with the flow network of `sr.flow` and a time mask (issue 16).

The model family `inpaintflow` is `srflow`'s: the same 2-D U-Net (`flow_unet2d`) on the same
compressed STFT at 44.1 kHz (n_fft 1024, hop 512, c = |X|^0.3 * X/|X|, real and imaginary
parts as channels), the same bridge flow and loss (`sr.flow_matching_loss`). Only the mask
differs: instead of the bins above a cutoff, the STFT frames whose windows reach into a gap
are generated, over all bins; the frames around them are the condition (frames that are only
partly in the gap keep what they hold). The shipped weights were fine-tuned from srflow's.
The stage finds gaps as `inpaint.ar` and `inpaint.similarity` do, and generates each gap in a
window of `context_ms` around it; only the gap (and `crossfade_ms` outside each edge) changes.
docs/models.md gives the training and the measured effect; docs/stages/inpaint.md the usage.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field
from restorekit.hookspecs import hookimpl
from restorekit.stage import Accepts
from restorekit.training.spec import TINY

from restorekit_plugins.inpaint import DetectParams, _GapStage
from restorekit_plugins.sr import (
    EDGE_FRAMES,
    HOP,
    N_FFT,
    SAMPLE_RATE,
    FlowNetHparams,
    FlowSamplingParams,
    FlowSpec,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

SHIPPED = "inpaintflow"
MIN_ZERO_RUN = 32  # training: a run of exact zeros at least this long (samples) in the input is a gap
BINS = N_FFT // 2 + 1
BANDS = 24  # third-octave-like bands of the envelope match, from bin 2 (86 Hz) to the top
ENVELOPE_CONTEXT_FRAMES = 22  # about 250 ms each side
MAX_CUT = 1e-4  # the envelope match takes a band down by up to 80 dB (to where the music around it has nothing)


def zero_runs(x: torch.Tensor, min_run: int = MIN_ZERO_RUN) -> torch.Tensor:
    """(B, n) -> (B, n) bool: samples inside runs of at least `min_run` exact zeros."""
    import torch
    import torch.nn.functional as F

    if x.shape[-1] < min_run:
        return torch.zeros(x.shape, dtype=torch.bool, device=x.device)
    zero = (x == 0).float()[:, None]
    whole = F.avg_pool1d(zero, min_run, 1) > 1 - 0.5 / min_run  # windows of min_run samples, all zero
    return F.max_pool1d(F.pad(whole.float(), (min_run - 1, min_run - 1)), min_run, 1)[:, 0] > 0


def gap_frames(gap: torch.Tensor) -> torch.Tensor:
    """(B, n) bool samples in gaps -> (B, n // HOP + 1) bool: STFT frames (centred, window N_FFT) that reach
    into a gap. Every gap sample lies only in such frames, so the inverse STFT of generated frames covers it."""
    import torch.nn.functional as F

    padded = F.pad(gap.float()[:, None], (N_FFT // 2, N_FFT // 2))
    return F.max_pool1d(padded, N_FFT, HOP)[:, 0] > 0


def match_envelope(generated: torch.Tensor, given: torch.Tensor, missing: torch.Tensor, max_gain_db: float,
                   context_frames: int = ENVELOPE_CONTEXT_FRAMES) -> torch.Tensor:
    """The generated frames with their spectral envelope set to the context's.

    generated, given: complex (C, F, T); missing: (T,) bool, the generated frames. Per channel and
    third-octave band, the mean power of the generated frames is brought to the mean power of up to
    `context_frames` given frames on each side, moving from the left side's to the right side's
    across the gap (per-bin gains interpolated between band centres; a band is raised by at most
    max_gain_db and lowered by up to 80 dB, so nothing appears where the music has nothing). The
    network keeps the fine structure and phase; the level and tilt come from the music around it.
    """
    import numpy as np
    import torch

    idx = torch.nonzero(missing)[:, 0]
    if not len(idx):
        return generated
    first, last = int(idx[0]), int(idx[-1])
    left = given[..., max(0, first - context_frames):first]
    right = given[..., last + 1:last + 1 + context_frames]
    sides = [side.abs().square().mean(-1) for side in (left, right) if side.shape[-1]]  # (C, F) each
    if not sides:
        return generated
    left_p, right_p = sides[0], sides[-1]
    edges = np.unique(np.round(np.geomspace(2, BINS, BANDS + 1)).astype(int))
    centres = (edges[:-1] + edges[1:] - 1) / 2

    def banded(power):  # (C, F) -> (C, bands)
        return torch.stack([power[:, a:b].mean(-1) for a, b in itertools.pairwise(edges)], -1).double()

    out = generated.clone()
    gen_p = banded(generated[..., first:last + 1].abs().square().mean(-1)) + 1e-20
    limit = 10 ** (max_gain_db / 20)
    bins = np.arange(BINS, dtype=np.float64)
    left_b, right_b = banded(left_p), banded(right_p)  # the context's envelope on each side, once
    count = last - first + 1
    for k in range(count):
        w = (k + 0.5) / count
        gain = (((1 - w) * left_b + w * right_b) / gen_p).sqrt().clamp(MAX_CUT, limit)  # cut freely, boost capped
        per_bin = torch.stack([torch.from_numpy(np.interp(bins, centres, g.numpy())) for g in gain])
        out[..., first + k] = generated[..., first + k] * per_bin.to(generated.real.dtype).to(generated.device)
    return out


class InpaintFlowSpec(FlowSpec):
    name = "inpaintflow"
    summary = "Gap inpainting flow: srflow's 2-D U-Net on the compressed STFT, generating the frames in gaps."
    Hparams = FlowNetHparams
    default_degrade = "dropouts"

    def make_batch(self, degraded, clean):
        """inputs (B, 3, F, T): the gapped compressed spectrum and the mask of frames in gaps (runs of exact
        zeros in the input that the target does not share); targets (B, 3, F, T): the clean compressed spectrum
        and the loss weight (the masked frames but those at the segment's cut edges)."""
        import torch

        from restorekit_plugins.sr import compress, stft

        d, c = degraded[:, 0], clean[:, 0]
        frames = gap_frames(zero_runs(d) & ~zero_runs(c)).float()  # (B, T)
        spec_d, spec_c = stft(d), stft(c)
        m = frames[:, None, None, :].expand(-1, 1, spec_d.shape[1], -1)
        w = m.clone()
        w[..., :EDGE_FRAMES] = 0
        w[..., -EDGE_FRAMES:] = 0
        return torch.cat([compress(spec_d), m], 1), torch.cat([compress(spec_c), w], 1)

    def loss(self, model, inputs, targets):
        from restorekit_plugins.sr import _pad_bins, _pad_frames, flow_matching_loss

        top = -BINS % model.multiple

        def region(x):
            return _pad_frames(_pad_bins(x, top), model.multiple)

        cond, x1 = region(inputs[:, :2]), region(targets[:, :2])
        missing, weight = region(inputs[:, 2:3]), region(targets[:, 2:3])
        return flow_matching_loss(model, self.hparams, cond, x1, missing, weight, 0)


class InpaintFlow(_GapStage):
    """Fill gaps with the learned inpainting flow: the STFT frames over each gap are generated from those around it.

    Gaps are found as by `inpaint.ar` (near-zero runs and abrupt level collapses inside
    music, never rests). Each gap is generated in a window of `context_ms` on each side
    (resampled to the model's 44.1 kHz if the input is at another rate): the gap is zeroed,
    the frames that reach into it start from noise and move in `steps` flow steps to the
    network's estimate, which predicts magnitude and phase; the rest of the window is the
    condition. Only the gap's samples are replaced, with a raised-cosine cross-fade of
    `crossfade_ms` outside each edge. Trained on gaps of 20-1000 ms; filled gaps feed the
    context of later ones. Deterministic for a `seed`. Without gaps the audio passes
    bit-identical.
    """

    id = "inpaint.flow"
    summary = "Fill gaps (5 ms to 1 s) with the learned inpainting flow (magnitude and phase generated)."
    accepts = Accepts(devices=frozenset({"cpu", "cuda"}))
    method = "flow"
    test_params: ClassVar[dict] = {"checkpoint": TINY}

    class Params(DetectParams, FlowSamplingParams):
        max_gap_ms: float = Field(1000.0, ge=1, le=10_000,
                                  description="Longest gap this stage fills, in ms (trained on 20-1000 ms).")
        checkpoint: str = Field(SHIPPED, description="Checkpoint name or path (.safetensors with its .json); "
                                                     "'inpaintflow' = shipped weights, 'tiny' = random test model.")
        context_ms: float = Field(1000.0, ge=100, le=10_000,
                                  description="Audio each side of a gap the model sees, in ms (trained with "
                                              "about 1 s).")
        crossfade_ms: float = Field(5.0, ge=0, le=100, description="Cross-fade outside each edge of a gap, in ms.")
        steps: int = Field(1, ge=1, le=8, description="Flow steps (network evaluations per gap and channel); 1 "
                                                      "measured best or near-best and 3x faster than 4.")
        match_envelope_db: float = Field(
            24.0, ge=0, le=60, description="Bring the generated frames' spectral envelope to the music's around the "
                                           "gap, raising a band by at most this many dB (lowering it by up to 80); "
                                           "0: the network's own output.")

    def load(self):
        self.model, hparams, _ = InpaintFlowSpec().load_with_hparams(self.params.checkpoint, self.device)
        self.prior_std = hparams.prior_std

    def process(self, audio):
        gaps = self.find(audio)
        p = self.params
        self.report(gaps, audio.sample_rate, "filled by the learned inpainting flow",
                    f" ({p.steps} {p.solver} step{'s' * (p.steps > 1)})")
        if not gaps:
            return audio
        x = audio.samples.clone()
        for gap in gaps:
            self.fill(x, gap, gaps, audio.sample_rate)
        return audio.with_samples(x)

    def fill(self, x: torch.Tensor, gap, gaps, rate: int) -> None:
        """Generate `gap` in place in x (channels, frames), from a window of context around it."""
        import torch
        from restorekit.audio import Audio
        from restorekit.dsp import resample

        p = self.params
        n = x.shape[1]
        ctx = round(p.context_ms * rate / 1000)
        xf = min(round(p.crossfade_ms * rate / 1000), gap.start, n - gap.stop)
        lo, hi = max(0, gap.start - ctx), min(n, gap.stop + ctx)
        window = x[:, lo:hi].clone()
        in_gap = torch.zeros(hi - lo, dtype=torch.bool)
        for g in gaps:  # this gap and any unfilled one in reach: zero, as in training
            a, b = max(g.start, lo) - lo, min(g.stop, hi) - lo
            if a < b and (g is gap or g.start > gap.start):
                in_gap[a:b] = True
        window[:, in_gap] = 0
        if rate != SAMPLE_RATE:
            window = resample(Audio(window, rate), SAMPLE_RATE).samples
            in_gap = torch.nn.functional.interpolate(in_gap.float()[None, None], size=window.shape[1])[0, 0] > 0
        generated = self.generate(window, in_gap, seed=(p.seed if p.seed is not None else self.seed) + gap.start)
        if rate != SAMPLE_RATE:
            generated = resample(Audio(generated, SAMPLE_RATE), rate).samples
        generated = torch.nn.functional.pad(generated, (0, max(0, (hi - lo) - generated.shape[1])))[:, :hi - lo]
        a, b = gap.start - lo, gap.stop - lo
        x[:, gap.start:gap.stop] = generated[:, a:b]
        if xf:
            fade = 0.5 - 0.5 * torch.cos(torch.pi * (torch.arange(xf) + 0.5) / xf)  # 0 -> 1 towards the gap
            x[:, gap.start - xf:gap.start] += fade * (generated[:, a - xf:a] - x[:, gap.start - xf:gap.start])
            x[:, gap.stop:gap.stop + xf] += fade.flip(0) * (generated[:, b:b + xf] - x[:, gap.stop:gap.stop + xf])

    def generate(self, window: torch.Tensor, in_gap: torch.Tensor, seed: int) -> torch.Tensor:
        """(channels, frames) at the model's rate, gap samples zeroed -> the model's estimate of the window."""
        import torch
        from restorekit.chunking import autocast_dtype

        from restorekit_plugins.sr import (
            _pad_bins,
            _pad_frames,
            compress,
            decompress,
            istft,
            sample_flow,
            stft,
        )

        model, device = self.model, torch.device(self.device)
        length = window.shape[1]
        padded = torch.nn.functional.pad(window, (0, -length % HOP)).to(device)
        gap = torch.nn.functional.pad(in_gap, (0, -length % HOP))[None].to(device)
        spec = stft(padded)  # (C, F, T)
        frames = spec.shape[-1]
        top = -BINS % model.multiple
        cond = _pad_frames(_pad_bins(compress(spec), top), model.multiple)
        missing = _pad_frames(_pad_bins(gap_frames(gap).float()[:, None, None, :].expand(1, 1, BINS, -1), top),
                              model.multiple)
        gen = torch.Generator().manual_seed(seed % 2 ** 63)
        noise = torch.randn((1, *cond.shape[1:]), generator=gen).to(device)
        dtype = autocast_dtype(self.params.precision, device)
        channels = len(cond)  # all channels in one batch, with the same noise
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            est = sample_flow(model, cond, missing.expand(channels, -1, -1, -1), noise.expand(channels, -1, -1, -1),
                              0, self.params.steps, self.params.solver, self.prior_std)
            generated = decompress(est.float()[:, :, :BINS, :frames])
        if self.params.match_envelope_db > 0:
            generated = match_envelope(generated, spec, gap_frames(gap)[0], self.params.match_envelope_db)
        return istft(generated, padded.shape[1])[:, :length].float().cpu()


@hookimpl
def register_stages(register):
    register(InpaintFlow)


@hookimpl
def register_models(register):
    register(InpaintFlowSpec)
