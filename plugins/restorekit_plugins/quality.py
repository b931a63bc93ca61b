"""Learned quality estimation (CQS): a CNN on log-mel spectrograms predicting a 1-5 score.

Trained to predict ViSQOL audio-mode MOS-LQO of degraded versions of clean clips, so
the score means something outside our own heuristics; where ViSQOL is not installed the
training target falls back to an SNR-based score (and says so). Exposed as the
reference-free metric `cqs` (real generated music has no clean reference) and as a
loss (`quality_loss`) for training other models.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from pydantic import Field

from restorekit.hookspecs import hookimpl
from restorekit.metrics import Metric, MetricError, MetricParams
from restorekit.training.spec import Hparams, ModelSpec
from restorekit_plugins import WEIGHTS_DIR

SHIPPED = "cqs"

SAMPLE_RATE = 32000
NEAR_SILENCE_DBFS = -70.0  #: cqs scores no window quieter than this (RMS of the mono downmix)
RANK_MIN_GAP = 0.1  #: MOS: target pairs closer than this are not ranked by the ranking loss
RANK_SCALE = 0.25  #: MOS: a score difference of this much puts the odds of the right order at e (2.7) to 1
log = logging.getLogger("restorekit")


class CQSHparams(Hparams):
    channels: int = Field(16, ge=1, le=128, description="Channels of the first convolution block.")
    n_mels: int = Field(64, ge=16, le=256, description="Mel bands of the input spectrogram.")
    dropout: float = Field(0.1, ge=0, le=0.9, description="Dropout before the regression head.")
    target: str = Field("visqol", pattern="^(visqol|snr)$",
                        description="Training target: ViSQOL MOS-LQO, or an SNR-based score.")
    pool_size: int = Field(1500, ge=1, le=100_000, description=(
        "Scored training clips, made once per run (RUN_DIR/pool.safetensors) and drawn from every epoch; "
        "does not change the network."))
    rank_weight: float = Field(0.0, ge=0, le=10, description=(
        "Weight of a pairwise ranking loss (logistic, over the pairs of a batch whose targets differ by "
        f"{RANK_MIN_GAP} MOS or more) added to the regression loss; 0 trains on the regression alone."))


def snr_score(snr_db):
    """An SNR-based stand-in for MOS: 1 at -5 dB or less, 5 at 45 dB or more, linear between."""
    import numpy as np

    return np.clip(1.0 + 4.0 * (np.asarray(snr_db) + 5.0) / 50.0, 1.0, 5.0)


class CQSSpec(ModelSpec):
    name = "cqs"
    architecture = "cqs_cnn"
    summary = "Quality estimator: log-mel CNN regressing ViSQOL MOS-LQO (1-5)."
    Hparams = CQSHparams
    tiny: ClassVar[dict] = {"channels": 2, "n_mels": 16}
    sample_rate = SAMPLE_RATE
    default_degrade = "lowres-8k,generative-mix,gaps,generative-mix"
    default_lr = 1e-3
    shipped_dirs = (WEIGHTS_DIR,)

    @property
    def pool_size(self) -> int:
        """Targets are expensive: a fixed pool of scored clips (`hparams.pool_size`), reused every epoch."""
        return self.hparams.pool_size

    def build(self, hparams):
        from restorekit_plugins.nets.cqs_cnn import QualityCNN

        return QualityCNN(SAMPLE_RATE, hparams.channels, hparams.n_mels, hparams.dropout)

    def make_batch(self, degraded, clean):
        import numpy as np
        import torch

        from restorekit.audio import Audio
        from restorekit.plugins import get_registry

        target = self.hparams.target
        visqol = get_registry().metrics.get("visqol")
        if target == "visqol" and (visqol is None or visqol.unavailable() is not None):
            log.warning("ViSQOL is not installed (pip install 'restorekit[visqol]'): "
                        "training the quality estimator on SNR-based targets instead")
            target = "snr"
        scores = []
        for d, c in zip(degraded, clean):
            if target == "visqol":
                try:
                    scores.append(visqol().compute(Audio(d.contiguous(), SAMPLE_RATE),
                                                   Audio(c.contiguous(), SAMPLE_RATE)))
                    continue
                except MetricError as exc:
                    log.debug("visqol failed on a clip (%s); using the SNR score", exc)
            err = float(((d - c) ** 2).mean()) + 1e-12
            scores.append(float(snr_score(10 * np.log10(float((c ** 2).mean()) / err + 1e-12))))
        return degraded, torch.tensor(scores, dtype=torch.float32)

    def loss(self, model, inputs, targets):
        from torch.nn import functional as F

        pred = model(inputs)
        loss = F.smooth_l1_loss(pred, targets, beta=0.25)
        if self.hparams.rank_weight > 0:
            loss = loss + self.hparams.rank_weight * pairwise_rank_loss(pred, targets)
        return loss, {"mae": float((pred - targets).abs().mean().detach())}


def pairwise_rank_loss(pred, targets):
    """Logistic ranking loss (RankNet) over the batch's pairs whose targets differ by RANK_MIN_GAP or more."""
    from torch.nn import functional as F

    dp = pred[:, None] - pred[None, :]
    dt = targets[:, None] - targets[None, :]
    ranked = dt >= RANK_MIN_GAP  # each pair once, the better clip first
    if not bool(ranked.any()):
        return pred.sum() * 0.0
    return F.softplus(-dp[ranked] / RANK_SCALE).mean()


def load_cqs(checkpoint: str = SHIPPED, device: str = "cpu"):
    """The quality network for a checkpoint name/path (or `tiny`), loaded once per process."""
    return CQSSpec().load_for_inference(checkpoint, device)[0]


def quality_loss(audio, checkpoint: str = SHIPPED):
    """Perceptual loss for training other models: (5 - CQS score) / 4, differentiable; audio (B, 1, T) at 32 kHz."""
    from restorekit_plugins.nets.cqs_cnn import quality_loss as loss

    model = load_cqs(checkpoint, str(audio.device))
    for p in model.parameters():
        p.requires_grad_(False)
    return loss(model, audio)


class CQS(Metric):
    """Mean predicted score over 4 s windows of the mono downmix at 32 kHz; (near-)silent windows are left out.

    The network references its log-mel to the clip's own loudest bin, so it would score
    any level, digital silence included (about 2.9), and faint hiss as if it were music:
    windows whose RMS is below `near_silence_dbfs` (-70 dBFS; the network was trained on
    segments above -50 dBFS) are not scored. A clip with no louder window is a MetricError,
    never a score: "silent" below `silence_dbfs` (-90 dBFS), "near-silent" between the two.
    Stereo whose channels cancel in the downmix (L = -R) is an error too.
    """

    id = "cqs"
    summary = "Learned quality estimate (CQS), 1-5, reference-free; trained to predict ViSQOL MOS-LQO."
    unit = "MOS"
    higher_is_better = True
    needs_reference = False

    class Params(MetricParams):
        checkpoint: str = Field(SHIPPED, description="Checkpoint name or path; 'cqs' = shipped weights.")
        window_s: float = Field(4.0, ge=1.0, le=30.0, description="Length of each scored window in seconds.")
        silence_dbfs: float = Field(-90.0, ge=-200, le=0, description=(
            "Windows whose RMS level (of the mono downmix) is below this many dBFS are silent and not "
            "scored; a clip with no louder window has no score (an error: 'the clip is silent')."))
        near_silence_dbfs: float = Field(NEAR_SILENCE_DBFS, ge=-200, le=0, description=(
            "Windows below this many dBFS (but above silence_dbfs) are near-silent and not scored either: the "
            "network never saw such levels (training segments are above -50 dBFS) and would score faint hiss "
            "like music. A clip with no louder window has no score (an error: 'the clip is near-silent')."))

    def compute(self, est, ref=None):
        import torch

        from restorekit.dsp import convert_channels, resample
        from restorekit.metrics import check_downmix

        check_downmix(est, "the clip", "cqs scores the mono downmix; give one channel (or a real stereo mix)")
        audio = resample(convert_channels(est, 1), SAMPLE_RATE)
        x = audio.samples[0]
        win = int(self.params.window_s * SAMPLE_RATE)
        if x.shape[0] < SAMPLE_RATE // 2:
            raise MetricError(f"cqs needs at least 0.5 s of audio, got {est.duration_s:.3f} s")
        if x.shape[0] < win:
            windows = x[None]
        else:
            n = x.shape[0] // win
            windows = x[: n * win].reshape(n, win)
        power = windows.double().pow(2).mean(dim=1)
        silence, near = self.params.silence_dbfs, max(self.params.silence_dbfs, self.params.near_silence_dbfs)
        audible = power >= 10 ** (near / 10)
        if not bool(audible.any()):
            level = 10 * torch.log10(power.max()).item() if bool(power.max() > 0) else float("-inf")
            if level < silence:
                raise MetricError(f"cqs: the clip is silent: no quality score (RMS {level:.0f} dBFS in its "
                                  f"loudest window, below silence_dbfs = {silence:g} dBFS)")
            raise MetricError(f"cqs: the clip is near-silent: no quality score (RMS {level:.0f} dBFS in its "
                              f"loudest window, below near_silence_dbfs = {near:g} dBFS)")
        model = load_cqs(self.params.checkpoint, "cpu")
        with torch.inference_mode():
            return float(model(windows[audible][:, None]).mean())


@hookimpl
def register_models(register):
    register(CQSSpec)


@hookimpl
def register_metrics(register):
    register(CQS)
