"""Chat-format prompts (``format=chat``): the prompt laid out by the tokenizer's own chat
template, as an instruct model saw its training conversations (lm-eval's
``fewshot_as_multiturn``).

The instruction is the system message (prepended to the first user turn where the template has
no system role); each demonstration is a user turn (the template's filled input) and an
assistant turn (its label word); the test input is the last user turn, and the options are
scored as the start of the assistant's reply, right after what the template renders with
``add_generation_prompt``. Channel prompts swap the roles' contents: the user turn holds the
label, the assistant's reply the input. The text is rendered by ``apply_chat_template`` and
tokenized as one string (as ``apply_chat_template(tokenize=True)`` does), then cut where the
demonstrations end, so the tokens are the template's own.
"""

from __future__ import annotations

import weakref

from icl import templates
from icl.errors import ICLError, unknown_name

FORMATS = ("plain", "chat")
PLAIN, CHAT = FORMATS
# settings whose demonstrations lack an input or a label: no user/assistant pair to show
NO_CHAT_FORM = ("no_labels", "labels_only")
_PROBE = "\x00system\x00"


def check_format(name: str, label_setting: str) -> None:
    """Fail on an unknown format, or a label setting that has no chat form."""
    if name not in FORMATS:
        raise unknown_name("prompt format (format)", name, FORMATS)
    if name == CHAT and label_setting in NO_CHAT_FORM:
        raise ICLError(
            f"demos.labels={label_setting} shows demonstrations without an input or a label, "
            f"which have no user/assistant turns; use format=plain for it"
        )


def check_chat_template(tokenizer, model_name: str) -> None:
    """format=chat needs the tokenizer's chat template; say so, naming the model, if it has none."""
    if not getattr(tokenizer, "chat_template", None):
        raise ICLError(
            f"format=chat needs a chat template, and the tokenizer of model {model_name!r} has "
            f"none (a base model); use format=plain for it"
        )


_SYSTEM_ROLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def has_system_role(tokenizer) -> bool:
    """Whether the chat template renders a system message (some refuse one, some drop it)."""
    if tokenizer not in _SYSTEM_ROLE:
        probe = [{"role": "system", "content": _PROBE}, {"role": "user", "content": "u"}]
        try:
            text = tokenizer.apply_chat_template(probe, tokenize=False)
        except Exception:  # a template that raises on the role (jinja's raise_exception)
            text = ""
        _SYSTEM_ROLE[tokenizer] = _PROBE in text
    return _SYSTEM_ROLE[tokenizer]


def turns(demos, user, assistant) -> list[dict]:
    """Each demonstration as a user turn and an assistant turn (``user``/``assistant``:
    (fields, word) -> the turn's text)."""
    out = []
    for fields, word in demos:
        out.append({"role": "user", "content": user(fields, word)})
        out.append({"role": "assistant", "content": assistant(fields, word)})
    return out


def with_instruction(instruction: str, messages: list[dict], system_role: bool) -> list[dict]:
    """The instruction as the system message, or before the first user turn's text."""
    if not instruction:
        return messages
    if system_role:
        return [{"role": "system", "content": instruction}, *messages]
    first = dict(messages[0], content=f"{instruction}\n\n{messages[0]['content']}")
    return [first, *messages[1:]]


def render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )


def common_start(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def conversation(tokenizer, instruction: str, demo_turns: list[dict], last_user: str):
    """(the text up to the demonstrations' end, the whole text up to the assistant's reply).

    The first is the demonstrations' own rendering where the whole text starts with it (else
    the two texts' common start), so the cut always falls inside the whole text.
    """
    system_role = has_system_role(tokenizer)
    query = [{"role": "user", "content": last_user}]
    messages = with_instruction(instruction, demo_turns + query, system_role)
    whole = render(tokenizer, messages, generation_prompt=True)
    head = messages[: len(messages) - 1]
    if not head:
        return "", whole
    shown = render(tokenizer, head, generation_prompt=False)
    return (shown if whole.startswith(shown) else common_start(shown, whole)), whole


def demo_user(template):
    return lambda fields, word: templates.render_input(template, fields)


def demo_assistant(fields, word) -> str:
    return word


def prompt_texts(tokenizer, template, demos, query_text: str) -> tuple[str, str]:
    """A direct prompt: (demonstrations' text, whole text up to the reply's label word)."""
    demo_turns = turns(demos, demo_user(template), demo_assistant)
    return conversation(tokenizer, template.instruction, demo_turns, query_text)


def channel_label(template, word: str) -> str:
    """What the user says in channel order: the answer prefix and the label word."""
    premise = templates.input_parts(template).tail.strip()
    return f"{premise}{template.answer_sep}{word}" if premise else word


def channel_texts(tokenizer, template, demos, word: str) -> tuple[str, str]:
    """A channel prompt: demonstrations with the label as the user turn and the input as the
    reply; then the label word as the last user turn. The input's lead ("Review: ") opens the
    reply, and the caller appends the fields, the option scored."""
    lead = templates.input_parts(template).lead

    def reply(fields, _word):
        return lead + templates.render_channel_input(template, fields)

    demo_turns = turns(demos, lambda _fields, w: channel_label(template, w), reply)
    shown, whole = conversation(tokenizer, template.instruction, demo_turns,
                                channel_label(template, word))  # fmt: skip
    return shown, whole + lead


def end_of_turn(tokenizer) -> str:
    """What the template writes after an assistant's reply, up to the next turn ("<|im_end|>")."""
    marker = "\x00reply\x00"
    messages = [{"role": "user", "content": "u"}, {"role": "assistant", "content": marker}]
    text = render(tokenizer, messages, generation_prompt=False)
    after = text[text.index(marker) + len(marker) :] if marker in text else ""
    return after.strip() or (tokenizer.eos_token or "")
