"""Decoding over a shared prefix's KV cache: plain autoregressive generation of many rows at
once, and exact speculative sampling, one sequence at a time.

The prefix (the demonstrations) is encoded once per cell and never written. ``BatchRows``
decodes many answers side by side over it: the rows' queries differ in length, so each forward
feeds every row its pending tokens padded on the right, and a 4D attention mask built from each
key's real position (pad slots hidden, sliding windows measured in real positions) makes every
row see exactly what it would see alone; a row that finishes leaves the batch. A ``Stream`` is
one sequence's state on one model (its cache and how many tokens it holds), which speculative
decoding feeds and rolls back.

Speculative sampling (Leviathan et al. 2023; Chen et al. 2023): a drafter proposes tokens with
distributions q; the target scores them all in one forward, giving p; draft token x is kept
with probability min(1, p(x) / q(x)); at the first rejection the next token is drawn from the
normalised max(0, p - q); when every draft is kept a bonus token is drawn from p after the last
one. p and q are the same warped distributions (``Sampler.probs``) plain sampling uses, so the
output is distributed exactly as the target's own samples. Drafters: another model of the same
tokenizer, or prompt lookup (the continuation of the latest earlier match of the last n tokens;
its q is a point mass).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from icl.errors import ICLError
from icl.lm.forward import cache_kwargs, expand_cache, logits_from_hidden
from icl.lm.sampling import Sampler, draw

FULL, SLIDING = "full_attention", "sliding_attention"


class Stream:
    """One sequence on one model: feed tokens, read each fed position's next-token logits."""

    def __init__(self, model, device, prefix_cache=None, prefix_len: int = 0) -> None:
        self.model, self.device = model, device
        self.cache = expand_cache(prefix_cache, 1) if prefix_cache is not None else None
        self.length = prefix_len if prefix_cache is not None else 0
        self.passes = 0

    @torch.inference_mode()
    def feed(self, tokens: list[int]) -> torch.Tensor:
        """Run ``tokens`` after what the stream holds; the float32 logits at each of them."""
        ids = torch.tensor([tokens], device=self.device)
        positions = torch.arange(self.length, self.length + len(tokens), device=self.device)
        base = self.model.base_model
        kwargs = cache_kwargs(base, self.cache) if self.cache is not None else {}
        out = base(input_ids=ids, position_ids=positions[None], use_cache=True, **kwargs)
        self.cache = getattr(out, "cache", None) or out.past_key_values
        self.length += len(tokens)
        self.passes += 1
        return logits_from_hidden(self.model, out.last_hidden_state[0]).float()

    def rollback(self, length: int) -> None:
        """Forget every token after the first ``length`` (rejected drafts)."""
        if length < self.length:
            try:
                self.cache.crop(length - self.length)
            except (RuntimeError, ValueError) as err:
                raise ICLError(
                    f"speculative decoding cannot roll back this model's cache ({err}); use "
                    f"decoding.speculative=none for it"
                ) from err
            self.length = length


@dataclass
class Decoded:
    """One answer's tokens and the work it took."""

    tokens: list[int]
    target_passes: int = 0
    drafted: int = 0
    accepted: int = 0


def layer_kinds(config) -> list[str]:
    """Each layer's attention kind: full, or a sliding window (``config.sliding_window``)."""
    types = getattr(config, "layer_types", None)
    if types:
        return [SLIDING if t == SLIDING else FULL for t in types]
    window = getattr(config, "sliding_window", None)
    return [SLIDING if window else FULL] * config.num_hidden_layers


