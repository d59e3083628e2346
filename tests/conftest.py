"""Test-session settings: no network, one CPU thread for tiny models, no timing checks."""

from __future__ import annotations

import os

# tests never reach the network; set before datasets or transformers are imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "icl", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("icl")

DEFAULT_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def torch_threads(request):
    """Tiny models run several times faster on one thread; real models get them all."""
    slow = request.node.get_closest_marker("slow") is not None
    torch.set_num_threads(DEFAULT_THREADS if slow else 1)
    yield
