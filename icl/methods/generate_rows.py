"""The rows and metrics of ``method=generate``: each answer as written and as mapped to a class,
and validity, accuracy and speed over a cell."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np

from icl.metrics import macro_f1, majority_share

INVALID = "invalid"


@dataclass
class GenerationRow:
    """One test example: its demonstrations, its answers and what they were mapped to."""

    example_id: str
    demo_ids: list[str]
    demo_label_words: list[str | None]
    demo_gold_words: list[str]
    n_demos_dropped: int
    # each demonstration's similarity to the input (retrieval, similarity orders): written then
    demo_scores: list[float] | None = None
    # one per answer drawn: {"text", "answer", "tokens", "class" (a class name or None), "valid"}
    generations: list[dict] = field(default_factory=list)
    # the first answer's class (None: not a label word), and the majority over valid answers
    prediction: str | None = None
    prediction_index: int | None = None
    vote: str | None = None
    gold: str = ""
    gold_index: int = -1
    correct: bool = False
    # the label-word scoring prediction on the same prompt
    scoring_prediction: str | None = None
    prompt_tokens: int = 0

    TABLE_COLUMNS: ClassVar[tuple[str, ...]] = (
        "example_id",
        "prediction",
        "gold",
        "correct",
        "scoring_prediction",
    )

    def to_json(self) -> dict:
        out = asdict(self)
        if out["demo_scores"] is None:  # rows without retrieval keep their keys
            del out["demo_scores"]
        return out

    @classmethod
    def from_json(cls, row: dict) -> GenerationRow:
        return cls(**row)


def majority(classes: list[int | None]) -> int | None:
    """The most frequent valid class (ties: the lower index); None when none is valid."""
    valid = Counter(c for c in classes if c is not None)
    if not valid:
        return None
    top = max(valid.values())
    return min(c for c, n in valid.items() if n == top)


def generation_metrics(rows: list[GenerationRow], names: list[str], scoring: list[int]) -> dict:
    """Validity, accuracy (an invalid answer counts wrong), macro-F1, shares, voting."""
    gold = [r.gold_index for r in rows]
    # an invalid answer (-1) is wrong for every class: it lowers recall, never precision
    first = [-1 if r.prediction_index is None else r.prediction_index for r in rows]
    metrics = {
        "n": len(rows),
        "macro_f1": macro_f1(first, gold, len(names)),
        "majority_baseline": majority_share(gold, len(names)),
    }
    drawn = [(g, names.index(a["class"]) if a["valid"] else None) for r, g in zip(rows, gold)
             for a in r.generations]  # fmt: skip
    valid = [(g, c) for g, c in drawn if c is not None]
    metrics["accuracy"] = float(np.mean([c == g for g, c in drawn]))
    metrics["format_valid_rate"] = len(valid) / len(drawn)
    metrics["accuracy_valid"] = float(np.mean([c == g for g, c in valid])) if valid else None
    shares = Counter(names[c] if c is not None else INVALID for _, c in drawn)
    metrics["prediction_share"] = {n: shares[n] / len(drawn) for n in [*names, INVALID]}
    if any(len(r.generations) > 1 for r in rows):
        votes = [names.index(r.vote) if r.vote is not None else -1 for r in rows]
        metrics["vote_accuracy"] = float(np.mean([v == g for v, g in zip(votes, gold)]))
    metrics["scoring_accuracy"] = float(np.mean([s == g for s, g in zip(scoring, gold)]))
    return metrics
