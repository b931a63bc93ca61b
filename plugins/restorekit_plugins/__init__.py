"""Built-in restorekit stages. Each module is a plugin registered through the `restorekit`
entry-point group in pyproject.toml, exactly like a third-party plugin package."""
