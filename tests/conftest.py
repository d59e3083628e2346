"""Test-session settings: no network, and property tests that never check timing."""

from __future__ import annotations

import os

# tests never reach the network; set before datasets or transformers are imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "icl", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("icl")
