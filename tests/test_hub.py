"""Hub-backed tasks and models fail fast offline, pointing at what works without a network; a
hub target and draft pair decodes from a hub cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_config

import icl.hub
from icl import results
from icl.data import load_pools
from icl.errors import ICLError
from icl.lm.loading import load_language_model
from icl.lm.tiny import tiny_model_and_tokenizer

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


def fake_hub_cache(root: Path, repos: dict[str, int]) -> Path:
    """A Hugging Face hub cache holding tiny models under repo ids (what a download leaves)."""
    for repo, seed in repos.items():
        commit = f"{seed + 1:040x}"
        folder = root / ("models--" + repo.replace("/", "--"))
        model, tokenizer = tiny_model_and_tokenizer("llama", seed=seed)
        model.save_pretrained(folder / "snapshots" / commit)
        tokenizer.save_pretrained(folder / "snapshots" / commit)
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text(commit)
    return root


def test_a_hub_target_and_draft_pair_decodes_speculatively(tmp_path):
    """model=hub with a hub draft (a 1.7B target with a 135M draft, for users online) on tiny
    models in a hub cache: loaded by repo id, tokenizers checked, greedy answers unchanged."""
    target, draft = "icl-tests/tiny-target", "icl-tests/tiny-draft"
    cache = fake_hub_cache(tmp_path / "hub", {target: 0, draft: 1})
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    sweep = tmp_path / "sweep"
    command = [
        sys.executable, "-c", "import icl.cli; icl.cli.run()", "-m", "task=sst2", "model=hub",
        f"model.path={target}", "method=generate", "+model@decoding.draft=hub",
        f"decoding.draft.path={draft}", "decoding.speculative=none,draft", "eval.n_test=4",
        "demos.k=2", "eval.progress=false", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    cells = {}
    for path in sweep.rglob("metrics.json"):
        metrics = json.loads(path.read_text())
        cells[metrics["speculative"]] = (metrics, results.read_predictions(path.parent))
    (plain, plain_rows), (fast, fast_rows) = cells["none"], cells["draft"]
    assert fast["model"] == plain["model"] == target and fast["draft_model"] == draft
    assert fast["drafted_tokens"] > 0 and "acceptance_rate" in fast
    assert [r["generations"] for r in fast_rows] == [r["generations"] for r in plain_rows]
