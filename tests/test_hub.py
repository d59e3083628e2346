"""Hub-backed tasks and models fail fast offline, pointing at what works without a network."""

from __future__ import annotations

import pytest
from helpers import run_config

import icl.hub
from icl.data import load_pools
from icl.errors import ICLError
from icl.lm.loading import load_language_model

MISSING_REPO = "icl-tests/no-such-repo"  # never in any cache


@pytest.mark.parametrize(
    ("hub_task", "local_twin"),
    [("sst2_hub", "sst2"), ("agnews_hub", "agnews"), ("rte_hub", "rte"), ("cb_hub", "cb")],
)
def test_hub_task_offline_names_its_local_twin(monkeypatch, hub_task, local_twin):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = run_config(f"task={hub_task}", f"task.dataset.path={MISSING_REPO}").task
    with pytest.raises(ICLError, match=f"task={local_twin}\\b"):
        load_pools(task)


def test_hub_model_offline_names_the_installed_models(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = run_config("model=hub", f"model.path={MISSING_REPO}").model
    with pytest.raises(ICLError, match="model=smollm2-135m"):
        load_language_model(model)


def test_unreachable_hub_fails_at_once_unless_forced_offline(monkeypatch):
    monkeypatch.setattr(icl.hub, "hub_reachable", lambda *args, **kwargs: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(icl.hub.HubUnavailable, match="use this instead"):
        icl.hub.require_hub("a thing", "use this instead")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    icl.hub.require_hub("a thing", "use this instead")  # cached copies may still load
