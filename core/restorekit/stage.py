"""The stage contract: an id, a summary, validated parameters, what it accepts, and `process`.

This module must not import torch: plugins import it at registration time, and
`restorekit plugins` has to stay fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from restorekit.audio import Audio

STAGE_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class StageParams(BaseModel):
    """Base for stage parameters: unknown keys are rejected, values validated on assignment.

    Name parameters with their unit (`threshold_db`, `cutoff_hz`, `attack_ms`), give
    each a default, a range (`ge`/`le`) where one applies, and a `description`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


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

    Expensive resources (model weights) load in `load()`, which the runner calls once
    before the first `process`; share them across instances with `restorekit.cache.load_once`.
    """

    id: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Params: ClassVar[type[StageParams]] = StageParams
    accepts: ClassVar[Accepts] = Accepts()
    merges: ClassVar[bool] = False
    test_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: StageParams | dict[str, Any] | None = None, /, **kwargs: Any) -> None:
        self.params = build_params(self.Params, params, kwargs, self.id)
        self.device = "cpu"
        self.seed = 0
        self._loaded = False

    # -- hooks a stage may override -------------------------------------------------
    @classmethod
    def unavailable(cls) -> str | None:
        """Why this stage cannot run here (say what to install or download), or None when it can."""
        return None

    def output_names(self) -> tuple[str, ...] | None:
        """Names of the outputs of a splitting stage, or None for one unnamed output."""
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

    def load(self) -> None:
        """Load models or other expensive resources on `self.device`."""

    def process(self, audio: Audio | list[Audio]) -> Audio | dict[str, Audio]:
        raise NotImplementedError(f"{type(self).__name__}.process")

    # -- helpers ----------------------------------------------------------------------
    def ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()
            self._loaded = True

    def note(self, message: str) -> None:
        """Add a line to this file's notes (the manifest's `notes`), e.g. which backend ran."""
        self.__dict__.setdefault("_notes", []).append(message)

    def take_notes(self) -> list[str]:
        """The notes added since the last call; the runner collects them after each `process`."""
        return self.__dict__.pop("_notes", [])

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
    if isinstance(cls, type) and issubclass(cls, Stage) and not isinstance(cls.accepts, Accepts):
        problems.append(f"{cls.__name__}.accepts must be a restorekit.Accepts")
    return problems
