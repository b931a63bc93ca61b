"""Stem separation: `separate.demucs` (Demucs 4), `separate.hpss` (no weights), `separate.auto`.

All three are splitting stages with the same stem names (drums, bass, other, vocals, or
`<stem>` and `no_<stem>` with `two_stems`), at the input's rate and channel count, so a
graph built on one runs on the others. With `residual_stem` (the default) the stems sum
back to the input exactly; a `mix.sum` of untouched stems reconstructs the mix.

This module imports no torch, numpy or demucs: the work is in `_demucs` and `_hpss`,
imported inside `load`/`process`.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

from pydantic import Field, model_validator
from restorekit.device import stage_device
from restorekit.hookspecs import hookimpl
from restorekit.stage import Accepts, Stage, StageParams

log = logging.getLogger("restorekit")

STEMS4 = ("drums", "bass", "other", "vocals")
MODEL_STEMS = {"htdemucs_6s": (*STEMS4, "guitar", "piano")}  # every other known model: STEMS4
STEM_PATTERN = r"^[a-z][a-z0-9_]*$"
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
STEREO_OR_MONO = frozenset({1, 2})
ANY_DEVICE = frozenset({"cpu", "cuda"})


def _output_names(stems: tuple[str, ...], two_stems: str | None) -> tuple[str, ...]:
    return (two_stems, f"no_{two_stems}") if two_stems else stems


class DemucsParams(StageParams):
    model: str = Field("htdemucs", pattern=MODEL_PATTERN, description=(
        "Demucs model: htdemucs (default), htdemucs_ft (better, 4x slower), htdemucs_6s (adds guitar, piano), "
        "hdemucs_mmi, mdx, mdx_extra, ... or a checkpoint signature; demucs_unittest is a tiny random-weight "
        "model for tests."))
    repo: str | None = Field(None, description=(
        "Local directory of checkpoints (<sig>.th or <sig>-<sha8>.th files, <name>.yaml for bags) to load "
        "`model` from instead of the download cache: for offline use and your own models."))
    segment_s: float | None = Field(None, gt=0, le=600, description=(
        "Length in seconds of the segments sent to the device; empty: the model's own (7.8 s for htdemucs "
        "models, which cannot take longer ones). Shorter segments use less GPU memory."))
    overlap: float = Field(0.25, ge=0, le=0.9, description="Overlap between segments, as a fraction of a segment.")
    shifts: int = Field(1, ge=0, le=20, description=(
        "Number of random time shifts (up to 0.5 s) whose results are averaged: N passes, slightly better "
        "separation; 0: one pass without a shift."))
    two_stems: str | None = Field(None, pattern=STEM_PATTERN, description=(
        "Return only this stem and the rest of the mix as `no_<stem>` (e.g. vocals: vocals, no_vocals)."))
    stems: list[str] | None = Field(None, min_length=1, description=(
        "The stem names the model gives; empty: those of `model` (drums, bass, other, vocals; htdemucs_6s "
        "adds guitar, piano). Needed only for custom models in `repo`."))
    residual_stem: str | None = Field("other", pattern=STEM_PATTERN, description=(
        "Stem that also gets what the model leaves out (input minus the sum of the stems), so untouched "
        "stems sum back to the input exactly (with two_stems: no_<stem> is then input minus <stem>); "
        "empty: the model's stems as they are."))
    download: bool = Field(True, description=(
        "Download missing pretrained weights into the torch hub cache; false: fail at once when they "
        "are not there."))

    def stem_names(self) -> tuple[str, ...]:
        return tuple(self.stems) if self.stems else MODEL_STEMS.get(self.model, STEMS4)

    @model_validator(mode="after")
    def _stems_agree(self):
        names = self.stem_names()
        if len(set(names)) != len(names):
            raise ValueError(f"stems repeat a name: {list(names)}")
        if self.two_stems is not None and self.two_stems not in names:
            raise ValueError(f"two_stems '{self.two_stems}' is not a stem of model '{self.model}' "
                             f"({', '.join(names)})")
        if self.two_stems is None and self.residual_stem is not None and self.residual_stem not in names:
            raise ValueError(f"residual_stem '{self.residual_stem}' is not a stem of model '{self.model}' "
                             f"({', '.join(names)}); name one of them or set it empty")
        return self


class Demucs(Stage):
    """Hybrid (Transformer) Demucs source separation (Défossez et al.), pretrained by Meta.

    The whole track stays on the CPU; `demucs.apply.apply_model` sends overlapping segments
    to the pipeline's device (split mode) and cross-fades them. Mono input is duplicated to
    stereo and the stems come back mono; any rate is converted to the model's (44.1 kHz)
    and back. The model loads once per process and device.

    Weights download on first use from dl.fbaipublicfiles.com into the torch hub cache
    (`$TORCH_HOME/hub/checkpoints`, as demucs's legacy loader does), or come from `repo`;
    `restorekit fetch-demucs` fetches them ahead. They load with `torch.load(weights_only=True)`
    (only the Demucs classes and `Fraction` allowed), so a checkpoint cannot run code.
    `RESTOREKIT_OFFLINE=1` (or `HF_HUB_OFFLINE=1`) forbids downloads; without a network the
    attempt ends after a 3 s probe, once per process.
    """

    id = "separate.demucs"
    summary = "Demucs 4 stem separation (drums, bass, other, vocals; htdemucs_6s adds guitar, piano)."
    accepts = Accepts(channels=STEREO_OR_MONO, devices=ANY_DEVICE)
    Params = DemucsParams
    test_params: ClassVar[dict] = {"model": "demucs_unittest", "segment_s": 0.5, "shifts": 0}

    @classmethod
    def unavailable(cls):
        from restorekit_plugins.separate._demucs import INSTALL_HINT, backend_installed

        if backend_installed() is None:
            return f"the Demucs package is not installed ({INSTALL_HINT})"
        return None

    def output_names(self):
        return _output_names(self.params.stem_names(), self.params.two_stems)

    def load(self):
        from restorekit.cache import load_once

        from restorekit_plugins.separate import _demucs

        p = self.params
        backend = _demucs.get_backend()
        plan = _demucs.plan_model(backend, p.model, p.repo)
        _demucs.ensure_weights(plan, p.download)
        key = (self.id, backend.name, p.model, str(plan.repo.resolve()) if plan.repo else None, self.device)

        def build():
            model = _demucs.build_model(backend, plan)
            return model.to(self.device)

        self._backend = backend
        self._model = load_once(key, build)
        self._check_model()
        log.info("%s: model %s (%s) on %s", self.id, p.model, backend.name, self.device)

    def _check_model(self):
        from restorekit.errors import StageError

        from restorekit_plugins.separate._demucs import max_segment_s

        p = self.params
        have = tuple(self._model.sources)
        want = self.params.stem_names()
        if set(have) != set(want):
            raise StageError(f"{self.id}: model '{p.model}' gives stems {list(have)}, the pipeline expects "
                             f"{list(want)}; set `stems: [{', '.join(have)}]` and route those outputs")
        limit = max_segment_s(self._model)
        if p.segment_s is not None and p.segment_s > limit:
            raise StageError(f"{self.id}: segment_s {p.segment_s} is longer than model '{p.model}' accepts "
                             f"({limit:.2f} s); use segment_s <= {limit:.2f} or leave it empty")

    def describe_backend(self) -> str:
        return f"separate.demucs (model {self.params.model}, {self._backend.name})"

    def process(self, audio):
        from restorekit.audio import Audio

        from restorekit_plugins.separate import _demucs

        p = self.params
        x = audio.samples.detach()  # the whole track stays on the CPU, segments visit the device
        out = _demucs.separate(self._backend, self._model, x, audio.sample_rate, segment_s=p.segment_s,
                               overlap=p.overlap, shifts=p.shifts, device=self.device, seed=self.seed)
        names = list(self._model.sources)
        if p.two_stems is not None:
            stem = out[names.index(p.two_stems)]
            rest = x - stem if p.residual_stem is not None else out.sum(0) - stem
            return {p.two_stems: Audio(stem, audio.sample_rate), f"no_{p.two_stems}": Audio(rest, audio.sample_rate)}
        if p.residual_stem is not None:
            out[names.index(p.residual_stem)] += x - out.sum(0)
        return {name: Audio(out[i], audio.sample_rate) for i, name in enumerate(names)}


class Hpss(Stage):
    """Harmonic/percussive separation with median filters, plus a bass band and a vocal estimate.

    `drums`: the percussive part (broadband, short). `bass`: the harmonic part below
    `bass_crossover_hz`. `vocals`: the harmonic part in the vocal band that is centred in a
    stereo mix (left and right agree) or, for mono, does not repeat (REPET-SIM nearest-neighbour
    filtering). `other`: everything else, computed as input minus the others, so the stems
    sum to the input exactly.

    Quality, honestly: this is a signal-processing guess, not a learned separator. Expect
    guitars and pads in `vocals`, sustained vocal notes in `other` and cymbals smeared between
    `drums` and `other`; typical SDR is far below Demucs. It exists so the stem graph runs with
    no weights (offline, first run) and for light per-stem cleanup where leakage is harmless.
    """

    id = "separate.hpss"
    summary = ("Weightless stems by median-filter HPSS + bass band + centre/REPET vocal estimate; "
               "rough (far below Demucs), but stems sum to the input exactly.")
    accepts = Accepts(channels=STEREO_OR_MONO, devices=frozenset({"cpu"}))

    class Params(StageParams):
        harmonic_kernel_ms: float = Field(200.0, ge=20, le=2000, description=(
            "Length in ms of the median filter along time that keeps sustained (harmonic) sound."))
        percussive_kernel_hz: float = Field(500.0, ge=50, le=5000, description=(
            "Width in Hz of the median filter along frequency that keeps broadband (percussive) sound."))
        mask_power: float = Field(2.0, ge=1, le=8, description=(
            "Exponent of the soft masks: higher separates harder, with more artifacts."))
        bass_crossover_hz: float = Field(180.0, ge=40, le=500, description=(
            "Harmonic sound below this frequency (octave-wide crossover) goes to `bass`."))
        vocal_low_hz: float = Field(200.0, ge=50, le=2000, description="Lower edge in Hz of the vocal band.")
        vocal_high_hz: float = Field(8000.0, ge=1000, le=20000, description="Upper edge in Hz of the vocal band.")
        vocal_method: Literal["auto", "centre", "repeat"] = Field("auto", description=(
            "How vocals are told from other harmonic sound: centre (stereo: left and right agree), repeat "
            "(REPET-SIM: what the most similar distant frames lack; works on mono), auto: centre for stereo "
            "with a real side signal, else repeat."))
        two_stems: Literal["drums", "bass", "other", "vocals"] | None = Field(None, description=(
            "Return only this stem and the rest of the mix as `no_<stem>`."))

        @model_validator(mode="after")
        def _band_order(self):
            if self.vocal_low_hz >= self.vocal_high_hz:
                raise ValueError(f"vocal_low_hz ({self.vocal_low_hz}) must be below vocal_high_hz "
                                 f"({self.vocal_high_hz})")
            return self

    def output_names(self):
        return _output_names(STEMS4, self.params.two_stems)

    def process(self, audio):
        import torch
        from restorekit.audio import Audio

        from restorekit_plugins.separate import _hpss

        p = self.params
        x = audio.numpy()
        settings = _hpss.HpssSettings(p.harmonic_kernel_ms, p.percussive_kernel_hz, p.mask_power,
                                      p.bass_crossover_hz, p.vocal_low_hz, p.vocal_high_hz, p.vocal_method)
        stems, method = _hpss.separate(x, audio.sample_rate, settings)
        self.last_method = method
        out = torch.from_numpy(stems)
        if p.two_stems is not None:
            stem = out[STEMS4.index(p.two_stems)]
            return {p.two_stems: Audio(stem, audio.sample_rate),
                    f"no_{p.two_stems}": Audio(torch.from_numpy(x) - stem, audio.sample_rate)}
        return {name: Audio(out[i], audio.sample_rate) for i, name in enumerate(STEMS4)}


class AutoParams(DemucsParams):
    download: bool = Field(True, description=(
        "Download missing Demucs weights once (a 3 s reachability probe first; RESTOREKIT_OFFLINE=1 "
        "forbids it) before falling back to separate.hpss; false: use Demucs only when its weights are "
        "already here (no network)."))

    @model_validator(mode="after")
    def _hpss_can_stand_in(self):
        names = self.stem_names()
        if self.two_stems is None and set(names) != set(STEMS4):
            raise ValueError(f"separate.auto falls back to separate.hpss, which gives {', '.join(STEMS4)}; "
                             f"model '{self.model}' gives {', '.join(names)}: use separate.demucs for it, "
                             "or two_stems")
        if self.two_stems is not None and self.two_stems not in STEMS4:
            raise ValueError(f"separate.auto falls back to separate.hpss, which has no stem "
                             f"'{self.two_stems}'; use separate.demucs, or one of {', '.join(STEMS4)}")
        return self


class Auto(Stage):
    """Demucs when it can run here, else the weightless HPSS separator; says which one ran.

    Demucs runs when its package imports and the model's weights are on disk (cache or
    `repo`), or can be downloaded (`download: true`, the default: once, with a progress bar
    on a terminal). Otherwise `separate.hpss` runs with its defaults, and one short warning
    line says so, once per process (what ran, why, how to get Demucs; the full reason is
    logged with -v). Each file's notes in the manifest record which separator ran, and why.
    """

    id = "separate.auto"
    summary = "separate.demucs when its weights are available, else separate.hpss; logs which one ran."
    accepts = Accepts(channels=STEREO_OR_MONO, devices=ANY_DEVICE)
    Params = AutoParams
    test_params: ClassVar[dict] = {"model": "demucs_unittest", "segment_s": 0.5, "shifts": 0}

    def output_names(self):
        return _output_names(self.params.stem_names(), self.params.two_stems)

    def load(self):
        from restorekit_plugins.separate._demucs import (
            ALTERNATIVES,
            BackendMissing,
            WeightsUnavailable,
        )

        params = self.params.model_dump()
        inner: Stage = Demucs(params)
        try:
            inner.place(self.device)
            self.choice = inner.describe_backend()
            self.reason = None
            log.info("%s: using %s", self.id, self.choice)
        except (BackendMissing, WeightsUnavailable) as exc:
            inner = Hpss(two_stems=self.params.two_stems)
            inner.place(stage_device(self.device, inner.accepts.devices))
            self.choice = "separate.hpss"
            self.reason = exc.short
            log.info("%s: Demucs cannot run: %s", self.id, str(exc).replace(f"; {ALTERNATIVES}", ""))
            warn_once(fallback_message(self.params.model, exc.short, exc.fix))
        self.inner = inner

    def process(self, audio):
        out, notes = self.inner.run(audio, self.seed)
        for message in notes:
            self.note(message)
        if self.choice == "separate.hpss":
            self.note(f"separated with separate.hpss (vocal method {self.inner.last_method}), not Demucs "
                      f"{self.params.model}: {self.reason}")
        else:
            self.note(f"separated with {self.choice}")
        return out


_warned: set[str] = set()  # fallback lines already logged in this process


def fallback_message(model: str, why: str, fix: str) -> str:
    """The one line that says separate.auto fell back: what ran, why in a few words, how to get Demucs."""
    return f"separate.auto: used rough HPSS stems, not Demucs {model} ({why}); for Demucs: {fix}"


def warn_once(message: str) -> None:
    """Log a warning the first time this process sees it (a batch or a loop of pipelines: one line)."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


@hookimpl
def register_stages(register):
    for cls in (Demucs, Hpss, Auto):
        register(cls)


@hookimpl
def register_commands(cli):
    import click
    from restorekit.cli_support import handle_errors

    @cli.command("fetch-demucs")
    @click.argument("models", nargs=-1)
    @handle_errors
    def fetch_demucs(models):
        """Download Demucs weights (default: htdemucs) into the torch hub cache, for later offline use."""
        from restorekit_plugins.separate import _demucs

        backend = _demucs.get_backend()
        for model in models or ("htdemucs",):
            paths = _demucs.fetch_model(backend, model)
            click.echo(f"{model}: " + (", ".join(map(str, paths)) or "built in, nothing to download"))
