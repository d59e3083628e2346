"""Templates: every local task's templates are valid and render its real rows."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from helpers import LOCAL_TASKS, run_config, task_pools

from icl.config import TemplateConfig
from icl.errors import ICLError
from icl.templates import (
    check_template,
    render_answer,
    render_input,
    render_prefix,
    render_prompt,
    select_template,
    template_fields,
)


@pytest.mark.parametrize("task_name", LOCAL_TASKS)
def test_task_has_at_least_five_templates(task_name):
    task = run_config(f"task={task_name}").task
    assert len(task.templates) >= 5, sorted(task.templates)
    assert task.default_template in task.templates


@pytest.mark.parametrize("task_name", LOCAL_TASKS)
def test_every_template_passes_its_check_and_renders_a_real_row(task_name):
    task = run_config(f"task={task_name}").task
    pools = task_pools(task_name)
    query, demos = pools.test[0], pools.demos[:2]
    for name, template in task.templates.items():
        check_template(task, name, template)
        assert template_fields(template), f"template {name!r} renders no field"
        text = render_input(template, query.fields)
        for field in template_fields(template):
            assert query.fields[field] in text, (name, field)
        shown = [(ex.fields, template.label_words[ex.label]) for ex in demos]
        prompt = render_prompt(template, shown, query.fields)
        assert prompt.endswith(text)
        for ex in demos:
            assert (
                render_input(template, ex.fields)
                + render_answer(template, template.label_words[ex.label])
                in prompt
            )


def sentiment_task(**templates):
    return SimpleNamespace(
        name="toy",
        text_fields=["text"],
        label_names=["negative", "positive"],
        templates=templates,
        default_template=next(iter(templates), None),
    )


def test_template_naming_a_field_the_task_does_not_load_is_rejected():
    template = TemplateConfig(input="Review: {sentence}", label_words=["bad", "good"])
    with pytest.raises(ICLError, match=r"field\(s\) \['sentence'\]"):
        check_template(sentiment_task(t=template), "t", template)


def test_template_with_the_wrong_number_of_label_words_is_rejected():
    template = TemplateConfig(input="{text}", label_words=["bad", "okay", "good"])
    with pytest.raises(ICLError, match="3 label words for 2 classes"):
        check_template(sentiment_task(t=template), "t", template)


@pytest.mark.parametrize("words", [["good", "good"], ["Good", " good"], ["yes", ""]])
def test_label_words_that_collide_or_are_empty_are_rejected(words):
    template = TemplateConfig(input="{text}", label_words=words)
    with pytest.raises(ICLError, match="collide"):
        check_template(sentiment_task(t=template), "t", template)


def test_unknown_template_lists_the_valid_names():
    a = TemplateConfig(input="{text}", label_words=["bad", "good"])
    task = sentiment_task(alpha=a, beta=a)
    with pytest.raises(ICLError, match="'gamma'.*alpha, beta"):
        select_template(task, "gamma")
    assert select_template(task, None) == ("alpha", a)


def test_prompt_layout_puts_instruction_demos_and_query_in_order():
    template = TemplateConfig(
        input="Q: {text}\nA:",
        label_words=["no", "yes"],
        answer_sep=" ",
        demo_sep="\n\n",
        instruction="Answer yes or no.",
    )
    demos = [({"text": "one"}, "yes"), ({"text": "two"}, "no")]
    assert render_prefix(template, demos) == (
        "Answer yes or no.\n\nQ: one\nA: yes\n\nQ: two\nA: no\n\n"
    )
    assert render_prompt(template, demos, {"text": "three"}).endswith("\n\nQ: three\nA:")
    assert render_prefix(TemplateConfig(input="{text}", label_words=["a", "b"]), []) == ""
