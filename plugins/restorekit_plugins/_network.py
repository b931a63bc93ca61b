"""Downloading model weights politely: the offline settings, a bounded reachability probe, the
progress-bar rule and the error a stage raises when weights can be neither found nor fetched.

Shared by `separate.demucs` (torch hub cache) and `generate.musicgen` (Hugging Face cache), so
both behave the same way: `RESTOREKIT_OFFLINE=1` (or `HF_HUB_OFFLINE=1`) forbids downloads
outright; otherwise the download host is probed once per process and host with an HTTPS HEAD
request of at most PROBE_TIMEOUT_S (3 s), so an offline machine loses 3 s at most, once, and
the stage fails with one line saying what is missing and where it looked.

Imports nothing heavy.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable

from restorekit.errors import StageError

log = logging.getLogger("restorekit")

OFFLINE_ENV = "RESTOREKIT_OFFLINE"
OFFLINE_ENVS = (OFFLINE_ENV, "HF_HUB_OFFLINE")  # either one forbids downloads
PROBE_TIMEOUT_S = 3.0  # connect (and name lookup) to the download host; the probe runs once per process
DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation while downloading: a stalled transfer fails, not hangs


class WeightsUnavailable(StageError):
    """The weights of a model are not on this machine and cannot be downloaded.

    `short` says why in a few words (for one-line warnings and the manifest's notes), `fix`
    how to get them (a command or where to look).
    """

    def __init__(self, message: str, short: str = "weights unavailable", fix: str | None = None):
        super().__init__(message)
        self.short = short
        self.fix = fix or "see docs/stages/"


def offline_setting() -> str | None:
    """The environment variable that forbids downloads (RESTOREKIT_OFFLINE, HF_HUB_OFFLINE), if set."""
    for name in OFFLINE_ENVS:
        if os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off"):
            return name
    return None


_probe_results: dict[str, str | None] = {}  # host -> why unreachable, or None; once per process


def reset_probes() -> None:
    """Forget this process's probe results (for tests; a new process starts clean)."""
    _probe_results.clear()


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why `url` cannot be fetched now (a few words), or None when its host answers an HTTPS HEAD
    request. At most `timeout` seconds in all (name lookup included, which has no timeout of its
    own: the request runs in a daemon thread), once per process and host. Goes through the
    HTTPS proxy when one is configured, as the download does."""
    import urllib.parse

    host = urllib.parse.urlsplit(url).hostname or url
    if host in _probe_results:
        return _probe_results[host]
    import urllib.error
    import urllib.request

    result: list[str | None] = []

    def head() -> None:
        try:
            request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "restorekit"})
            with urllib.request.urlopen(request, timeout=timeout):
                result.append(None)
        except urllib.error.HTTPError as exc:  # the host answered: only a missing file is a problem
            result.append(None if exc.code < 500 and exc.code != 407 else f"{host} answered HTTP {exc.code}")
        except (OSError, ValueError) as exc:  # URLError, timeouts, TLS errors
            result.append(f"cannot reach {host} ({getattr(exc, 'reason', exc)})")

    thread = threading.Thread(target=head, daemon=True)
    thread.start()
    thread.join(timeout)
    reason = result[0] if result else f"no answer from {host} within {timeout:g} s"
    _probe_results[host] = reason
    return reason


def offline_reason(url: str, probe_fn: Callable[[str], str | None] | None = None) -> tuple[str, str] | None:
    """(long, short) reason why downloading `url` is impossible now, or None when its host answers.

    The offline settings first (no network touched), then `probe_fn` (default `probe`)."""
    setting = offline_setting()
    if setting:
        return f"offline: {setting} is set", f"offline: {setting} set"
    reason = (probe_fn or probe)(url)
    return (f"offline: {reason}", "no network") if reason else None


def show_progress() -> bool:
    """A progress bar on a terminal, unless logging is quieter than warnings (restorekit -q)."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and log.isEnabledFor(logging.WARNING)
