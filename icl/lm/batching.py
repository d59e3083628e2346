"""Rows and batches for the prefix engines: which sequences to run and which positions to read,
length-sorted batches over a prefix cache, and the batch size (fixed, or ``auto``: a probe of
the widest rows measures what fits free device memory, halved again on out-of-memory)."""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field

import torch

from icl.errors import ICLError
from icl.lm import forward
from icl.lm.forward import logprobs_at, to_device

log = logging.getLogger(__name__)

AUTO = "auto"
# batch_size=auto: a fixed size off CUDA (CPU throughput is flat in it), else what fits free
# memory, measured on PROBE_ROWS of the widest rows, leaving a margin, and at most the cap
CPU_BATCH_SIZE = 16
PROBE_ROWS = 32
MEMORY_SHARE = 0.8
MAX_AUTO_BATCH_SIZE = 4096


@dataclass
class Row:
    """One sequence to run: a query followed by all but the last token of one option."""

    tokens: tuple[int, ...]
    # (position, target token, where the log-prob goes): ("q", example, j) or ("o", example, o, j)
    reads: list[tuple[int, int, tuple]] = field(default_factory=list)


def build_rows(requests, indices, want_query: bool) -> list[Row]:
    """Rows for examples that share a prefix; identical rows (single-token options) merge."""
    rows: dict[tuple[int, ...], Row] = {}
    for i in indices:
        req = requests[i]
        q = len(req.query)
        for o, option in enumerate(req.options or ((),)):
            full = req.query + option
            tokens = full[:-1] if option else req.query
            row = rows.setdefault(tokens, Row(tokens))
            # only the first option's row reads the query; the others start at its last token
            first = 0 if want_query and o == 0 else q - 1
            for pos in range(first, len(tokens)):
                target = pos + 1  # position pos predicts token pos + 1 of the full sequence
                if target < q and want_query and o == 0:
                    row.reads.append((pos, full[target], ("q", i, target)))
                elif q <= target < len(full):
                    row.reads.append((pos, full[target], ("o", i, o, target - q)))
    return list(rows.values())


class RowProgress:
    """Moves a progress bar as examples' rows are computed, never waiting for the device.

    On CPU a batch is computed when it returns, so the bar moves after each one. On CUDA a
    returned batch is only queued: an event recorded after it is polled (``query()`` does not
    block), and the bar moves when the device has passed it.
    """

    def __init__(self, bar, device) -> None:
        self.bar = bar
        self.cuda = torch.device(device).type == "cuda"
        self.pending: deque = deque()
        self.left: Counter = Counter()
        self.shown = 0  # examples of the current group the bar has counted

    def start(self, rows: list[Row]) -> None:
        """A new prefix group: how many rows each of its examples waits for."""
        self.left = Counter(i for row in rows if row.reads for i in examples_of(row))
        self.shown = 0

    def batch_done(self, batch: list[Row]) -> None:
        finished = 0
        for row in batch:
            for i in examples_of(row):
                self.left[i] -= 1
                finished += self.left[i] == 0
        if not self.cuda:
            self._advance(finished)
            return
        event = torch.cuda.Event()
        event.record()
        self.pending.append((event, finished))
        while self.pending and self.pending[0][0].query():
            self._advance(self.pending.popleft()[1])

    def finish(self, n_examples: int) -> None:
        """The group's results are on the host: the rest of its examples are done."""
        self.pending.clear()
        self._advance(n_examples - self.shown)

    def _advance(self, n: int) -> None:
        if n > 0:
            self.shown += n
            self.bar.update(n)


def examples_of(row: Row) -> set[int]:
    """The examples a row reads for (a merged row serves several)."""
    return {key[1] for _, _, key in row.reads}


