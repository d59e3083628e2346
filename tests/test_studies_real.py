"""Each ready-made study in its quick form, end to end with the real SmolLM2 (CI runs these)."""

from __future__ import annotations

import json

import pytest
from test_cli import ok, run_script

# study: (cells its quick form runs, files its report writes)
QUICK = {
    "min2022_labels": (
        2 * 11 * 2 + 2,
        ["labels_macro_f1.md", "labels_gold_vs_random.png", "labels_ablations.png",
         "labels_correct_share.png"],
    ),
    "template_sweep": (13 + 12, ["perplexity_correlation.md", "templates_perplexity.png"]),
    "label_words": (5 * 2 * 2, ["label_words.md", "label_words.png"]),
    "shots_curve": (11 * 2 * 2, ["shots.md", "early_ascent.md", "shots_accuracy.png"]),
    "decoding": (2 * 2, ["decoding.md", "decoding_valid_accuracy.md", "decoding.png"]),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(QUICK))
def test_quick_study_runs_to_its_tables_and_figures(name, tmp_path):
    out = tmp_path / name
    # a quick study takes minutes; a busy CI machine can stretch that (no timing is tested)
    ok(run_script("icl-study", name, "--quick", "--dir", str(out), cwd=tmp_path, timeout=2400))
    cells, files = QUICK[name]
    metrics = [json.loads(p.read_text()) for p in out.rglob("metrics.json")]
    assert len(metrics) == cells
    assert {m["model"] for m in metrics} == {"smollm2-135m"}
    for file in files:
        assert (out / file).stat().st_size > 100, file
