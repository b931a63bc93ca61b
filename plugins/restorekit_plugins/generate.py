"""Source stages: audio made from parameters alone. `generate.musicgen` (MusicGen, text to music).

A source stage (`source = True`) comes first in a pipeline and is called as `process(None)`;
it returns the generated clip, here 32 kHz, mono or stereo as the model gives it.

This module imports no torch or transformers (`restorekit --help`, `plugins` and `stages`
stay fast): the work is in `_musicgen`, imported inside `load`/`process`, and the checks of
the parameters read at most a local model's `config.json`.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from restorekit.hookspecs import hookimpl
from restorekit.stage import Accepts, Stage, StageParams

log = logging.getLogger("restorekit")

SAMPLE_RATE_HZ = 32000  # every MusicGen model's EnCodec runs at 32 kHz
MAX_DURATION_S = 30.0  # MusicGen's training length; longer clips would need windowed continuation
INSTALL_HINT = "pip install 'restorekit[generate]' (transformers>=4.40,<6)"
# Meta's checkpoints on the Hugging Face hub, in the transformers format.
HUB_MODELS = {
    "facebook/musicgen-small": (1, False),
    "facebook/musicgen-medium": (1, False),
    "facebook/musicgen-large": (1, False),
    "facebook/musicgen-melody": (1, True),
    "facebook/musicgen-melody-large": (1, True),
    "facebook/musicgen-stereo-small": (2, False),
    "facebook/musicgen-stereo-medium": (2, False),
    "facebook/musicgen-stereo-large": (2, False),
    "facebook/musicgen-stereo-melody": (2, True),
    "facebook/musicgen-stereo-melody-large": (2, True),
}  # name -> (channels, melody)
# Tiny random-weight models built from a config (no download), for tests: seeded, deterministic.
TINY_MODELS = {"tiny": (1, False), "tiny-stereo": (2, False), "tiny-melody": (1, True)}


@dataclass(frozen=True)
class ModelSpec:
    """What a `model` value names: where it comes from and what it gives (known before loading)."""

    name: str
    kind: Literal["hub", "tiny", "local"]
    channels: int
    melody: bool
    path: Path | None = None  # a local directory


def model_spec(model: str) -> ModelSpec:
    """The spec of a model name or local directory; ValueError (with the choices) for anything else."""
    if model in HUB_MODELS:
        return ModelSpec(model, "hub", *HUB_MODELS[model])
    if model in TINY_MODELS:
        return ModelSpec(model, "tiny", *TINY_MODELS[model])
    path = Path(model).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is a directory but its config.json cannot be read ({exc}); give a "
                             "directory written by MusicgenForConditionalGeneration.save_pretrained") from exc
        model_type = config.get("model_type") if isinstance(config, dict) else None
        if model_type not in ("musicgen", "musicgen_melody"):
            raise ValueError(f"{config_file} is not a MusicGen model (model_type {model_type!r}, expected "
                             "'musicgen' or 'musicgen_melody')")
        decoder = config.get("decoder") or {}
        channels = int(decoder.get("audio_channels", 1)) if isinstance(decoder, dict) else 1
        return ModelSpec(model, "local", channels, model_type == "musicgen_melody", path)
    names = [*HUB_MODELS, *TINY_MODELS]
    close = difflib.get_close_matches(model, names, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"unknown MusicGen model '{model}'.{hint} Choose one of {', '.join(names)}, or a local "
                     "directory holding a model saved with save_pretrained (config.json and weights)")


class MusicGenParams(StageParams):
    prompt: str = Field("lo-fi piano with soft drums", min_length=1, max_length=2000, description=(
        "Text describing the music to generate (genre, instruments, mood, tempo)."))
    duration_s: float = Field(8.0, ge=0.1, le=MAX_DURATION_S, description=(
        "Length of the generated clip in seconds (MusicGen makes 50 tokens a second; at most 30 s, its "
        "training length)."))
    guidance_scale: float = Field(3.0, ge=1.0, le=20.0, description=(
        "Classifier-free guidance: how strongly the prompt steers generation (1: no guidance, one pass; "
        "above 1: two passes per token, conditional and unconditional; MusicGen's default is 3)."))
    top_k: int = Field(250, ge=0, le=2048, description=(
        "Sample each token from the k most likely ones (0: no top-k filtering; MusicGen's default is 250)."))
    top_p: float = Field(0.0, ge=0.0, le=1.0, description=(
        "Nucleus sampling: sample from the smallest set of tokens whose probability reaches p (0: off)."))
    temperature: float = Field(1.0, gt=0.0, le=10.0, description=(
        "Softmax temperature of the sampling: lower is more conservative, higher more varied."))
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description=(
        "Seed of the sampling; empty: the run's seed for this stage (`restorekit run --seed`), so a run "
        "is reproducible either way."))
    model: str = Field("facebook/musicgen-small", min_length=1, description=(
        "facebook/musicgen-small (300M decoder), -medium (1.5B), -large (3.3B), -melody (1.5B, takes "
        "melody_path), -melody-large, the stereo variants facebook/musicgen-stereo-small, -medium, -large, "
        "-melody, -melody-large; a local directory of a saved model; or tiny, tiny-stereo, tiny-melody: "
        "tiny random-weight models for tests (no download, noise-like output)."))
    melody_path: str | None = Field(None, min_length=1, description=(
        "Audio file whose chroma (the dominant pitch class over time) conditions the generation; only "
        "for -melody models. The first 30 s are used."))
    download: bool = Field(True, description=(
        "Download missing weights from the Hugging Face hub into its cache (once, with a progress bar); "
        "false: fail at once when they are not cached."))
    precision: Literal["auto", "float32", "float16", "bfloat16"] = Field("auto", description=(
        "Weights and activations: auto is float16 on CUDA and float32 on the CPU; float16 and bfloat16 "
        "need CUDA."))

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        model_spec(value)
        return value

    @field_validator("melody_path")
    @classmethod
    def _melody_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(f"melody file {value} does not exist (or is not a file)")
        return value

    @model_validator(mode="after")
    def _melody_only_with_melody_models(self):
        spec = model_spec(self.model)
        if self.melody_path is not None and not spec.melody:
            melody = [n for n in HUB_MODELS if HUB_MODELS[n][1]]
            raise ValueError(f"melody_path needs a melody model, and '{self.model}' is not one; use "
                             f"{', '.join(melody)} (or tiny-melody for tests), or drop melody_path")
        return self


class MusicGen(Stage):
    """MusicGen (Copet et al. 2023): text-to-music, autoregressive over EnCodec tokens at 32 kHz.

    A source stage: it takes no audio and returns `duration_s` of generated music at 32 kHz,
    mono or stereo as the model gives it, through the `transformers` implementation
    (`pip install 'restorekit[generate]'`). Sampling is seeded (`seed`, else the run's seed),
    so the same parameters give the same clip on the same machine. The manifest's notes say
    model, prompt, duration, seed and device.

    Weights download on first use from the Hugging Face hub into its cache
    (`~/.cache/huggingface/hub`; HF_HOME or HF_HUB_CACHE move it), with a progress bar on a
    terminal; `restorekit fetch-musicgen MODEL` fetches them ahead. `RESTOREKIT_OFFLINE=1`
    (or `HF_HUB_OFFLINE=1`) forbids downloads; without a network the attempt ends after a 3 s
    probe, once per process, and the stage fails with one line saying what is missing and where
    it looked. On CUDA the model runs in float16 (`precision: auto`). The model loads once per
    process, device and precision.

    `-melody` models take a `melody_path`: its chroma (12 pitch classes, the loudest per
    0.128 s frame) steers the melody. `tiny` (and `tiny-stereo`, `tiny-melody`) are tiny
    random-weight models built from a config for tests: noise-like, but they exercise every
    step offline in about a second.
    """

    id = "generate.musicgen"
    summary = "Generate music from a text prompt with MusicGen (transformers); a source stage, 32 kHz."
    accepts = Accepts(devices=frozenset({"cpu", "cuda"}))
    Params = MusicGenParams
    source = True
    test_params: ClassVar[dict] = {"model": "tiny", "duration_s": 0.5, "prompt": "test"}

    @classmethod
    def unavailable(cls):
        if importlib.util.find_spec("transformers") is None:
            return f"the transformers package is not installed ({INSTALL_HINT})"
        return None

    @property
    def spec(self) -> ModelSpec:
        return model_spec(self.params.model)

    def output_spec(self, sample_rate, channels):
        return SAMPLE_RATE_HZ, self.spec.channels

    def source_name(self):
        """The prompt's first words as a file name: 'lo-fi piano, soft drums' -> lo-fi-piano-soft-drums."""
        words = re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", self.params.prompt.lower())
        name = "-".join(words)[:48].strip("-")
        return name or "musicgen"

    def load(self):
        from restorekit.cache import load_once

        from restorekit_plugins import _musicgen

        p = self.params
        spec = self.spec
        _musicgen.require_transformers()
        dtype = _musicgen.resolve_precision(p.precision, self.device)
        where = _musicgen.ensure_weights(spec, p.download) if spec.kind != "tiny" else None
        key = (self.id, spec.kind, str(where) if where else spec.name, self.device, dtype)
        self._bundle = load_once(key, lambda: _musicgen.load_bundle(spec, where, self.device, dtype))
        log.info("%s: model %s on %s (%s)", self.id, spec.name, self.device, dtype)

    def process(self, audio=None):
        from restorekit_plugins import _musicgen

        p = self.params
        if audio is not None:
            raise ValueError(f"{self.id} is a source stage: it takes no input audio (put it first in a pipeline)")
        seed = p.seed if p.seed is not None else self.seed
        out = _musicgen.generate(self._bundle, prompt=p.prompt, duration_s=p.duration_s,
                                 guidance_scale=p.guidance_scale, top_k=p.top_k, top_p=p.top_p,
                                 temperature=p.temperature, seed=seed, device=self.device,
                                 melody_path=p.melody_path)
        melody = f", melody from {p.melody_path}" if p.melody_path else ""
        self.note(f"generated by MusicGen {p.model} on {self.device} ({self._bundle.dtype_name}): prompt "
                  f"{p.prompt!r}, {p.duration_s:g} s at {SAMPLE_RATE_HZ} Hz, {out.channels} ch, seed {seed}, "
                  f"guidance {p.guidance_scale:g}, top_k {p.top_k}, top_p {p.top_p:g}, temperature "
                  f"{p.temperature:g}{melody}")
        return out


@hookimpl
def register_stages(register):
    register(MusicGen)


@hookimpl
def register_commands(cli):
    import click
    from restorekit.cli_support import handle_errors

    @cli.command("fetch-musicgen")
    @click.argument("models", nargs=-1)
    @handle_errors
    def fetch_musicgen(models):
        """Download MusicGen weights (default: facebook/musicgen-small) into the Hugging Face cache."""
        from restorekit.errors import UsageError

        from restorekit_plugins import _musicgen

        for model in models or ("facebook/musicgen-small",):
            if model not in HUB_MODELS:
                raise UsageError(f"fetch-musicgen: '{model}' is not a MusicGen model on the hub; choose from "
                                 f"{', '.join(HUB_MODELS)}")
            _musicgen.require_transformers()
            click.echo(f"{model}: {_musicgen.ensure_weights(model_spec(model), download=True)}")
