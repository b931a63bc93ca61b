"""Placeholder: this plugin module is being written (its stages are not registered yet)."""