def run_batch(model, batch: list[Row], cache, prefix_len: int, device, attention: str):
    """The reads of one batch of rows: their keys and their log-probs, still on the device."""
    width = max(len(r.tokens) for r in batch)
    ids = to_device([row.tokens + (0,) * (width - len(row.tokens)) for row in batch], device)
    # right padding: causal attention keeps pads out of every real position, no mask needed
    positions = (prefix_len + torch.arange(width, device=device)).expand(len(batch), -1)
    # looked up on the module at call time, so tests can wrap the suffix forward
    hidden = forward.forward_suffix(model.base_model, ids, positions, cache, prefix_len, attention)
    # each read position goes through the vocabulary head once, whatever it is read for
    slots: dict[tuple[int, int], int] = {}
    slot_of, targets, keys = [], [], []
    for b, row in enumerate(batch):
        for pos, target, key in row.reads:
            slot_of.append(slots.setdefault((b, pos), len(slots)))
            targets.append(target)
            keys.append(key)
    b_idx, p_idx = zip(*slots)
    chosen = hidden[to_device(b_idx, device), to_device(p_idx, device)]
    return keys, logprobs_at(model, chosen, slot_of, targets)


def run_rows(
    model,
    rows: list[Row],
    cache,
    prefix_len: int,
    batch_size: int,
    device,
    sink,
    attention: str = "copy",
    shrink: bool = False,
    progress: RowProgress | None = None,
) -> int:
    """Forward rows in length-sorted batches over the (optional) prefix cache.

    The log-probs stay on the device until every batch is queued, so the host prepares the
    next batch while the device runs this one. With ``shrink``, a batch that runs out of
    device memory is halved and retried. ``progress`` hears of each batch. Returns the batch
    size that worked.
    """
    order = sorted((r for r in rows if r.reads), key=lambda r: len(r.tokens))
    done: list[tuple[list, torch.Tensor]] = []
    start = 0
    while start < len(order):
        batch = order[start : start + batch_size]
        try:
            done.append(run_batch(model, batch, cache, prefix_len, device, attention))
        except torch.cuda.OutOfMemoryError:
            if not shrink or batch_size == 1:
                raise
        else:
            start += len(batch)
            if progress is not None:
                progress.batch_done(batch)
            continue
        batch_size //= 2  # outside the handler, so the failed batch's tensors are released
        log.warning("out of device memory: retrying with batch_size=%d", batch_size)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if done:
        values = torch.cat([v for _, v in done]).tolist()
        keys = [key for batch_keys, _ in done for key in batch_keys]
        for key, value in zip(keys, values):
            sink(key, value)
    return batch_size


def fit_batch_size(free_bytes: float, bytes_per_row: float, cap: int = MAX_AUTO_BATCH_SIZE) -> int:
    """Rows per batch that fit a share of the free memory at the measured cost per row."""
    fits = int(free_bytes * MEMORY_SHARE // max(bytes_per_row, 1.0))
    return max(1, min(fits, cap))


def auto_batch_size(model, rows: list[Row], cache, prefix_len: int, device, attention: str):
    """batch_size=auto: CPU_BATCH_SIZE off CUDA; on CUDA, from a probe of the widest rows."""
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    probe = sorted((r for r in rows if r.reads), key=lambda r: len(r.tokens))[-PROBE_ROWS:]
    if not probe:
        return CPU_BATCH_SIZE
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run_batch(model, probe, cache, prefix_len, device, attention)
    torch.cuda.synchronize(device)
    per_row = (torch.cuda.max_memory_allocated(device) - before) / len(probe)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    free = torch.cuda.mem_get_info(device)[0] + cached
    size = fit_batch_size(free, per_row)
    log.info(
        "batch_size=auto: %d rows (probe: %.2f MiB per row of %d tokens after a %d-token "
        "prefix; %.1f GiB free)",
        size,
        per_row / 2**20,
        len(probe[-1].tokens),
        prefix_len,
        free / 2**30,
    )
    return size


def check_batch_size(batch_size) -> int | str:
    """A positive integer or ``auto``; anything else fails with what is accepted."""
    if batch_size == AUTO or (
        isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0
    ):
        return batch_size
    raise ICLError(f"batch_size must be a positive integer or {AUTO!r}, not {batch_size!r}")
