"""Checkpoints: safetensors weights plus a JSON config, verified by sha256; no pickle.

A checkpoint named `NAME` is two files side by side: `NAME.safetensors` (tensors only)
and `NAME.json`:

    {"architecture": "unet1d", "hparams": {...}, "sample_rate": 32000,
     "training": {"data": "...", "command": "...", ...},
     "sha256": "<hex digest of NAME.safetensors>"}

Resolution order for a name: a path given in the pipeline, the weights shipped with the
package that asks (its own directory), then the user cache directory
(`$RESTOREKIT_CACHE`, else `$XDG_CACHE_HOME/restorekit/checkpoints`, else
`~/.cache/restorekit/checkpoints`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from restorekit.errors import RestorekitError
from restorekit.hashing import sha256_file

if TYPE_CHECKING:  # pragma: no cover
    import torch

WEIGHTS_SUFFIX = ".safetensors"
CONFIG_SUFFIX = ".json"


class CheckpointError(RestorekitError):
    """A checkpoint is missing, incomplete or corrupt."""


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: where it is, its config, and its tensors (on the CPU)."""

    path: Path
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def architecture(self) -> str:
        return self.config["architecture"]

    @property
    def hparams(self) -> dict[str, Any]:
        return self.config.get("hparams", {})


def cache_dir() -> Path:
    """The user cache directory for checkpoints."""
    if os.environ.get("RESTOREKIT_CACHE"):
        return Path(os.environ["RESTOREKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "restorekit" / "checkpoints"


def _weights_path(path: Path) -> Path:
    return path if path.suffix == WEIGHTS_SUFFIX else path.with_name(path.name + WEIGHTS_SUFFIX)


def resolve(name_or_path: str | Path, shipped_dirs: Sequence[Path] = ()) -> Path:
    """The `.safetensors` file for a path or a checkpoint name; CheckpointError listing where it looked."""
    given = Path(name_or_path)
    candidates = []
    if given.suffix == WEIGHTS_SUFFIX or given.parent != Path("."):
        candidates.append(_weights_path(given))
    else:
        candidates += [_weights_path(d / given.name) for d in shipped_dirs]
        candidates.append(_weights_path(cache_dir() / given.name))
        candidates.append(_weights_path(given))
    for c in candidates:
        if c.is_file():
            return c
    looked = "\n  ".join(str(c) for c in candidates)
    raise CheckpointError(
        f"checkpoint '{name_or_path}' not found; looked in:\n  {looked}\n"
        f"Give a path to a .safetensors file (with its .json beside it), or put both files in {cache_dir()}"
    )


def load(name_or_path: str | Path, shipped_dirs: Sequence[Path] = ()) -> Checkpoint:
    """Resolve, verify (sha256) and load a checkpoint's tensors on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = resolve(name_or_path, shipped_dirs)
    config_path = weights.with_suffix(CONFIG_SUFFIX)
    if not config_path.is_file():
        raise CheckpointError(f"{weights}: its config {config_path.name} is missing beside it")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path}: not a readable JSON config ({exc})") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: the config must be a JSON object, got {type(config).__name__}")
    for key in ("architecture", "sha256"):
        if not isinstance(config.get(key), str):
            raise CheckpointError(f"{config_path}: the config needs '{key}' as a string")
    if not isinstance(config.get("hparams", {}), dict):
        raise CheckpointError(f"{config_path}: 'hparams' must be a JSON object of hyper-parameters")
    digest = sha256_file(weights)
    if digest != config["sha256"]:
        raise CheckpointError(
            f"{weights}: corrupt or replaced: sha256 {digest[:12]}… does not match the config's "
            f"{str(config['sha256'])[:12]}…; download or copy the checkpoint again"
        )
    try:
        tensors = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from exc
    return Checkpoint(weights, config, tensors)


def save(path: str | Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write `path`.safetensors and its .json (with the weights' sha256); returns the weights path."""
    from safetensors.torch import save_file

    weights = _weights_path(Path(path))
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(weights.name + ".part")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, weights)
    config = {**config, "sha256": sha256_file(weights)}
    config_path = weights.with_suffix(CONFIG_SUFFIX)
    tmp_cfg = config_path.with_name(config_path.name + ".part")
    tmp_cfg.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp_cfg, config_path)
    return weights
