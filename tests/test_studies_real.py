"""Each ready-made study in its quick form, end to end with the real SmolLM2 (CI runs these)."""

from __future__ import annotations

import json

import pytest
from test_cli import ok, run_script

# study: (cells its quick form runs, files its report writes)
QUICK = {
    "min2022_labels": (
        11 * 2 + 1,
        ["labels_macro_f1.md", "labels_gold_vs_random.png", "labels_ablations.png",
         "labels_correct_share.png"],
    ),
    "template_sweep": (13 + 12, ["perplexity_correlation.md", "templates_perplexity.png"]),
    "label_words": (5 * 2 * 2, ["label_words.md", "label_words.png"]),
    "shots_curve": (4 * 2 * 2, ["shots.md", "early_ascent.md", "shots_accuracy.png"]),
    "decoding": (2 * 2, ["decoding.md", "decoding_valid_accuracy.md", "decoding.png"]),
    # prompt-based fine-tuning and ICL for 2 label-word pairs, the head, zero-shot for 2 pairs
    "finetune_vs_icl": (2 + 1 + 2 + 2, ["finetune_vs_icl.md", "finetune_vs_icl_smollm2-135m.png"]),
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


@pytest.mark.slow
def test_quick_selection_study_retrieves_and_chats_with_smollm2_and_gemma(tmp_path):
    out = tmp_path / "selection"
    ok(run_script("icl-study", "selection", "--quick", "--dir", str(out), cwd=tmp_path,
                  timeout=2400))  # fmt: skip
    metrics = [json.loads(p.read_text()) for p in out.rglob("metrics.json")]
    # SmolLM2: 2 formats x 3 selections x 2 label settings, and k=0 in each format; Gemma-3:
    # plain only (no chat template), 3 x 2, and k=0
    assert len(metrics) == 12 + 2 + 6 + 1
    assert {(m["model"], m.get("format", "plain")) for m in metrics} == {
        ("smollm2-135m", "plain"),
        ("smollm2-135m", "chat"),
        ("gemma3-270m", "plain"),
    }
    rows = [json.loads(line) for p in out.rglob("predictions.jsonl")
            if "selection=knn" in str(p) for line in p.read_text().splitlines()]  # fmt: skip
    assert rows and all(len(r["demo_scores"]) == len(r["demo_ids"]) == 4 for r in rows)
    for file in ("selection_accuracy.md", "selection_accuracy.png", "effects.md"):
        assert (out / file).stat().st_size > 100, file
