"""The Hugging Face hub at the edge: find out fast whether it can be reached."""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

from icl.errors import ICLError


class HubUnavailable(ICLError):
    """The hub cannot be reached and the thing asked for is not cached locally."""


def hub_forced_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 3.0) -> bool:
    """One DNS lookup and TCP connect, so an offline machine fails in seconds, not retries."""
    if hub_forced_offline():
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def require_hub(what: str, offline_hint: str) -> None:
    """Fail in seconds when the hub is unreachable, instead of after minutes of retries.

    With HF_HUB_OFFLINE=1 the caller goes on: the libraries then load cached copies only.
    """
    if hub_forced_offline() or hub_reachable():
        return
    raise HubUnavailable(
        f"cannot reach the Hugging Face hub to load {what}. {offline_hint} "
        f"(If it is in your local Hugging Face cache, set HF_HUB_OFFLINE=1 to load that copy.)"
    )
