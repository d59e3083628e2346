"""Study tables and reports (icl/studies/) on synthetic run tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import CONF_DIR

from icl import studies
from icl.errors import ICLError
from icl.studies import reports, tables


def runs_frame(rows):
    frame = pd.DataFrame(rows)
    for column, value in {"model": "m", "template": "t", "seed": 1}.items():
        if column not in frame:
            frame[column] = value
    return frame


def test_every_study_has_its_experiment_and_quick_configs():
    for name in studies.STUDIES:
        assert (CONF_DIR / "experiment" / f"{name}.yaml").exists()
        if name != "demo":
            assert (CONF_DIR / "experiment" / f"{name}_quick.yaml").exists()


def test_sweep_commands_add_the_zero_shot_sweep_and_split_per_task():
    study = studies.get_study("min2022_labels")
    labels = studies.sweep_commands(study, False, ["x=1", "demos.seed=1,2"])
    assert labels == [
        ["+experiment=min2022_labels", "x=1", "demos.seed=1,2"],
        ["+experiment=min2022_labels", "demos.k=0", "demos.labels=gold", "demos.seed=1", "x=1"],
    ]
    templates = studies.sweep_commands(studies.get_study("template_sweep"), True, [])
    assert templates == [
        ["+experiment=template_sweep_quick", "task=sst2"],
        ["+experiment=template_sweep_quick", "task=cb"],
    ]
    with pytest.raises(ICLError, match="valid names"):
        studies.get_study("nope")


def test_a_task_override_picks_the_per_task_sweeps_of_a_per_task_study():
    # passed on beside each sweep's own task=, it ran every sweep on rte and wrote the cells
    # into the sst2, agnews, ... folders
    study = studies.get_study("template_sweep")
    assert studies.sweep_commands(study, False, ["task=rte,cb", "eval.n_test=9"]) == [
        ["+experiment=template_sweep", "task=rte", "eval.n_test=9"],
        ["+experiment=template_sweep", "task=cb", "eval.n_test=9"],
    ]
    assert studies.sweep_commands(study, True, ["task=rte"]) == [
        ["+experiment=template_sweep_quick", "task=rte"]
    ]
    # a study that sweeps tasks in one multirun passes the override on untouched
    labels = studies.sweep_commands(studies.get_study("min2022_labels"), False, ["task=agnews"])
    assert labels[0] == ["+experiment=min2022_labels", "task=agnews"]


def test_settings_table_names_zero_shot_no_demos_and_averages_seeds():
    frame = runs_frame(
        [
            {"task": "a", "k": 0, "labels": "gold", "macro_f1": 0.5},
            {"task": "a", "k": 16, "labels": "gold", "macro_f1": 0.8, "seed": 1},
            {"task": "a", "k": 16, "labels": "gold", "macro_f1": 0.6, "seed": 2},
            {"task": "a", "k": 16, "labels": "correct_25", "macro_f1": 0.7},
        ]
    )
    table = tables.settings_table(frame).set_index("setting")
    assert list(table.index) == ["no demos", "gold", "correct_25"]
    assert table.loc["gold", "mean"] == pytest.approx(0.7)
    assert table.loc["gold", "std"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    correct = tables.correct_percent_table(frame)
    assert correct["percent"].tolist() == [25.0, 100.0]


def test_early_ascent_finds_the_dip_before_the_rise():
    curve = pd.DataFrame({"k": [0, 1, 2, 4, 8], "mean": [0.6, 0.55, 0.5, 0.58, 0.7]})
    found = tables.early_ascent(curve)
    assert found["lowest_k"] == 2 and found["first_k_above"] == 8 and found["early_ascent"]
    assert found["lowest_minus_zero_shot"] == pytest.approx(-0.1)
    never = pd.DataFrame({"k": [0, 1, 2], "mean": [0.6, 0.5, 0.55]})
    assert tables.early_ascent(never)["early_ascent"] is False  # no rise above k=0
    late = pd.DataFrame({"k": [0, 1, 2], "mean": [0.5, 0.6, 0.4]})
    assert tables.early_ascent(late)["early_ascent"] is False  # the drop comes after the rise
    flat = pd.DataFrame({"k": [0, 1], "mean": [0.5, 0.7]})
    assert tables.early_ascent(flat)["lowest_k"] is None


def test_shots_table_gives_t_intervals_and_starts_every_setting_at_k0():
    rows = [{"task": "a", "k": 0, "labels": "gold", "accuracy": 0.5, "seed": 1}]
    rows += [
        {"task": "a", "k": 4, "labels": lab, "accuracy": acc, "seed": s}
        for lab in ("gold", "random")
        for s, acc in enumerate([0.6, 0.7, 0.8], 1)
    ]
    shots = tables.shots_table(runs_frame(rows))
    assert set(shots[shots["k"] == 0]["labels"]) == {"gold", "random"}
    row = shots[(shots["k"] == 4) & (shots["labels"] == "gold")].iloc[0]
    assert row["mean"] == pytest.approx(0.7)
    assert row["ci95"] == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)


def test_label_words_table_uses_gao_notation_and_order():
    rows = [
        {"label_words": w, "k": k, "accuracy": 0.5 + 0.1 * i, "seed": s}
        for i, w in enumerate(["dog/cat", "terrible/great", "great/terrible"])
        for k in (0, 16)
        for s in (1, 2)
    ]
    table = tables.label_words_table(runs_frame(rows))
    assert list(table.index) == ["great/terrible", "cat/dog", "terrible/great"]
    assert list(table.columns) == ["k=0", "k=16"]
    assert table.loc["great/terrible", "k=0"] == "60.0 ± 0.0"


def test_perplexity_correlation_is_spearman_and_marks_the_lowest():
    ppl = [10, 20, 30, 40, 50]
    rows = [
        {
            "task": "a",
            "template": f"t{i}",
            "accuracy": acc,
            "macro_f1": acc,
            "zero_shot_perplexity": p,
        }
        for i, (p, acc) in enumerate(zip(ppl, [0.9, 0.8, 0.85, 0.6, 0.5]))
    ]
    table = tables.template_table(runs_frame(rows).assign(macro_f1=0.0))
    stats = tables.perplexity_correlations(table, n_lowest=2).iloc[0]
    assert stats["spearman_rho"] == pytest.approx(-0.9)
    assert stats["lowest_ppl_templates"] == "t0, t1"
    assert stats["accuracy_lowest_ppl"] == pytest.approx(0.85)


def write_run(root, name, **metrics):
    folder = root / name
    folder.mkdir(parents=True)
    base = {"model": "m", "template": "t", "seed": 1, "n": 10, "harness_version": "x"}
    (folder / "metrics.json").write_text(json.dumps({**base, **metrics}))


def test_reports_write_tables_and_figures_for_every_kind(tmp_path):
    rng = np.random.default_rng(0)
    for task in ("a", "b"):
        write_run(tmp_path, f"{task}-k0", task=task, k=0, labels="gold", accuracy=0.5, macro_f1=0.4)
        for s in (1, 2):
            for lab in ("gold", "random", "correct_50", "no_labels", "ood_inputs"):
                for k in (1, 16):
                    acc = float(rng.uniform(0.4, 0.9))
                    write_run(
                        tmp_path, f"{task}-{lab}-{k}-{s}", task=task, k=k, labels=lab, seed=s,
                        accuracy=acc, macro_f1=acc, zero_shot_perplexity=float(rng.uniform(5, 50)),
                        template=f"t{s}{k}", label_words="bad/good",
                    )  # fmt: skip
    for kind in set(reports.REPORTS) - {"decoding"}:  # decoding: method=generate runs, below
        assert reports.tables(kind, tmp_path)
        for path in reports.figures(kind, tmp_path):
            assert path.exists() and path.stat().st_size > 1000
    assert (tmp_path / "labels_macro_f1.md").read_text().startswith("| task |")
    assert (tmp_path / "perplexity_correlation.csv").exists()


def test_every_study_reports_known_kinds():
    for study in studies.STUDIES.values():
        assert study.reports and set(study.reports) <= set(reports.REPORTS)


def test_the_decoding_report_tables_validity_and_accuracy_per_decoder(tmp_path):
    decoders = {"greedy": {}, "t07": {"temperature": 0.7}, "topp": {"top_p": 0.9}}
    for name, settings in decoders.items():
        for k in (0, 4):
            for s in (1, 2):
                write_run(
                    tmp_path, f"{name}-{k}-{s}", method="generate", task="sst2", k=k, seed=s,
                    labels="gold", decoding="greedy" if name == "greedy" else "sample",
                    temperature=settings.get("temperature", 1.0) if name != "greedy" else None,
                    top_k=0 if name != "greedy" else None, top_p=settings.get("top_p", 1.0)
                    if name != "greedy" else None, accuracy=0.5 + 0.1 * s, format_valid_rate=0.9,
                    scoring_accuracy=0.8, macro_f1=0.5,
                )  # fmt: skip
    text = reports.tables("decoding", tmp_path)
    assert "| sst2 | greedy | 90 / 65 | 90 / 65 |" in text  # accuracy: 60 and 70 over two seeds
    assert "T=0.7" in text and "top-p 0.9" in text
    (figure,) = reports.figures("decoding", tmp_path)
    assert figure.name == "decoding.png" and figure.stat().st_size > 1000


def test_the_decoding_report_needs_generation_runs(tmp_path):
    write_run(tmp_path, "a", task="sst2", k=0, labels="gold", accuracy=0.5, macro_f1=0.5)
    with pytest.raises(ICLError, match="method=generate"):
        reports.tables("decoding", tmp_path)
