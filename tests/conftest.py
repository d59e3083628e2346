"""Test-session settings: no network, one CPU thread, property tests without timing checks."""

from __future__ import annotations

import os

# tests never reach the network; set before datasets or transformers are imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# One intra-op thread (ICL_TEST_THREADS overrides): tiny models are all per-op overhead, and on
# a busy two-core runner a second thread made real-model scoring ten times slower, not faster.
os.environ.setdefault("ICL_TEST_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import compose_config  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

torch.set_num_threads(int(os.environ["ICL_TEST_THREADS"]))

settings.register_profile(
    "icl", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("icl")


@pytest.fixture(scope="session")
def compose():
    """compose(*overrides): the config icl-run would get, after icl.cli.setup() (see helpers)."""
    return compose_config


@pytest.fixture(autouse=True)
def _own_score_cache(tmp_path_factory, monkeypatch):
    """Each test its own cross-process score cache: no test reads another's (or a user's)
    scores, and a test that counts forward passes counts them all."""
    monkeypatch.setenv("ICL_SCORE_CACHE_DIR", str(tmp_path_factory.mktemp("score-cache")))
