"""Shared pieces of the CLI commands (kept apart from cli.py so command modules can import them)."""

from __future__ import annotations

import functools
import sys

import click

from restorekit.errors import RestorekitError


def handle_errors(func):
    """Print expected errors as one clean message and exit with their code (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RestorekitError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper
