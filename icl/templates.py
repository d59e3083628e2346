"""Prompt templates: render demonstrations and queries, and check templates against a task."""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

from icl.errors import ICLError, unknown_name


def parsed_input(template) -> list[tuple]:
    """``template.input`` cut by ``string.Formatter``, with a message for unbalanced braces."""
    try:
        return list(string.Formatter().parse(template.input))
    except ValueError as err:
        raise ICLError(
            f"template input {template.input!r} cannot be parsed ({err}); a literal brace is "
            f"written doubled: {{{{ or }}}}"
        ) from err


def template_fields(template) -> set[str]:
    """The field names a template's input format refers to."""
    return {name for _, name, _, _ in parsed_input(template) if name}


def check_fields(name: str, template) -> None:
    """Fields are plain names: a format spec ({text:>99999999} pads to any width), a
    conversion, an index, an attribute or a positional field is refused."""
    for _, field, spec, conversion in parsed_input(template):
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "")
            shown += (f":{spec}" if spec else "") + "}"
            raise ICLError(
                f"template {name!r} has the field {shown}; fields are plain names of text "
                f"fields, like {{text}} (no format spec, conversion, index or position): "
                f"fix the template's input"
            )


def select_template(task, name: str | None):
    """The task's template by name (its default when name is null)."""
    chosen = name or task.default_template
    if chosen not in task.templates:
        raise unknown_name(f"template of task {task.name!r}", chosen, task.templates)
    return chosen, task.templates[chosen]


def check_template(task, name: str, template) -> None:
    """Fail before any model work when a template cannot render this task."""
    check_fields(name, template)
    missing = template_fields(template) - set(task.text_fields)
    if missing:
        raise ICLError(
            f"template {name!r} names field(s) {sorted(missing)} that task {task.name!r} does "
            f"not load (task.text_fields = {list(task.text_fields)}); fix the template's input"
        )
    words = list(template.label_words)
    not_text = [w for w in words if not isinstance(w, str)]
    if not_text:
        raise ICLError(
            f"label words of template {name!r} must be strings, but {not_text} are not: YAML "
            f"reads unquoted yes/no/on/off/true/false as booleans and digits as numbers; "
            f'quote them (label_words: ["no", "yes"])'
        )
    if len(words) != len(task.label_names):
        raise ICLError(
            f"template {name!r} has {len(words)} label words for {len(task.label_names)} classes "
            f"{list(task.label_names)}; give one word per class"
        )
    normalised = [w.strip().lower() for w in words]
    clashes = sorted({w for w in normalised if normalised.count(w) > 1})
    if clashes or any(not w for w in normalised):
        raise ICLError(
            f"label words of template {name!r} collide between classes ({clashes or 'empty'}); "
            f"each class needs its own word: {words}"
        )


def render_input(template, fields: dict[str, str]) -> str:
    return template.input.format(**fields)


def render_answer(template, word: str) -> str:
    """The continuation a class is scored by: the word with the separator the template implies."""
    return f"{template.answer_sep}{word}"


def render_demo(template, fields: dict[str, str] | None, word: str | None) -> str:
    """A demonstration: input and answer; only the input (no_labels) or only the label word
    (labels_only) when the other part is None."""
    if fields is None:
        return word or ""
    if word is None:
        return render_input(template, fields)
    return render_input(template, fields) + render_answer(template, word)


def render_prefix(template, demos: Sequence[tuple[dict[str, str] | None, str | None]]) -> str:
    """The instruction and the demonstrations, each followed by the separator."""
    head = template.instruction + template.demo_sep if template.instruction else ""
    return head + "".join(render_demo(template, f, w) + template.demo_sep for f, w in demos)


def render_prompt(template, demos: Sequence[tuple[dict[str, str], str]], query: dict) -> str:
    """The whole k-shot prompt as text (for logs; scoring works on token pieces)."""
    return render_prefix(template, demos) + render_input(template, query)


@dataclass(frozen=True)
class InputParts:
    """A template's input format cut around its fields."""

    lead: str  # the text before the first field ("Review: ")
    fields: str  # a format string from the first field to the end of the last ("{text}")
    tail: str  # the text after the last field: the answer prefix ("\nSentiment:")


def input_parts(template) -> InputParts:
    """Cut ``template.input`` before its first field and after its last one."""
    pieces = list(string.Formatter().parse(template.input))
    with_field = [i for i, (_, name, _, _) in enumerate(pieces) if name is not None]
    if not with_field:
        return InputParts(lead="".join(p[0] for p in pieces), fields="", tail="")
    first, last = with_field[0], with_field[-1]
    lead = "".join(p[0] for p in pieces[: first + 1])
    tail = "".join(p[0] for p in pieces[last + 1 :])
    fields = ""
    for i, (literal, name, spec, conversion) in enumerate(pieces[first : last + 1]):
        if i:  # the text between two fields, escaped again for format()
            fields += literal.replace("{", "{{").replace("}", "}}")
        fields += "{" + name + (f"!{conversion}" if conversion else "")
        fields += (f":{spec}" if spec else "") + "}"
    return InputParts(lead=lead, fields=fields, tail=tail)


def answer_prefix(template) -> str:
    """The answer prefix with no input: the input format after its last field, stripped
    (``pmi``'s default domain premise)."""
    return input_parts(template).tail.strip()


def render_channel_label(template, word: str) -> str:
    """What precedes the input in channel order: answer prefix, word, a break, the input's lead.

    "Review: {text}\nSentiment:" with the word "positive" gives "Sentiment: positive\nReview: ";
    the break is the whitespace that opened the answer prefix (a newline when there is none).
    """
    parts = input_parts(template)
    premise = parts.tail.strip()
    gap = parts.tail[: len(parts.tail) - len(parts.tail.lstrip())] or "\n"
    head = premise + template.answer_sep if premise else ""
    return head + word + gap + parts.lead


def render_channel_input(template, fields: dict[str, str]) -> str:
    """The input that channel scoring reads: the fields and the text between them."""
    return input_parts(template).fields.format(**fields)


def render_channel_demo(template, fields: dict[str, str] | None, word: str | None) -> str:
    """A demonstration in channel order: label first, then input (Min et al. 2022); only the
    word (labels_only) or only the input (no_labels) when the other part is None."""
    if fields is None:
        return word or ""
    if word is None:
        return input_parts(template).lead + render_channel_input(template, fields)
    return render_channel_label(template, word) + render_channel_input(template, fields)


def render_channel_prefix(
    template, demos: Sequence[tuple[dict[str, str] | None, str | None]]
) -> str:
    """The instruction and the demonstrations in channel order, each followed by demo_sep."""
    head = template.instruction + template.demo_sep if template.instruction else ""
    return head + "".join(render_channel_demo(template, f, w) + template.demo_sep for f, w in demos)
