"""Prediction rows: one test example's line of predictions.jsonl, as one typed record.

The runner, the rule passes, rescoring and the trackers all read and write rows through
``PredictionRow``; its JSON keys (and their order) are the file format.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from icl.scoring import PASSES

# keys present only in some rows: written when set, read as None when absent
OPTIONAL_KEYS = ("demo_scores", "predictions_by_rule")


@dataclass
class PredictionRow:
    """What was shown, what was scored and what won for one test example."""

    example_id: str
    demo_ids: list[str]
    # what each demonstration showed as its label (None: no label shown), and its gold word
    demo_label_words: list[str | None]
    demo_gold_words: list[str]
    # each demonstration's similarity to the input (retrieval, similarity orders), else None
    demo_scores: list[float] | None = field(default=None, kw_only=True)
    n_demos_dropped: int
    # per class: the label word's summed and per-token-mean log-prob, and each token's
    option_logprob: dict[str, float]
    option_logprob_mean: dict[str, float]
    option_token_logprobs: dict[str, list[float]]
    prediction: str
    prediction_index: int
    gold: str
    gold_index: int
    correct: bool
    prompt_tokens: int
    zero_shot_perplexity: float | None  # None: eval.zero_shot_perplexity=false
    kshot_perplexity: float | None
    # every rule computed: rule -> predicted class name (None in runs from before scoring.rules)
    predictions_by_rule: dict[str, str] | None = None
    # the extra passes' numbers: pass name -> {class name: value} (see icl.scoring.PASSES)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)

    # the columns a tracker's predictions table shows
    TABLE_COLUMNS: ClassVar[tuple[str, ...]] = (
        "example_id",
        "prediction",
        "gold",
        "correct",
        "zero_shot_perplexity",
        "kshot_perplexity",
    )

    def to_json(self) -> dict:
        """The predictions.jsonl line, as a dict in file order."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        for key in OPTIONAL_KEYS:
            if out[key] is None:
                del out[key]
        for name, spec in PASSES.items():
            if name in self.extra:
                out[spec.row_key] = self.extra[name]
        return out

    @classmethod
    def from_json(cls, row: dict) -> PredictionRow:
        """A row read back from predictions.jsonl (rows of older runs included)."""
        names = {f.name for f in fields(cls)} - {"extra"}
        values = {key: row.get(key) for key in names}
        extra = {name: row[spec.row_key] for name, spec in PASSES.items() if spec.row_key in row}
        return cls(**values, extra=extra)
