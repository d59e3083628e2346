"""The two objectives over a batch of inputs: each class's label-word log-probability after
the prompt (kind=prompt; a multi-token word by its summed log-probability, LM-BFF's objective
for a causal LM), or the head's logits on the last token's final hidden state (kind=head).
Both run one padded forward per batch; the loss is cross-entropy over the classes."""

from __future__ import annotations

import torch

from icl.lm.forward import logits_from_hidden, padded


def pad_id(lm) -> int:
    tok = lm.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def hidden_states(model, sequences, pad: int, device):
    """Final hidden states of right-padded sequences, and their lengths."""
    ids, mask, lengths = padded(sequences, pad, device)
    return model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state, lengths


def label_word_logprobs(model, batch, options, pad: int, device) -> torch.Tensor:
    """[batch, classes]: log p(label word | prompt), summed over the word's tokens."""
    if all(len(o) == 1 for o in options):  # one forward; every word read at the last token
        hidden, lengths = hidden_states(model, [e.tokens for e in batch], pad, device)
        last = hidden[torch.arange(len(batch)), torch.tensor(lengths) - 1]
        logprobs = logits_from_hidden(model, last).log_softmax(-1)
        return logprobs[:, [o[0] for o in options]]
    # the prompt followed by each word: read every word token at the position before it
    sequences = [e.tokens + o for e in batch for o in options]
    hidden, _ = hidden_states(model, sequences, pad, device)
    rows, positions, targets = [], [], []
    for s, (example, option) in enumerate((e, o) for e in batch for o in options):
        start = len(example.tokens) - 1
        rows += [s] * len(option)
        positions += range(start, start + len(option))
        targets += option
    picked = logits_from_hidden(model, hidden[rows, positions]).log_softmax(-1)
    token_lp = picked[torch.arange(len(targets)), torch.tensor(targets, device=hidden.device)]
    sums = torch.zeros(len(sequences), device=hidden.device).index_add(
        0, torch.tensor(rows, device=hidden.device), token_lp
    )
    return sums.view(len(batch), len(options))


def last_token_features(model, batch, pad: int, device) -> torch.Tensor:
    """[batch, width]: the final hidden state at each input's last token."""
    hidden, lengths = hidden_states(model, [e.tokens for e in batch], pad, device)
    return hidden[torch.arange(len(batch)), torch.tensor(lengths) - 1]


def cross_entropy(class_scores: torch.Tensor, labels: list[int]) -> torch.Tensor:
    target = torch.tensor(labels, device=class_scores.device)
    return torch.nn.functional.cross_entropy(class_scores.float(), target)
