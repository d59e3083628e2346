"""The method axis: the registry, the method in every cell's identity, and a study with no
language model and no task (a synthetic method registered here) from icl-run to icl-plot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from helpers import CountingLoader, compose_config, run_config

import icl
import icl.cli
from icl import results
from icl.errors import ICLError
from icl.identity import CellIdentity
from icl.methods import METHODS, CellOutput, Method, get_method, register
from icl.runner import run_cell

SMALL = ("task=sst2", "model=tiny-llama", "eval.n_test=4", "demos.k=1")


@dataclass
class EstimateRow:
    """One trial: the mean of k draws against the true mean."""

    trial: int
    estimate: float
    squared_error: float
    TABLE_COLUMNS: ClassVar[tuple[str, ...]] = ("trial", "squared_error")

    def to_json(self) -> dict:
        return {"trial": self.trial, "estimate": self.estimate, "squared_error": self.squared_error}

    @classmethod
    def from_json(cls, row: dict) -> EstimateRow:
        return cls(**row)


def estimate_identity(cfg) -> CellIdentity:
    return CellIdentity(
        method="estimate", k=cfg.demos.k, seed=cfg.demos.seed, harness_version=icl.__version__
    )


def estimate_plan(cfg, identity):
    if cfg.demos.k < 1:
        raise ICLError("the estimate method needs demos.k >= 1 draws")
    return {"k": cfg.demos.k, "seed": cfg.demos.seed, "trials": 50}


def estimate_run(plan, models) -> CellOutput:
    """Estimate a normal mean from k draws, in many seeded trials: the error falls as 1/k."""
    rng = np.random.default_rng(plan["seed"])
    draws = rng.normal(1.0, 1.0, size=(plan["trials"], plan["k"]))
    rows = [
        EstimateRow(i, float(d.mean()), float((d.mean() - 1.0) ** 2)) for i, d in enumerate(draws)
    ]
    return CellOutput(rows, {"mse": float(np.mean([r.squared_error for r in rows]))})


@pytest.fixture
def estimate():
    """A synthetic method with no model and no task, registered for one test."""
    method = register(
        Method(
            name="estimate",
            identity=estimate_identity,
            plan=estimate_plan,
            run=estimate_run,
            row_type=EstimateRow,
            summary_metrics=("mse",),
            describe=lambda m: f"k={m['k']}: mse {m['mse']:.3f}",
        )
    )
    yield method
    del METHODS["estimate"]


def test_the_default_method_is_score_and_it_names_every_cell(tmp_path):
    cfg = run_config(*SMALL, out_dir=tmp_path)
    assert cfg.method.name == "score"
    metrics = run_cell(cfg, load_model=CountingLoader())
    assert metrics["method"] == "score"
    assert list(metrics)[0] == "method"  # the identity comes first in metrics.json


def test_an_unknown_method_lists_the_methods():
    with pytest.raises(ICLError, match="unknown method 'nope'.*score"):
        get_method("nope")


def test_a_scoring_method_needs_a_model_and_a_task(tmp_path):
    for part in ("model", "task"):
        cfg = run_config(*SMALL, f"{part}=none", out_dir=tmp_path)
        with pytest.raises(ICLError, match=f"method 'score' needs a {part}: add {part}=NAME"):
            run_cell(cfg)


def test_a_cell_of_another_method_in_the_folder_is_not_taken_as_finished(tmp_path, estimate):
    run_cell(run_config(*SMALL, out_dir=tmp_path), load_model=CountingLoader())
    other = ("model=none", "task=none", "method.name=estimate", "demos.k=1")
    # the same k and seed, but another method: not skipped as finished, but refused
    with pytest.raises(ICLError, match="method: 'score' there, 'estimate' here"):
        run_cell(run_config(*other, out_dir=tmp_path))
    metrics = run_cell(run_config(*other, "overwrite=true", out_dir=tmp_path))
    assert metrics["method"] == "estimate" and "accuracy" not in metrics
    # and back: the scoring cell is rerun, not mistaken for the estimate cell now there
    loader = CountingLoader()
    cfg = run_config(*SMALL, "overwrite=true", out_dir=tmp_path)
    assert run_cell(cfg, load_model=loader)["method"] == "score"
    assert loader.calls == 1


def test_runs_from_before_the_method_axis_are_scoring_cells(tmp_path):
    run_cell(run_config(*SMALL, out_dir=tmp_path), load_model=CountingLoader())
    metrics = results.read_metrics(tmp_path)
    del metrics["method"]
    results.write_metrics(tmp_path, metrics)
    assert run_cell(run_config(*SMALL, out_dir=tmp_path), load_model=None) == metrics


def test_a_study_with_no_model_and_no_task_runs_collects_and_plots(tmp_path, estimate, capsys):
    """icl-run's execute, icl-collect and icl-plot on a method whose metric is not accuracy."""
    for k in (1, 4, 16):
        for seed in (1, 2):
            cfg = compose_config(
                "model=none", "task=none", "method.name=estimate", f"demos.k={k}",
                f"demos.seed={seed}",
            )  # fmt: skip
            cfg.out_dir = str(tmp_path / f"k{k}-s{seed}")
            mse = icl.cli.execute(cfg)  # the method's headline metric, for sweepers
            stored = json.loads((tmp_path / f"k{k}-s{seed}" / "metrics.json").read_text())
            assert mse == stored["mse"] and stored["task"] is None and stored["model"] is None
    icl.cli.collect([str(tmp_path)])
    table = capsys.readouterr().out
    assert "mse" in table and "±" in table
    seeds = (tmp_path / "summary_seeds.csv").read_text().splitlines()
    assert seeds[0].split(",")[:2] == ["method", "task"] and "mse_mean" in seeds[0]
    assert len(seeds) == 1 + 3  # one row per k, averaged over the two seeds
    icl.cli.plot([str(tmp_path)])
    png = tmp_path / "mse_vs_k.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        icl.cli.plot([str(tmp_path), "--metric", "accuracy"])
    assert "no metric 'accuracy'" in capsys.readouterr().err
