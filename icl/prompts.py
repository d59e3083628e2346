"""Prompts as token requests: demonstrations, query, options, and the extra prompts that some
scoring rules score (content-free inputs, the domain premise, channel order).

Every prompt is tokenized as one string and cut where its parts end, so the tokens at a seam are
the ones the model sees in running text; demonstrations are dropped from the front until the
prompt fits the model's context. ``fmt`` is the prompt format: ``plain`` text, or ``chat``
(``icl.chat``: the tokenizer's chat template, the label word as the assistant's reply).
Everything here is a function of resolved values: a template, the demonstrations as shown
(``icl.demos.Demonstrations.pairs``), texts and a tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

from icl import chat, templates
from icl.errors import ICLError
from icl.lm import LanguageModel, ScoreRequest
from icl.scoring import perplexity


@dataclass
class Prompt:
    request: ScoreRequest
    n_dropped: int


def option_tokens(lm: LanguageModel, template, fmt: str = chat.PLAIN):
    """Each class's label word as tokens, with the separator the template implies (in chat
    format the word alone: it opens the assistant's reply)."""
    options = tuple(
        tuple(lm.encode(w if fmt == chat.CHAT else templates.render_answer(template, w)))
        for w in template.label_words
    )
    if len(set(options)) < len(options):
        raise ICLError(
            f"label words {list(template.label_words)} collide after tokenization by "
            f"{lm.name}; choose words that tokenize differently"
        )
    return options


def check_option_prefixes(lm: LanguageModel, words, options, rules) -> None:
    """Under ``direct`` an option whose tokens start with another option's can never win (its
    summed log-prob adds terms to the shorter one's); refuse it rather than report that."""
    if "direct" not in rules:
        return
    for i, short in enumerate(options):
        for j, long in enumerate(options):
            if i != j and len(short) < len(long) and long[: len(short)] == short:
                raise ICLError(
                    f"label word {words[j]!r} starts with the tokens of {words[i]!r} under "
                    f"{lm.name}'s tokenizer, so rule 'direct' (summed log-probs) can never "
                    f"predict it; use scoring.rule=direct_mean (and leave direct out of "
                    f"scoring.rules), or choose label words that tokenize apart"
                )


def too_long(lm, request: ScoreRequest) -> int | None:
    """The tokens a request needs with its longest option, when that exceeds the context."""
    longest = max((len(o) for o in request.options), default=0)
    needed = len(request.prefix) + len(request.query) + longest
    return needed if needed > lm.max_length else None


def fitted(lm, make_request, demos: list, start: int = 0, what: str = "a prompt"):
    """make_request(kept demonstrations) and how many were dropped: the earliest go (from
    ``start``) until the prompt fits the model's context."""
    for dropped in range(start, len(demos) + 1):
        request = make_request(demos[dropped:])
        needed = too_long(lm, request)
        if needed is None:
            return request, dropped
    raise ICLError(
        f"{what} needs {needed} tokens even with no demonstrations, more than "
        f"{lm.name}'s context of {lm.max_length}"
    )


def build_prompt(
    lm, template, demos, query_fields: dict, options, what="a prompt", fmt: str = chat.PLAIN
) -> Prompt:
    """Token pieces of one prompt (``demos``: the (fields, word) pairs shown), dropping the
    earliest demonstrations until it fits."""
    query_text = templates.render_input(template, query_fields)
    request, dropped = fitted(
        lm,
        lambda kept: prompt_request(lm, template, kept, query_text, options, fmt),
        list(demos),
        what=what,
    )
    return Prompt(request, dropped)


def prompt_request(lm, template, demos, query_text: str, options, fmt=chat.PLAIN):
    """The prompt tokenized as one string; the prefix is what the demonstration block covers.

    In chat format the template's own text holds any BOS it wants; the query is the test
    input's user turn and the opening of the assistant's reply.
    """
    if fmt == chat.CHAT:
        shown, whole = chat.prompt_texts(lm.tokenizer, template, demos, query_text)
        prefix_ids, query_ids = lm.encode_split(shown, whole[len(shown) :])
        return ScoreRequest(tuple(prefix_ids), tuple(query_ids), options)
    prefix_ids, query_ids = lm.encode_split(templates.render_prefix(template, demos), query_text)
    return ScoreRequest(tuple(lm.bos + prefix_ids), tuple(query_ids), options)


def prompt_perplexity(result) -> float:
    """Perplexity of a scored prompt (prefix and query; the options are not part of it)."""
    return perplexity(
        result.prefix_nll + result.query_nll, result.prefix_count + result.query_count
    )


def channel_request(lm, template, demos, word: str, fields: dict, fmt=chat.PLAIN):
    """Demonstrations in channel order, then the label word; the option scored is the input."""
    input_text = templates.render_channel_input(template, fields)
    if fmt == chat.CHAT:
        prefix_text, head = chat.channel_texts(lm.tokenizer, template, demos, word)
        bos = []
    else:
        prefix_text = templates.render_channel_prefix(template, demos)
        head = prefix_text + templates.render_channel_label(template, word)
        bos = lm.bos
    # one tokenization of the whole string, cut where the demonstrations and the label end
    prefix_ids, _ = lm.encode_split(prefix_text, head[len(prefix_text) :] + input_text)
    head_ids, input_ids = lm.encode_split(head, input_text)
    query_ids = head_ids[len(prefix_ids) :]
    return ScoreRequest(tuple(bos + prefix_ids), tuple(query_ids), (tuple(input_ids),))
