"""A cell's prompts as token requests: demonstrations, query, options, and the extra prompts
that some scoring rules score (content-free inputs, the domain premise, channel order).

Every prompt is tokenized as one string and cut where its parts end, so the tokens at a seam are
the ones the model sees in running text; demonstrations are dropped from the front until the
prompt fits the model's context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from icl import templates
from icl.data import Example
from icl.demos import DemoSet
from icl.errors import ICLError
from icl.lm import LanguageModel, ScoreRequest
from icl.scoring import perplexity

if TYPE_CHECKING:
    from icl.runner import CellPlan


@dataclass
class Prompt:
    request: ScoreRequest
    n_dropped: int


def demo_pairs(plan: CellPlan, demo_set: DemoSet) -> list[tuple[dict | None, str | None]]:
    """What each demonstration shows: its input fields and its label word (None when the
    setting leaves that part out)."""
    words = plan.template.label_words
    inputs = demo_set.inputs or [plan.pool[i].fields for i in demo_set.indices]
    pairs = [(fields, words[c]) for fields, c in zip(inputs, demo_set.shown)]
    if plan.cfg.demos.labels == "no_labels":
        return [(fields, None) for fields, _ in pairs]
    if plan.cfg.demos.labels == "labels_only":
        return [(None, word) for _, word in pairs]
    return pairs


def option_tokens(lm: LanguageModel, template) -> tuple[tuple[int, ...], ...]:
    """Each class's label word as tokens, with the separator the template implies."""
    options = tuple(
        tuple(lm.encode(templates.render_answer(template, w))) for w in template.label_words
    )
    if len(set(options)) < len(options):
        raise ICLError(
            f"label words {list(template.label_words)} collide after tokenization by "
            f"{lm.name}; choose words that tokenize differently"
        )
    return options


def build_prompt(lm, plan: CellPlan, demo_set: DemoSet, query: Example, options) -> Prompt:
    """Token pieces of one prompt, dropping the earliest demonstrations until it fits."""
    demos = demo_pairs(plan, demo_set)
    query_text = templates.render_input(plan.template, query.fields)
    longest_option = max(len(o) for o in options)
    for dropped in range(len(demos) + 1):
        request = prompt_request(lm, plan.template, demos[dropped:], query_text, options)
        if len(request.prefix) + len(request.query) + longest_option <= lm.max_length:
            return Prompt(request, dropped)
    raise ICLError(
        f"example {query.id} needs {len(request.prefix) + len(request.query) + longest_option} "
        f"tokens even with no demonstrations, more than {lm.name}'s context of {lm.max_length}"
    )


def prompt_request(lm, template, demos, query_text: str, options) -> ScoreRequest:
    """The prompt tokenized as one string; the prefix is what the demonstration block covers."""
    prefix_ids, query_ids = lm.encode_split(templates.render_prefix(template, demos), query_text)
    return ScoreRequest(tuple(lm.bos + prefix_ids), tuple(query_ids), options)


def prompt_perplexity(result) -> float:
    """Perplexity of a scored prompt (prefix and query; the options are not part of it)."""
    return perplexity(
        result.prefix_nll + result.query_nll, result.prefix_count + result.query_count
    )


def domain_premise(cfg, template) -> str:
    """pmi's premise: scoring.domain_premise, else the template's answer prefix ("Sentiment:")."""
    if cfg.scoring.domain_premise is not None:
        return cfg.scoring.domain_premise
    return templates.domain_premise(template)


def content_free_texts(cfg, template) -> list[str]:
    """The template filled with each content-free input in every text field."""
    return [
        templates.render_input(template, dict.fromkeys(cfg.task.text_fields, text))
        for text in cfg.scoring.content_free
    ]


def fitted(lm, make_request, demos: list, start: int) -> ScoreRequest:
    """make_request(kept demonstrations), dropping the earliest (from ``start``) until it fits."""
    for dropped in range(start, len(demos) + 1):
        request = make_request(demos[dropped:])
        longest = max((len(o) for o in request.options), default=0)
        if len(request.prefix) + len(request.query) + longest <= lm.max_length:
            return request
    raise ICLError(
        f"a scoring rule's extra prompt needs {len(request.prefix) + len(request.query) + longest} "
        f"tokens even with no demonstrations, more than {lm.name}'s context of {lm.max_length}"
    )


def channel_request(lm, template, demos, word: str, fields: dict) -> ScoreRequest:
    """Demonstrations in channel order, then the label word; the option scored is the input."""
    prefix_text = templates.render_channel_prefix(template, demos)
    label_text = templates.render_channel_label(template, word)
    input_text = templates.render_channel_input(template, fields)
    # one tokenization of the whole string, cut where the demonstrations and the label end
    prefix_ids, _ = lm.encode_split(prefix_text, label_text + input_text)
    head_ids, input_ids = lm.encode_split(prefix_text + label_text, input_text)
    query_ids = head_ids[len(prefix_ids) :]
    return ScoreRequest(tuple(lm.bos + prefix_ids), tuple(query_ids), (tuple(input_ids),))
