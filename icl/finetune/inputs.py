"""The training, development and test inputs as token requests: the zero-shot prompt of the
template (as an ICL cell with no demonstrations builds it), with long texts cut to fit."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from icl import templates
from icl.errors import ICLError
from icl.lm import ScoreRequest
from icl.prompts import prompt_request


@dataclass(frozen=True)
class Encoded:
    """One example as the model sees it: its request (prefix, query, options) and class."""

    id: str
    label: int
    request: ScoreRequest
    truncated: bool

    @property
    def tokens(self) -> tuple[int, ...]:
        return self.request.prefix + self.request.query


def _cut(lm, text: str, n_tokens: int) -> str:
    """The text without its last n_tokens tokens (at least one token kept)."""
    ids = lm.encode(text)
    return lm.tokenizer.decode(ids[: max(len(ids) - n_tokens, 1)])


def encode_example(lm, template, example, options, max_tokens: int) -> Encoded:
    """The example's zero-shot request; while it is longer than max_tokens, the end of its
    longest text field goes (the template's answer cue stays, so the label word still follows)."""
    fields = dict(example.fields)
    truncated = False
    for _ in range(8):  # each cut removes the excess; token seams can leave a little over
        text = templates.render_input(template, fields)
        request = prompt_request(lm, template, [], text, options)
        excess = len(request.prefix) + len(request.query) - max_tokens
        if excess <= 0:
            return Encoded(example.id, example.label, request, truncated)
        longest = max(fields, key=lambda name: len(fields[name] or ""))
        if len(lm.encode(fields[longest])) <= 1:
            break
        fields[longest] = _cut(lm, fields[longest], excess)
        truncated = True
    raise ICLError(
        f"example {example.id} does not fit finetune.max_tokens={max_tokens} even with its "
        f"text cut (the template alone is too long); raise finetune.max_tokens"
    )


def encode_examples(lm, template, examples, options, max_tokens: int) -> list[Encoded]:
    return [encode_example(lm, template, ex, options, max_tokens) for ex in examples]


class BatchOrder:
    """Training batches from a seeded generator: each epoch a fresh permutation of the
    examples, cut into batches (the last one of an epoch may be short)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self._queue: list[list[int]] = []

    def next(self) -> list[int]:
        if not self._queue:
            order = torch.randperm(self.n, generator=self.generator).tolist()
            self._queue = [order[i : i + self.size] for i in range(0, self.n, self.size)]
        return self._queue.pop(0)
