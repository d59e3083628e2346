"""Prompt templates: render demonstrations and queries, and check templates against a task."""

from __future__ import annotations

import string
from collections.abc import Sequence

from icl.errors import ICLError, unknown_name


def template_fields(template) -> set[str]:
    """The field names a template's input format refers to."""
    return {name for _, name, _, _ in string.Formatter().parse(template.input) if name}


def select_template(task, name: str | None):
    """The task's template by name (its default when name is null)."""
    chosen = name or task.default_template
    if chosen not in task.templates:
        raise unknown_name(f"template of task {task.name!r}", chosen, task.templates)
    return chosen, task.templates[chosen]


def check_template(task, name: str, template) -> None:
    """Fail before any model work when a template cannot render this task."""
    missing = template_fields(template) - set(task.text_fields)
    if missing:
        raise ICLError(
            f"template {name!r} names field(s) {sorted(missing)} that task {task.name!r} does "
            f"not load (task.text_fields = {list(task.text_fields)}); fix the template's input"
        )
    words = list(template.label_words)
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
