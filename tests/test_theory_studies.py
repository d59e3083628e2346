"""The theory studies through icl-study: typed configs, their files, finding a finished study,
refusing another config's folder, and failing before any work on bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest
from helpers import CONF_DIR

import icl.cli
import icl.theory.bayes_early_ascent as bayes
from icl.errors import ICLError
from icl.theory import BUILTIN, THEORIES, get_theory
from icl.theory.config import SCHEMAS

# the smallest bayes_early_ascent run: two values of k, few trials
TINY_BAYES = ["dims=[1]", "ks=[0,4]", "trials=200"]


def test_every_theory_study_has_its_config_quick_config_and_schema():
    assert set(BUILTIN) == set(SCHEMAS)
    for name in BUILTIN:
        assert get_theory(name).name == name
        for quick in (False, True):
            cfg = icl.cli.theory_config(name, quick, [])
            assert isinstance(cfg, SCHEMAS[name])
    assert {p.stem for p in (CONF_DIR / "theory").glob("*.yaml")} == {
        n + q for n in BUILTIN for q in ("", "_quick")
    }


def test_a_misspelt_key_fails_when_the_config_is_composed():
    with pytest.raises(ICLError, match="icl_as_gd: .*stepz"):
        icl.cli.theory_config("icl_as_gd", True, ["train.stepz=3"])
    with pytest.raises(ICLError, match="bayes_early_ascent: .*trials"):
        icl.cli.theory_config("bayes_early_ascent", False, ["trials=many"])


def test_the_quick_theory_studies_are_in_the_study_list(capsys):
    with pytest.raises(SystemExit):
        icl.cli.study(["--help"])
    out = capsys.readouterr().out
    assert "icl_as_gd" in out and "bayes_early_ascent" in out and "shots_curve" in out


def test_a_theory_study_writes_its_files_then_is_found_finished(tmp_path, capsys, monkeypatch):
    root = tmp_path / "bayes"
    icl.cli.study(["bayes_early_ascent", "--quick", "--dir", str(root)])  # the quick form, as is
    out = capsys.readouterr().out
    assert "peaks:" in out and f"-> {root}" in out
    for name in ("risk.csv", "risk.md", "peaks.md", "peaks.csv", "config.yaml", "metrics.json",
                 "risk_vs_k.png", "theory_vs_shots.png"):  # fmt: skip
        assert (root / name).is_file(), name
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["study"] == "bayes_early_ascent" and metrics["config"]["trials"] == 4000
    assert metrics["tables"] == ["risk"] and "d1_gold_peak_risk" in metrics
    # a second run of the same config reports the stored tables without computing again
    seen = []
    quiet(
        monkeypatch, compute=None, report=lambda root, frames, cfg: seen.append(frames) or ("", [])
    )
    icl.cli.study(["bayes_early_ascent", "--quick", "--dir", str(root)])
    assert list(seen[-1]) == ["risk"] and len(seen[-1]["risk"]) == 2 * 2 * 8  # d, labels, k
    icl.cli.study(["bayes_early_ascent", "--dir", str(root), "--report-only"])
    assert len(seen) == 2


def quiet(monkeypatch, **fields):
    """bayes_early_ascent with some fields replaced (e.g. a report that draws nothing)."""
    theory = get_theory("bayes_early_ascent")
    monkeypatch.setitem(THEORIES, theory.name, dataclasses.replace(theory, **fields))


def test_another_config_in_the_folder_is_refused_unless_overwrite(tmp_path, capsys, monkeypatch):
    quiet(monkeypatch, report=lambda root, frames, cfg: ("", []))
    root = tmp_path / "bayes"
    icl.cli.study(["bayes_early_ascent", "--quick", "--dir", str(root), *TINY_BAYES])
    with pytest.raises(SystemExit) as exit_:
        icl.cli.study(["bayes_early_ascent", "--quick", "--dir", str(root), *TINY_BAYES,
                       "trials=300"])  # fmt: skip
    assert exit_.value.code == 2
    assert "config.trials: 200 there, 300 here" in capsys.readouterr().err
    icl.cli.study(["bayes_early_ascent", "--quick", "--dir", str(root), *TINY_BAYES,
                   "trials=300", "overwrite=true"])  # fmt: skip
    assert json.loads((root / "metrics.json").read_text())["config"]["trials"] == 300


def test_a_missing_real_model_curve_stops_the_study_before_it_computes(tmp_path, capsys):
    root = tmp_path / "bayes"
    with pytest.raises(SystemExit):
        icl.cli.study(["bayes_early_ascent", "--quick", "--dir", str(root), *TINY_BAYES,
                       f"shots_csv={tmp_path / 'none.csv'}"])  # fmt: skip
    err = capsys.readouterr().err
    assert "no shots table" in err and "icl-study shots_curve" in err
    assert not (root / "metrics.json").exists()


def test_the_shots_table_is_found_under_results_first(tmp_path, monkeypatch):
    cfg = icl.cli.theory_config("bayes_early_ascent", True, [])
    committed = bayes.shots_table_path(cfg)
    assert committed.parts[-3:] == ("experiments", "shots_curve", "shots.csv")
    monkeypatch.chdir(tmp_path)
    rerun = tmp_path / "results" / "shots_curve" / "shots.csv"
    rerun.parent.mkdir(parents=True)
    rerun.write_text(committed.read_text())
    assert bayes.shots_table_path(cfg).resolve() == rerun.resolve()


def test_bad_settings_fail_before_any_work():
    for override, message in (
        ("labels=[gold,shuffled]", "labels has 'shuffled'"),
        ("weight_group=4", "weight_group=4: the prior in d=1 has groups 1-2"),
        ("sigma_w=0", "sigma_w=0"),
    ):
        cfg = icl.cli.theory_config("bayes_early_ascent", True, [override])
        with pytest.raises(ICLError, match=message):
            get_theory("bayes_early_ascent").check(cfg)
    cfg = icl.cli.theory_config("icl_as_gd", True, ["n_context=0"])
    with pytest.raises(ICLError, match="n_context=0"):
        get_theory("icl_as_gd").check(cfg)


def test_the_quick_icl_as_gd_study_runs_end_to_end(tmp_path, capsys):
    root = tmp_path / "gd"
    icl.cli.study(["icl_as_gd", "--quick", "--dir", str(root)])  # the quick form, as is
    assert "comparison:" in capsys.readouterr().out
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["construction_error"] < 1e-10
    assert metrics["trained_loss"] < 1.1 * metrics["gd_loss"]  # near GD even in 200 steps
    assert set(metrics["tables"]) == {"construction", "training", "depth", "input_scale"}
    for name in ("comparison.md", "depth.md", "input_scale.md", "training.png", "extensions.png"):
        assert (root / name).is_file(), name
