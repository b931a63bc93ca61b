"""The stage contract: an id, a summary, validated parameters, what it accepts, and `process`.

This module must not import torch: plugins import it at registration time, and
`restorekit plugins` has to stay fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from restorekit.audio import Audio

STAGE_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class StageParams(BaseModel):
    """Base for stage parameters: unknown keys are rejected, values validated on assignment, and
    NaN and infinite numbers refused (a field that means "no limit" with inf says so with
    `Field(..., allow_inf_nan=True)`).

    Name parameters with their unit (`threshold_db`, `cutoff_hz`, `attack_ms`), give
    each a default, a range (`ge`/`le`) where one applies, and a `description`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


@dataclass
class RunContext:
    """What one `Stage.run` call knows: its seed, and the notes the stage adds."""

    seed: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Accepts:
    """What a stage can take; the runner adapts audio to it before calling `process`.

    `sample_rates`: allowed rates in Hz, or None for any. `channels`: allowed channel
    counts, or None for any. `devices`: device types the stage runs on ("cpu", "cuda").
    """

    sample_rates: frozenset[int] | None = None
    channels: frozenset[int] | None = None
    devices: frozenset[str] = frozenset({"cpu"})

    def __post_init__(self) -> None:
        for name in ("sample_rates", "channels", "devices"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, frozenset):
                object.__setattr__(self, name, frozenset(value))

    def pick_sample_rate(self, rate: int) -> int:
        """The accepted rate to convert `rate` to: itself, else the lowest above, else the highest."""
        if self.sample_rates is None or rate in self.sample_rates:
            return rate
        above = [r for r in self.sample_rates if r > rate]
        return min(above) if above else max(self.sample_rates)

    def describe(self) -> str:
        rates = "any" if self.sample_rates is None else ", ".join(str(r) for r in sorted(self.sample_rates))
        chans = "any" if self.channels is None else ", ".join(str(c) for c in sorted(self.channels))
        return f"sample rates: {rates}; channels: {chans}; devices: {', '.join(sorted(self.devices))}"


def build_params(model: type[BaseModel], params: BaseModel | dict[str, Any] | None,
                 overrides: dict[str, Any], owner: str) -> BaseModel:
    """Validated params from a model instance, a dict, or keyword arguments (which win)."""
    if params is None:
        params = model(**overrides)
    elif isinstance(params, dict):
        params = model(**{**params, **overrides})
    elif overrides:
        params = model(**{**params.model_dump(), **overrides})
    if not isinstance(params, model):
        raise TypeError(f"{owner}: params must be {model.__name__}, got {type(params).__name__}")
    return params


