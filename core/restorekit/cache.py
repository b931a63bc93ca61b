"""A process-wide cache so each model loads once per process and device."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

_cache: dict[Hashable, Any] = {}
_lock = threading.Lock()


def load_once(key: Hashable, factory: Callable[[], T]) -> T:
    """Return the cached value for `key`, calling `factory()` the first time only."""
    with _lock:
        if key in _cache:
            return _cache[key]
    value = factory()
    with _lock:
        return _cache.setdefault(key, value)


def clear() -> None:
    """Forget every cached value (tests use this)."""
    with _lock:
        _cache.clear()
