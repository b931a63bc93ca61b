"""`restore.unet`: a trained 1-D convolutional U-Net that restores waveforms (issue 6).

The network (nets/unet1d.py) predicts a residual correction of 32 kHz mono audio; stereo
is restored channel by channel. Inference goes through the core's chunked overlap-add
helper; weights are a safetensors checkpoint (shipped in restorekit_plugins/weights/).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from restorekit.hookspecs import hookimpl
from restorekit.stage import Accepts, Stage, StageParams
from restorekit.training.spec import TINY, Hparams, ModelSpec
from restorekit_plugins import WEIGHTS_DIR

SHIPPED = "unet"
SAMPLE_RATE = 32000


class UNetHparams(Hparams):
    channels: int = Field(8, ge=1, le=256, description="Channels of the first level.")
    depth: int = Field(4, ge=1, le=6, description="Number of down/up-sampling levels.")
    stride: int = Field(4, ge=2, le=8, description="Down-sampling factor per level.")
    kernel: int = Field(7, ge=3, le=31, description="Convolution kernel size (odd).")
    growth: int = Field(2, ge=1, le=4, description="Channel multiplier per level.")
    upsample: Literal["nearest", "transposed"] = Field(
        "nearest", description="Decoder upsampling: nearest (repeat, then convolve; no fixed tones) or "
                               "transposed (transposed convolutions, as v1-v3, which add tones at multiples of "
                               "125 Hz).")
    stft_weight: float = Field(1.0, ge=0, description="Weight of the multi-resolution STFT loss.")
    l1_weight: float = Field(1.0, ge=0, description="Weight of the waveform L1 loss.")
    sisdr_weight: float = Field(2.0, ge=0, description="Weight of the negative SI-SDR loss, in units of "
                                                       "10 dB (0: off); rewards waveform fidelity.")
    sisdr_max_db: float | None = Field(40.0, ge=10, le=150, description="Soft cap of each item's SI-SDR in dB, so "
                                                                         "near-perfect items (identity pairs) do not "
                                                                         "swamp the gradient; empty: no cap (v1-v3).")
    perceptual_weight: float = Field(0.0, ge=0, description="Weight of the quality estimator's loss (0: off).")


class UNetSpec(ModelSpec):
    name = "unet"
    architecture = "unet1d"
    summary = "1-D convolutional waveform U-Net (residual), L1 + multi-resolution STFT + SI-SDR loss."
    Hparams = UNetHparams
    tiny: ClassVar[dict] = {"channels": 2, "depth": 2}
    sample_rate = SAMPLE_RATE
    default_degrade = "lowres-8k"
    shipped_dirs = (WEIGHTS_DIR,)
    legacy_hparams: ClassVar[dict] = {"upsample": "transposed"}  # checkpoints from before the option

    def build(self, hparams):
        from restorekit_plugins.nets.unet1d import UNet1d

        return UNet1d(hparams.channels, hparams.depth, hparams.stride, hparams.kernel, hparams.growth,
                      hparams.upsample)

    def randomize_tiny(self, model):
        import torch

        for p in model.parameters():  # random, non-zero: a tiny model that does something
            torch.nn.init.normal_(p, std=0.05)

    def loss(self, model, inputs, targets):
        from torch.nn import functional as F

        from restorekit_plugins.nets.losses import multi_resolution_stft_loss

        hp = self.hparams
        out = model(inputs)
        l1 = F.l1_loss(out, targets)
        stft = multi_resolution_stft_loss(out, targets)
        total = hp.l1_weight * l1 + hp.stft_weight * stft
        parts = {"l1": l1.item(), "stft": stft.item()}
        if hp.sisdr_weight > 0:
            from restorekit_plugins.nets.losses import negative_si_sdr

            sisdr = negative_si_sdr(out, targets, max_db=hp.sisdr_max_db) / 10.0
            total = total + hp.sisdr_weight * sisdr
            parts["neg_si_sdr_10db"] = sisdr.item()
        if hp.perceptual_weight > 0:  # the quality estimator's judgement of the output (CQS)
            from restorekit_plugins.quality import quality_loss

            perceptual = quality_loss(out)
            total = total + hp.perceptual_weight * perceptual
            parts["perceptual"] = perceptual.item()
        return total, parts


def load_unet(checkpoint: str, device: str):
    """(network, its sample rate) for a checkpoint name/path or `tiny`, loaded once per process."""
    model, config = UNetSpec().load_for_inference(checkpoint, device)
    return model, int(config.get("sample_rate", SAMPLE_RATE))


class UNetRestore(Stage):
    """Restores band-limited, noisy music (trained on `lowres-8k`: 4 kHz bandwidth plus noise), when it is.

    Diagnoses first (`only_band_limited`): the network runs only when the input's band
    ends below `max_cutoff_hz` (a cliff, or a fall onto a flat, steady noise floor; the
    rules of bwe.harmonic, docs/stages/bwe.md). Full-band input, or input whose content
    reaches its own Nyquist frequency (text-to-music output), passes through unchanged,
    and the notes say what was found. Any input rate: band-limited audio is restored at
    the model's rate (32 kHz) and resampled back.
    """

    id = "restore.unet"
    summary = "Trained waveform U-Net: restores band-limited, noisy music (runs only where it finds a band limit)."
    accepts = Accepts(devices=frozenset({"cpu", "cuda"}))
    streams = True  # detects in a first pass; resamples into a spill file, then segments visit the network
    test_params: ClassVar[dict] = {"checkpoint": TINY}

    class Params(StageParams):
        checkpoint: str = Field(SHIPPED, description="Checkpoint name or path (.safetensors with its .json); "
                                                     "'unet' = shipped weights, 'tiny' = random test model.")
        segment_s: float = Field(4.0, ge=0.1, le=60, description="Length of each inference segment in seconds.")
        overlap_s: float = Field(0.25, ge=0, le=10, description="Cross-fade between segments in seconds.")
        batch_size: int = Field(8, ge=1, le=256, description="Segments per forward pass.")
        precision: Literal["auto", "float32", "bfloat16", "float16"] = Field(
            "auto", description="Arithmetic of the network: auto = float16 autocast on CUDA, float32 on the CPU; "
                                "bfloat16 = about 3x faster on CPUs with native bfloat16, slightly worse LSD.")
        only_band_limited: bool = Field(
            True, description="Diagnose first: run the network only when the input's band ends below max_cutoff_hz; "
                              "otherwise return the input unchanged. false: always run it.")
        max_cutoff_hz: float = Field(
            12000.0, ge=1000, le=16000, description="A band limit at or above this frequency counts as full band "
                                                    "(the network restores low-resolution audio).")

    def load(self):
        self.model, self.model_rate = load_unet(self.params.checkpoint, self.device)

    def process(self, audio):
        from restorekit.dsp import resample

        p = self.params
        if p.only_band_limited and not self._band_limited(audio):
            return audio
        restored = self._restore(resample(audio, self.model_rate))
        return resample(restored, audio.sample_rate)

    def stream(self, source, sink):
        from restorekit.streaming import copy
        from restorekit_plugins._blocks import Resampler, resampled

        if self.params.only_band_limited and not self._band_limited(source):
            return copy(source, sink)
        at_model = resampled(source, self.model_rate)
        back = Resampler(self.model_rate, source.sample_rate, source.channels) \
            if self.model_rate != source.sample_rate else None
        try:
            self._restore(at_model, emit=lambda y: sink.write(back.push(y) if back else y))
        finally:
            if at_model is not source:
                at_model.close()
        if back:
            sink.write(back.finish())

    def _band_limited(self, audio) -> bool:
        """Whether the input's band ends below max_cutoff_hz (Audio or a Source); the finding goes into the notes."""
        from restorekit.streaming import as_source
        from restorekit_plugins._band_limit import analyze_spectrum, find_cutoff

        found = find_cutoff(analyze_spectrum(as_source(audio), audio.sample_rate))
        if found.cutoff_hz is not None and found.cutoff_hz < self.params.max_cutoff_hz:
            how = "a cliff" if found.kind == "cliff" else "a fall onto a noise floor"
            self.note(f"band limit at {found.cutoff_hz / 1000:.2f} kHz ({how}, {found.drop_db:.0f} dB): restoring")
            return True
        where = f"its band ends at {found.cutoff_hz / 1000:.2f} kHz" if found.cutoff_hz is not None else \
            "no band limit found"
        self.note(f"{where}, not below {self.params.max_cutoff_hz / 1000:g} kHz: nothing to restore, "
                  "passed through unchanged")
        return False

    def _restore(self, audio, emit=None):
        """Audio restored at the model's rate; with `emit` (audio a Source) the output goes there in order."""
        from restorekit.chunking import ChunkPlan, process_in_chunks

        model = self.model
        rate = audio.sample_rate
        plan = ChunkPlan.from_seconds(rate, self.params.segment_s, self.params.overlap_s,
                                      context_s=model.receptive_field() / rate, multiple_of=model.multiple)

        def run(batch):  # (B, C, L) -> each channel restored as mono
            b, c, n = batch.shape
            return model(batch.reshape(b * c, 1, n)).reshape(b, c, n)

        out = process_in_chunks(run, audio if emit else audio.samples, plan, batch_size=self.params.batch_size,
                                device=self.device, precision=self.params.precision, emit=emit)
        return None if emit else audio.with_samples(out)  # no clamp: the level is the writer's and the mastering's business


@hookimpl
def register_stages(register):
    register(UNetRestore)


@hookimpl
def register_models(register):
    register(UNetSpec)
