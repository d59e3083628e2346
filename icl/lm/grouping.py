"""Which requests share one prefix forward.

Requests with the same prefix form a group whose prefix is encoded once and whose suffixes run
in length-sorted batches over its cache. Prompts built per example (retrieved demonstrations,
similarity orders) mostly have a prefix of their own: encoded alone, each would cost one
unbatched prefix forward and a one-row suffix batch. With ``merge``, the requests whose prefix
no other request has are gathered under their longest common token prefix (BOS, the
instruction, the chat template's header), which is encoded once, and the rest of each prefix
moves to the front of its query, so those requests run as rows of full length in batches.
``moved`` says how many of a merged query's leading tokens were its prefix's: their log-probs
still count toward the prefix NLL, so every number is the one an unmerged run gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from icl.lm.requests import ScoreRequest


@dataclass
class PrefixGroup:
    """Requests scored after one encoded prefix."""

    prefix: tuple[int, ...]
    indices: list[int]
    # merged requests: index -> how many leading query tokens were the request's own prefix
    moved: dict[int, int] = field(default_factory=dict)


def common_prefix(sequences: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The longest token prefix all the sequences share."""
    first = sequences[0]
    n = min(len(s) for s in sequences)
    for s in sequences[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return first[:n]


def prefix_groups(requests, merge: bool = False):
    """The groups to score, and the requests as the engine runs them (merged ones rewritten)."""
    exact: dict[tuple[int, ...], list[int]] = {}
    for i, req in enumerate(requests):
        exact.setdefault(req.prefix, []).append(i)
    lone = [ids[0] for ids in exact.values() if len(ids) == 1]
    if not merge or len(lone) < 2:
        return [PrefixGroup(p, ids) for p, ids in exact.items()], list(requests)
    root = common_prefix([requests[i].prefix for i in lone])
    run = list(requests)
    moved = {}
    for i in lone:
        req = requests[i]
        moved[i] = len(req.prefix) - len(root)
        run[i] = ScoreRequest(root, req.prefix[len(root) :] + req.query, req.options)
    groups = [PrefixGroup(p, ids) for p, ids in exact.items() if len(ids) > 1]
    groups.append(PrefixGroup(root, lone, moved))
    return groups, run
