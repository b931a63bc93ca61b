"""Built-in restorekit stages. Each module is a plugin registered through the `restorekit`
entry-point group in pyproject.toml, exactly like a third-party plugin package."""

from pathlib import Path

#: The one place shipped model weights live (safetensors + JSON each; docs/models.md).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
