"""The scoring progress bar moves as batches are computed, not once a prefix group ends."""

from __future__ import annotations

from helpers import tiny_lm

from icl.lm import engines
from icl.lm.batching import Row, RowProgress
from icl.lm.requests import ScoreRequest


class RecordingBar:
    """A tqdm stand-in that keeps every update."""

    instances: list = []

    def __init__(self, total=None, desc=None, **kwargs):
        self.total, self.desc, self.updates = total, desc, []
        RecordingBar.instances.append(self)

    def update(self, n=1):
        self.updates.append(n)

    def close(self):
        pass


def test_the_bar_moves_batch_by_batch_within_one_prefix_group(monkeypatch):
    monkeypatch.setattr(engines, "tqdm", RecordingBar)
    RecordingBar.instances = []
    lm = tiny_lm()
    prefix = tuple(range(3, 40))  # one shared demonstration block: one prefix group
    requests = [
        ScoreRequest(prefix, (50 + i, 60 + i, 70 + 2 * i), ((80,), (81, 82))) for i in range(12)
    ]
    engines.score_requests(lm, requests, "prefix_shared", 4, want_query=False, progress=True)
    bar = RecordingBar.instances[-1]
    assert sum(bar.updates) == bar.total == 12
    # 24 rows in 6 batches of 4, length-sorted: the short rows (first options) of all run
    # first, and examples finish over the last three batches
    assert len(bar.updates) == 3


def test_row_progress_counts_an_example_when_its_last_row_is_done():
    bar = RecordingBar()
    tracker = RowProgress(bar, "cpu")
    rows = [
        Row((1,), [(0, 2, ("o", 0, 0, 0))]),
        Row((1, 2), [(1, 3, ("o", 0, 1, 1))]),
        # a merged row that serves two examples
        Row((5,), [(0, 6, ("o", 1, 0, 0)), (0, 6, ("o", 2, 0, 0))]),
    ]
    tracker.start(rows)
    tracker.batch_done(rows[:1])
    assert bar.updates == []  # example 0 still waits for its second row
    tracker.batch_done(rows[1:])
    assert bar.updates == [3]
    tracker.finish(4)  # a fourth example with nothing left to read (all credited by the prefix)
    assert bar.updates == [3, 1]


def test_the_bar_names_its_pass(monkeypatch):
    monkeypatch.setattr(engines, "tqdm", RecordingBar)
    RecordingBar.instances = []
    requests = [ScoreRequest((3, 4), (50 + i,), ((80,), (81,))) for i in range(3)]
    for progress in (True, "zero-shot perplexity"):
        engines.score_requests(tiny_lm(), requests, "prefix_shared", 4, False, progress)
    labels = [bar.desc for bar in RecordingBar.instances]
    assert labels == ["scoring", "zero-shot perplexity"]