class BatchRows:
    """Rows decoding side by side after one prefix: feed each row its next tokens, read the
    logits after each row's last one, let finished rows go.

    Every layer's cache grows (a sliding-window layer would keep the last slots, not the last
    real positions, and pad slots would push needed keys out); the masks apply the window.
    """

    def __init__(self, model, device, prefix_cache, prefix_len: int, rows: int) -> None:
        from transformers import DynamicCache

        self.model, self.device = model, device
        self.kinds = layer_kinds(model.config)
        self.window = getattr(model.config, "sliding_window", None)
        layers = list(prefix_cache.layers) if prefix_cache is not None else []
        data = [(la.keys[:1].expand(rows, -1, -1, -1), la.values[:1].expand(rows, -1, -1, -1))
                for la in layers]  # fmt: skip
        self.cache = DynamicCache(ddp_cache_data=data) if data else DynamicCache()
        # the real positions of the prefix keys each kind of layer holds (a window keeps the last)
        stored = {kind: len_ for kind, len_ in zip(self.kinds, [la.keys.shape[2] for la in layers])}
        self.prefix_positions = {
            kind: torch.arange(prefix_len - stored.get(kind, 0), prefix_len, device=device)
            for kind in set(self.kinds)
        }
        self.positions = torch.empty(rows, 0, dtype=torch.long, device=device)  # suffix slots
        self.valid = torch.empty(rows, 0, dtype=torch.bool, device=device)
        self.next = torch.full((rows,), prefix_len, dtype=torch.long, device=device)

    @property
    def rows(self) -> int:
        return self.next.shape[0]

    def _mask(self, kind: str, positions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Additive (rows, 1, new, keys) mask: earlier or same real positions, no pad slots."""
        prefix = self.prefix_positions[kind].expand(self.rows, -1)
        keys = torch.cat([prefix, self.positions, positions], 1)
        seen = torch.cat([torch.ones_like(prefix, dtype=torch.bool), self.valid, valid], 1)
        visible = seen[:, None, :] & (keys[:, None, :] <= positions[:, :, None])
        if kind == SLIDING:
            visible &= (positions[:, :, None] - keys[:, None, :]) < self.window
        dtype = self.model.dtype
        bias = torch.zeros(visible.shape, dtype=dtype, device=self.device)
        return bias.masked_fill_(~visible, torch.finfo(dtype).min)[:, None]

    @torch.inference_mode()
    def feed(self, pending: list[list[int]]) -> torch.Tensor:
        """Each row's tokens after what it holds; the float32 logits after each row's last."""
        counts = torch.tensor([len(p) for p in pending], device=self.device)
        width = int(counts.max())
        ids = torch.zeros(self.rows, width, dtype=torch.long)
        for row, tokens in enumerate(pending):
            ids[row, : len(tokens)] = torch.tensor(tokens)
        offsets = torch.arange(width, device=self.device)
        valid = offsets[None, :] < counts[:, None]
        positions = self.next[:, None] + offsets[None, :]  # pad slots: never visible as keys
        masks = {kind: self._mask(kind, positions, valid) for kind in set(self.kinds)}
        mask = masks if len(masks) > 1 else next(iter(masks.values()))
        base = self.model.base_model
        out = base(
            input_ids=ids.to(self.device), position_ids=positions, attention_mask=mask,
            use_cache=True, **cache_kwargs(base, self.cache),
        )  # fmt: skip
        self.positions = torch.cat([self.positions, positions], 1)
        self.valid = torch.cat([self.valid, valid], 1)
        self.next = self.next + counts
        last = out.last_hidden_state[torch.arange(self.rows, device=self.device), counts - 1]
        return logits_from_hidden(self.model, last).float()

    def keep(self, rows: list[int]) -> None:
        """Only these rows go on (in this order)."""
        index = torch.tensor(rows, device=self.device)
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index], layer.values[index]
        self.positions, self.valid = self.positions[index], self.valid[index]
        self.next = self.next[index]


def generate_batch(
    batch: BatchRows,
    queries: list[list[int]],
    sampler: Sampler,
    max_new: int,
    stop: Callable[[list[int]], bool],
    generators: list[torch.Generator],
) -> list[Decoded]:
    """Plain decoding of one answer per row, all rows in each forward; each row draws from its
    own generator, so an answer does not depend on the rows beside it."""
    out = [Decoded([]) for _ in queries]
    active = list(range(len(queries)))
    logits = batch.feed([list(q) for q in queries])
    while True:
        going = []
        for row, i in enumerate(active):
            out[i].tokens.append(draw(sampler.probs(logits[row]), generators[i]))
            out[i].target_passes += 1
            if len(out[i].tokens) < max_new and not stop(out[i].tokens):
                going.append(row)
        if not going:
            return out
        if len(going) < len(active):
            batch.keep(going)
            active = [active[row] for row in going]
        logits = batch.feed([out[i].tokens[-1:] for i in active])


class ModelDrafter:
    """Drafts from a smaller model of the same tokenizer, sampled with the same Sampler."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream  # holds a leading part of the sequence (its prefix at first)

    def propose(self, committed: list[int], n: int, sampler: Sampler, generator):
        """n draft tokens after ``committed`` and the distribution each was drawn from."""
        drafts, qs = [], []
        unfed = committed[self.stream.length :]
        for _ in range(n):
            q = sampler.probs(self.stream.feed(unfed)[-1])
            drafts.append(draw(q, generator))
            qs.append(q)
            unfed = drafts[-1:]
        return drafts, qs

    def settle(self, before: int, kept: int) -> None:
        """Keep the drafts the target kept (of those this stream fed: all but the last)."""
        self.stream.rollback(min(self.stream.length, before + kept))


class PromptLookupDrafter:
    """Drafts the tokens that followed the latest earlier occurrence of the last ``ngram``
    tokens (Saxena 2023): ICL prompts repeat their format and label words."""

    def __init__(self, ngram: int = 3) -> None:
        self.ngram = ngram

    def propose(self, committed: list[int], n: int, sampler: Sampler, generator):
        """The continuation of the longest (up to ngram) latest match; q: a point mass."""
        for size in range(min(self.ngram, len(committed) - 1), 0, -1):
            tail = committed[-size:]
            for start in range(len(committed) - size - 1, -1, -1):
                if committed[start : start + size] == tail:
                    drafts = committed[start + size : start + size + n]
                    return drafts, [None] * len(drafts)
        return [], []

    def settle(self, before: int, kept: int) -> None:
        pass


def _accept(p: torch.Tensor, q: torch.Tensor | None, token: int, generator) -> bool:
    """Keep a draft token with probability min(1, p(x) / q(x))."""
    q_x = 1.0 if q is None else float(q[token])
    ratio = float(p[token]) / q_x if q_x > 0 else 0.0
    return ratio >= 1.0 or float(torch.rand((), generator=generator)) < ratio


def _residual(p: torch.Tensor, q: torch.Tensor | None, token: int) -> torch.Tensor:
    """The normalised max(0, p - q) a rejection draws from."""
    if q is None:  # a point mass on the rejected token
        q = torch.zeros_like(p)
        q[token] = 1.0
    rest = (p - q).clamp(min=0)
    total = rest.sum()
    return rest / total if total > 0 else p


def speculative_generate(
    target: Stream,
    drafter,
    committed: list[int],
    sampler: Sampler,
    max_new: int,
    stop: Callable[[list[int]], bool],
    generator: torch.Generator,
    draft_tokens: int = 4,
) -> Decoded:
    """Speculative sampling after ``committed``, the whole sequence so far (the target stream
    holds all of it but its last token); ``committed`` grows as tokens are accepted."""
    result = Decoded([])
    start_passes = target.passes
    while True:
        drafts, qs = drafter.propose(committed, draft_tokens, sampler, generator)
        before = len(committed)
        # one target pass: the distribution after the last accepted token and after each draft
        logits = target.feed(committed[target.length :] + drafts)[-len(drafts) - 1 :]
        ps = [sampler.probs(row) for row in logits]
        kept = 0
        while kept < len(drafts) and _accept(ps[kept], qs[kept], drafts[kept], generator):
            kept += 1
        if kept < len(drafts):
            new = draw(_residual(ps[kept], qs[kept], drafts[kept]), generator)
        else:  # every draft kept: a bonus token from the target's next distribution
            new = draw(ps[kept], generator)
        accepted = drafts[:kept] + [new]
        target.rollback(before + kept)  # it holds every accepted token but ``new``
        drafter.settle(before, kept)
        committed.extend(accepted)
        result.drafted += len(drafts)
        result.accepted += kept
        for token in accepted:
            result.tokens.append(token)
            if len(result.tokens) >= max_new or stop(result.tokens):
                result.target_passes = target.passes - start_passes
                return result
