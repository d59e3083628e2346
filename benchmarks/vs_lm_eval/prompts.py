"""The prompts as icl ScoreRequests: rebuilt from lm-eval's tokenization, or icl's own."""

from __future__ import annotations

from benchmarks import icl_side
from benchmarks.vs_lm_eval.task import (
    ANSWER_SEP,
    DEMO_SEP,
    LABEL_WORDS,
    TEMPLATE_INPUT,
    fields,
    shown,
)


def icl_template():
    """The template as an icl TemplateConfig: lm-eval's task renders the same text."""
    return icl_side.template_config(TEMPLATE_INPUT, LABEL_WORDS, ANSWER_SEP, DEMO_SEP)


def native_requests(lm, demos: list[dict], tests: list[dict]):
    """The requests icl's runner builds: ``prompts.option_tokens`` and ``prompts.build_prompt``."""
    return icl_side.icl_prompts(lm, icl_template(), shown(demos), [fields(t) for t in tests])


def prompt_texts(demos: list[dict], tests: list[dict]) -> list[str]:
    """Each test example's context text as icl renders it (icl.templates)."""
    template = icl_template()
    return [icl_side.render_prompt(template, shown(demos), fields(t)) for t in tests]


def lm_eval_style_encode(lm, context: str, continuation: str):
    """lm-eval's TemplateLM._encode_pair for a causal model: the continuation is what the whole
    text's tokens have past the context's own tokens; trailing context spaces move over."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = lm.bos + lm.encode(context + continuation)
    ctx = lm.bos + lm.encode(context)
    return ctx, whole[len(ctx) :]


def matched_requests(lm, demos: list[dict], tests: list[dict]):
    """ScoreRequests whose token ids equal lm-eval's: the context tokenized as one string.

    The shared prefix is BOS + the demonstration block up to its last label word (the separator
    "\\n\\n" after it goes to the query): the context tokens start with it whenever the
    tokenizer splits at that boundary; otherwise the longest common token prefix is used.
    """
    contexts = prompt_texts(demos, tests)
    encoded = []
    for ctx in contexts:
        pairs = [lm_eval_style_encode(lm, ctx, ANSWER_SEP + w) for w in LABEL_WORDS]
        assert all(p[0] == pairs[0][0] for p in pairs)
        encoded.append((pairs[0][0], tuple(tuple(p[1]) for p in pairs)))
    prefix = shared_prefix(lm, demos, [c for c, _ in encoded])
    p = len(prefix)
    requests = [icl_side.ScoreRequest(tuple(prefix), tuple(c[p:]), opts) for c, opts in encoded]
    return requests, contexts


def shared_prefix(lm, demos: list[dict], context_ids: list[list[int]]) -> list[int]:
    """BOS + the demonstration block without its last separator, if every context starts with
    those tokens and is longer; else the contexts' longest common token prefix."""
    if demos:
        block = icl_side.render_prefix(icl_template(), shown(demos))[: -len(DEMO_SEP)]
        prefix = list(lm.bos + lm.encode(block))
    else:
        prefix = list(lm.bos)
    shortest = min(len(c) for c in context_ids)
    if not all(c[: len(prefix)] == prefix for c in context_ids) or len(prefix) >= shortest:
        prefix = list(context_ids[0][: shortest - 1])
        for c in context_ids:
            n = 0
            while n < len(prefix) and c[n] == prefix[n]:
                n += 1
            prefix = prefix[:n]
    return prefix


def tokens_to_compute(requests) -> int:
    """Forward positions a prefix-reusing scorer must run: each distinct prefix once with the
    start its queries share, plus each example's distinct rows after that start (query + option
    minus its last token; one-token options share)."""
    groups: dict[tuple, list] = {}
    for r in requests:
        groups.setdefault(r.prefix, []).append(r)
    total = 0
    for prefix, members in groups.items():
        shared = icl_side.shared_query_start([r.query for r in members])
        total += len(prefix) + shared
        for r in members:
            rows = {r.query[shared:] + o[:-1] for o in r.options}
            total += sum(len(x) for x in rows)
    return total
