"""Metrics against scikit-learn, including classes that are never predicted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score

from icl.metrics import accuracy, classification_metrics, macro_f1, prediction_shares


@st.composite
def predictions(draw):
    """Class indices of predictions and gold labels of equal length (any class may be absent)."""
    n_classes = draw(st.integers(2, 6))
    n = draw(st.integers(1, 60))
    labels = st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n)
    return draw(labels), draw(labels), n_classes


@given(case=predictions())
def test_macro_f1_and_accuracy_match_scikit_learn(case):
    pred, gold, n_classes = case
    expected_f1 = f1_score(
        gold, pred, labels=list(range(n_classes)), average="macro", zero_division=0
    )
    assert macro_f1(pred, gold, n_classes) == pytest.approx(expected_f1, abs=1e-12)
    assert accuracy(pred, gold) == pytest.approx(accuracy_score(gold, pred), abs=1e-12)


def test_macro_f1_counts_a_never_predicted_class_as_zero():
    gold = [0, 0, 1, 1, 2, 2]
    pred = [0, 0, 1, 1, 1, 1]  # class 2 never predicted
    expected = f1_score(gold, pred, labels=[0, 1, 2], average="macro", zero_division=0)
    assert macro_f1(pred, gold, 3) == pytest.approx(expected)
    assert macro_f1(pred, gold, 3) == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_classification_metrics_report_shares_and_majority_baseline():
    metrics = classification_metrics([1, 1, 1, 0], [0, 1, 1, 1], ["neg", "pos"])
    assert metrics["accuracy"] == 0.5
    assert metrics["n"] == 4
    assert metrics["prediction_share"] == {"neg": 0.25, "pos": 0.75}
    assert metrics["majority_baseline"] == 0.75
    assert prediction_shares([2, 2], 3) == [0.0, 0.0, 1.0]
