"""The contract for a trainable model family, registered by plugins through `register_models`.

A `ModelSpec` says how to build the network from hyper-parameters, how to turn a batch
of (degraded, clean) waveform segments into inputs and targets, and its loss. The
trainer does the rest (data, degradation, optimisation, checkpoints, logs). This module
does not import torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    import torch


MODEL_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
TINY = "tiny"  #: the checkpoint name of every family's tiny random-weight variant


class Hparams(BaseModel):
    """Architecture hyper-parameters; unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSpec:
    """A trainable model family.

    - `name`: what `restorekit train NAME` takes; `architecture`: stored in checkpoints.
    - `Hparams`: the architecture's hyper-parameters with defaults; `tiny` is a
      dict of overrides for a tiny random-weight variant used by tests.
    - `sample_rate`: the rate the model works at (training segments are mono at this rate).
    - `default_degrade`: the degradation preset used when `--degrade` is not given.
    - `shipped_dirs`: folders holding the plugin's shipped checkpoints (for `--init NAME`).
    """

    name: ClassVar[str] = ""
    architecture: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Hparams: ClassVar[type[Hparams]] = Hparams
    tiny: ClassVar[dict[str, Any]] = {}
    sample_rate: ClassVar[int] = 32000
    default_degrade: ClassVar[str] = "lowres-8k"
    default_lr: ClassVar[float] = 3e-4
    default_weight_decay: ClassVar[float] = 1e-2
    #: "cosine": warm-up then cosine decay over all steps. "plateau": warm-up, then the
    #: rate is halved whenever validation has not improved for 2 epochs.
    lr_schedule: ClassVar[str] = "cosine"
    #: 0: fresh (degraded, clean) pairs every step. N > 0: targets are expensive, so N
    #: training pairs are made once (and cached in RUN_DIR) and batches drawn from them.
    pool_size: ClassVar[int] = 0
    #: Where the plugin ships its trained weights (searched by checkpoint name).
    shipped_dirs: ClassVar[tuple[Path, ...]] = ()
    #: Values for hyper-parameters that checkpoints written before they existed lack (the
    #: architecture those checkpoints were trained with), when it differs from the default.
    legacy_hparams: ClassVar[dict[str, Any]] = {}
    #: Load for inference in channels-last layout: 2-D convolution networks whose CPU
    #: convolutions otherwise take PyTorch's unfolding fallback (slower, with a buffer nine
    #: times a 3x3 layer's activation); their inputs must be channels-last too.
    channels_last: ClassVar[bool] = False

    def __init__(self, hparams: Hparams | None = None) -> None:
        self.hparams = hparams if hparams is not None else self.Hparams()

    def build(self, hparams: Hparams) -> torch.nn.Module:
        raise NotImplementedError

    def load_trained(self, checkpoint: str | Path, shipped_dirs: Sequence[Path] | None = None) -> tuple[Any, Any]:
        """(network with the checkpoint's weights, the Checkpoint), after checking its architecture."""
        from restorekit import checkpoints

        ckpt = checkpoints.load(checkpoint, self.shipped_dirs if shipped_dirs is None else shipped_dirs)
        if ckpt.architecture != self.architecture:
            raise checkpoints.CheckpointError(
                f"{ckpt.path}: architecture '{ckpt.architecture}', expected '{self.architecture}'")
        config = ckpt.path.with_suffix(".json")
        try:
            hparams = self.Hparams(**self.saved_hparams(ckpt))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "hparams"
            fields = ", ".join(self.Hparams.model_fields)
            raise checkpoints.CheckpointError(
                f"{config}: hparams.{field}: {err['msg']} (got {err.get('input')!r:.60}); {self.architecture} "
                f"takes {fields}") from None
        model = self.build(hparams)
        try:
            model.load_state_dict(ckpt.tensors)
        except RuntimeError as exc:  # missing, unexpected or differently shaped tensors
            detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
            raise checkpoints.CheckpointError(
                f"{ckpt.path}: the weights do not fit the network its config ({config.name}) describes: "
                f"{detail.rstrip('.')}") from None
        return model, ckpt

    def saved_hparams(self, ckpt) -> dict[str, Any]:
        """A checkpoint's hyper-parameters for this family: `legacy_hparams` filled in; from another family on
        the same architecture (an `--init`), only those this family has (its own loss settings drop)."""
        saved = ckpt.hparams
        if ckpt.config.get("model", self.name) != self.name:
            saved = {k: v for k, v in saved.items() if k in self.Hparams.model_fields}
        return {**self.legacy_hparams, **saved}

    def load_for_inference(self, checkpoint: str | Path, device: str = "cpu") -> tuple[Any, dict]:
        """(network in eval mode on `device`, its checkpoint config), loaded once per process.

        `checkpoint` is a name or path (see `restorekit.checkpoints.resolve`), or `tiny`:
        the family's tiny variant with seeded random weights (`randomize_tiny`), for tests.
        """
        from restorekit.cache import load_once

        def factory():
            import torch

            if str(checkpoint) == TINY:
                torch.manual_seed(0)
                model = self.build(self.Hparams(**self.tiny))
                self.randomize_tiny(model)
                config: dict = {"hparams": self.Hparams(**self.tiny).model_dump()}
            else:
                model, ckpt = self.load_trained(checkpoint)
                config = {**ckpt.config, "hparams": self.saved_hparams(ckpt)}  # what the network was built with
            model = model.eval().to(device)
            return (model.to(memory_format=torch.channels_last) if self.channels_last else model), config

        return load_once((self.name, str(checkpoint), device), factory)

    def load_with_hparams(self, checkpoint: str | Path, device: str = "cpu") -> tuple[Any, Any, dict]:
        """(network in eval mode, the hyper-parameters it was built with as this family's `Hparams`, its
        checkpoint config)."""
        model, config = self.load_for_inference(checkpoint, device)
        return model, self.Hparams(**config["hparams"]), config

    def randomize_tiny(self, model: torch.nn.Module) -> None:
        """Make a freshly built tiny model do something visible (default: leave its initialisation)."""

    def make_batch(self, degraded: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) from (batch, 1, frames) degraded and clean segments."""
        return degraded, clean

    def loss(self, model: torch.nn.Module, inputs: torch.Tensor,
             targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss to minimise and its named components (for the log)."""
        raise NotImplementedError


def check_model_spec(cls: Any) -> list[str]:
    """Reasons a class is not a valid model family (empty when it is)."""
    from restorekit.contracts import check_contract

    problems = check_contract(cls, ModelSpec, "restorekit.training.spec.ModelSpec", name_attr="name",
                              pattern=MODEL_NAME_PATTERN, example="unet", params_attr="Hparams",
                              params_base=Hparams, params_name="restorekit.training.spec.Hparams", summary=False)
    if problems and "is not a subclass" in problems[0]:
        return problems
    if cls.lr_schedule not in ("cosine", "plateau"):
        problems.append(f"{cls.__name__}.lr_schedule must be 'cosine' or 'plateau', got {cls.lr_schedule!r}")
    if not cls.architecture:
        problems.append(f"{cls.__name__}.architecture must be set (it is stored in checkpoints)")
    return problems
