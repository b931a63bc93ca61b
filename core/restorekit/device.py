"""Device selection: `auto`, `cpu`, `cuda` or `cuda:N`."""

from __future__ import annotations

import glob
import os
import re
import sys

from restorekit.errors import DeviceError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_spec(spec: str) -> str | None:
    """An error message when `spec` is not a device spelling restorekit understands."""
    if not isinstance(spec, str) or not DEVICE_PATTERN.match(spec):
        return f"device must be auto, cpu, cuda or cuda:N, got {spec!r}"
    return None


def resolve_device(spec: str = "auto") -> str:
    """The concrete torch device for `spec`; CUDA asked for where there is none is an error."""
    message = check_device_spec(spec)
    if message:
        raise DeviceError(message)
    if spec == "cpu":
        return "cpu"
    if _surely_no_gpu():
        if spec == "auto":
            return "cpu"
        raise DeviceError(f"device '{spec}' was requested but this machine has no GPU driver (no /dev/nvidia* "
                          "or /dev/kfd); use --device cpu or --device auto")
    import torch

    available = torch.cuda.is_available()
    if spec == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise DeviceError(
            f"device '{spec}' was requested but torch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
            "use --device cpu or --device auto"
        )
    if ":" in spec:
        index = int(spec.split(":")[1])
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"device '{spec}' does not exist: torch sees {count} CUDA device(s)")
    return spec


def stage_device(device: str, accepted: frozenset[str]) -> str:
    """Where a stage runs: the pipeline's device if the stage supports its type, else the CPU."""
    kind = device.split(":")[0]
    return device if kind in accepted else "cpu"


def _surely_no_gpu() -> bool:
    """True on Linux when no GPU device node exists, decided without importing torch (seconds).

    Once torch is loaded, asking it costs nothing, so it is asked instead (and tests can
    fake a GPU through it).
    """
    if "torch" in sys.modules or not sys.platform.startswith("linux"):
        return False
    return not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd") or os.path.exists("/dev/dxg"))