class Stage:
    """One processing step. Subclass, set the class attributes, implement `process`.

    - `id`: "<family>.<name>", e.g. "denoise.spectral_gate".
    - `summary`: one line, shown by `restorekit stages`.
    - `Params`: a `StageParams` subclass; every field has a default.
    - `accepts`: an `Accepts`.
    - `merges`: True when the stage takes several inputs (`process` gets a list).
    - `output_names()`: names of the outputs of a splitting stage (`process` returns a dict).
    - `test_params`: parameters the contract tests use instead of the defaults (e.g. a
      tiny random-weight model rather than a downloaded checkpoint).
    - `unavailable()`: why the stage cannot run on this machine (missing optional package
      or model file); the runner refuses it with that reason, contract tests skip with it.
    - `streams`: True when `stream(source, sink)` works block by block (see there); a
      pipeline whose stages all stream reads, processes and writes files in blocks.
    - `source`: True for a stage that makes audio from its parameters alone (a generator):
      `process(None)`; it comes first in a pipeline, which then runs without input audio
      (`Pipeline.run(None)`); `output_spec(None, None)` gives its rate and channels, and
      `source_name()` a file name for what it makes (`restorekit run` names outputs after it).

    Expensive resources (model weights) load in `load()`, which runs once per device
    (`place`) before the first `process`; share them across instances with
    `restorekit.cache.load_once`. During `process`, `self.device`, `self.seed`,
    `self.rng()` and `self.note()` give the run-time context.
    """

    id: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Params: ClassVar[type[StageParams]] = StageParams
    accepts: ClassVar[Accepts] = Accepts()
    merges: ClassVar[bool] = False
    streams: ClassVar[bool] = False
    source: ClassVar[bool] = False
    test_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: StageParams | dict[str, Any] | None = None, /, **kwargs: Any) -> None:
        self.params = build_params(self.Params, params, kwargs, self.id)
        self.device = "cpu"  #: where the stage runs; set by `place`
        self._loaded_on: str | None = None
        self._context = RunContext()

    # -- hooks a stage may override -------------------------------------------------
    @classmethod
    def unavailable(cls) -> str | None:
        """Why this stage cannot run here (say what to install or download), or None when it can."""
        return None

    def output_names(self) -> tuple[str, ...] | None:
        """Names of the outputs of a splitting stage, or None for one unnamed output."""
        return None

    def source_name(self) -> str | None:
        """A source stage's short name for what it makes, used in output file names (None: the pipeline's name)."""
        return None

    def output_spec(self, sample_rate: int, channels: int) -> tuple[int, int]:
        """(sample rate, channels) of the output for input of this rate and channel count."""
        return sample_rate, channels

    def output_bit_depth(self) -> int | None:
        """The bit depth the writer should use after this stage (a dither stage sets it)."""
        return None

    def check_inputs(self, count: int) -> str | None:
        """For a merging stage: a message when `count` inputs do not fit its parameters."""
        return None

    def whole_file_reason(self) -> str | None:
        """Why this instance needs the whole file in memory (None: `stream` works in blocks)."""
        return None if self.streams else "it works on the whole file"

    def stream(self, source: Any, sink: Any) -> None:
        """The block-by-block form of `process`, for stages that declare `streams`.

        Read the input from `source` (`read(start, stop)` and `blocks()` give (channels, n)
        float32 CPU tensors; `sample_rate`, `channels`, `frames`), in as many passes as the
        analysis needs, and `sink.write` the output in order, at `output_spec`'s rate and
        channels. Memory must not grow with `source.frames`: per-frame statistics that do
        go to disk (`restorekit.streaming.spill`), as does an intermediate signal that a
        second pass must read. The output must equal `process`'s (bit-identical where the
        stage is deterministic and blockwise exact).
        """
        raise NotImplementedError(f"{type(self).__name__}.stream")

    def load(self) -> None:
        """Load models or other expensive resources on `self.device`."""

    def process(self, audio: Audio | list[Audio]) -> Audio | dict[str, Audio]:
        raise NotImplementedError(f"{type(self).__name__}.process")

    # -- what the runner calls ------------------------------------------------------------
    def place(self, device: str) -> None:
        """Run on `device` from now on; `load()` runs there (once per device)."""
        self.device = device
        self.ensure_loaded()

    def run(self, audio: Audio | list[Audio], seed: int = 0) -> tuple[Audio | dict[str, Audio], list[str]]:
        """(output, notes) of `process` on `audio` with this call's seed.

        The runner's way in, and the way a stage that wraps another calls it. The whole
        track comes in on the CPU; a stage that works on whole tracks on its device moves
        them there itself (`audio.to(self.device)`), chunked stages move only pieces.
        """
        outer, self._context = self._context, RunContext(seed)
        try:
            return self.process(audio), self._context.notes
        finally:
            self._context = outer

    def run_stream(self, source: Any, sink: Any, seed: int = 0) -> list[str]:
        """The notes of `stream(source, sink)` run with this call's seed (the streaming runner's way in)."""
        outer, self._context = self._context, RunContext(seed)
        try:
            self.stream(source, sink)
            return self._context.notes
        finally:
            self._context = outer

    # -- helpers ----------------------------------------------------------------------
    @property
    def seed(self) -> int:
        """This call's seed (from `run`; 0 when `process` is called directly)."""
        return self._context.seed

    def ensure_loaded(self) -> None:
        """Load on `self.device` unless that was done already."""
        if self._loaded_on != self.device:
            self.load()
            self._loaded_on = self.device

    def note(self, message: str) -> None:
        """Add a line to this file's notes (the manifest's `notes`), e.g. which backend ran."""
        self._context.notes.append(message)

    def take_notes(self) -> list[str]:
        """Notes added by `process` calls made directly, outside `run` (for tests); clears them."""
        notes, self._context.notes = self._context.notes, []
        return notes

    def rng(self) -> np.random.Generator:
        """A numpy generator seeded from the run seed and this stage; same seed, same result."""
        import numpy as np

        return np.random.default_rng([self.seed, *self.id.encode()])

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{type(self).__name__}({params})"


def check_stage_class(cls: Any) -> list[str]:
    """Reasons a class is not a valid stage (empty when it is)."""
    from restorekit.contracts import check_contract

    problems = check_contract(cls, Stage, "restorekit.Stage", name_attr="id", pattern=STAGE_ID_PATTERN,
                              example="family.name", params_attr="Params", params_base=StageParams,
                              params_name="restorekit.StageParams")
    if isinstance(cls, type) and issubclass(cls, Stage):
        if not isinstance(cls.accepts, Accepts):
            problems.append(f"{cls.__name__}.accepts must be a restorekit.Accepts")
        if cls.source and cls.merges:
            problems.append(f"{cls.__name__}: a source stage takes no input, so it cannot merge")
    return problems
