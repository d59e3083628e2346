"""format=chat: the prompt's tokens are the tokenizer's own apply_chat_template output, every
scoring rule and the generation method run in it, and a tokenizer without a chat template
stops before any model loads."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import fail_if_loaded, run_config, tiny_lm

from icl import chat, prompts
from icl.config import TemplateConfig
from icl.errors import ICLError
from icl.lm.loading import LanguageModel, load_tokenizer
from icl.runner import run_cell

TEMPLATE = TemplateConfig(
    input="Review: {text}\nSentiment:",
    label_words=["negative", "positive"],
    instruction="Classify each review as negative or positive.",
)
DEMOS = [({"text": "a joyous ride"}, "positive"), ({"text": "flat and dull"}, "negative"),
         ({"text": "moving , funny"}, "positive")]  # fmt: skip
QUERY = {"text": "a tedious mess"}


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2-135M-Instruct's real tokenizer (no weights), as a LanguageModel for prompts."""
    tokenizer = load_tokenizer(run_config("model=smollm2-135m").model)
    return LanguageModel("smollm2-135m", None, tokenizer, False, 8192, torch.device("cpu"))


def messages(template, demos, query_fields, answer=None):
    out = [{"role": "system", "content": template.instruction}] if template.instruction else []
    for fields, word in demos:
        out.append({"role": "user", "content": template.input.format(**fields)})
        out.append({"role": "assistant", "content": word})
    out.append({"role": "user", "content": template.input.format(**query_fields)})
    if answer is not None:
        out.append({"role": "assistant", "content": answer})
    return out


def template_ids(tokenizer, msgs, generation_prompt):
    encoded = tokenizer.apply_chat_template(
        msgs, tokenize=True, add_generation_prompt=generation_prompt
    )
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


@pytest.mark.parametrize("instruction", ["", TEMPLATE.instruction])
@pytest.mark.parametrize("k", [0, 1, 3])
def test_chat_prompt_tokens_are_apply_chat_template_output(smollm2, instruction, k):
    template = TemplateConfig(**{**TEMPLATE.__dict__, "instruction": instruction})
    options = prompts.option_tokens(smollm2, template, chat.CHAT)
    request = prompts.build_prompt(smollm2, template, DEMOS[:k], QUERY, options, fmt=chat.CHAT)
    request = request.request
    tok = smollm2.tokenizer
    msgs = messages(template, DEMOS[:k], QUERY)
    assert list(request.prefix + request.query) == template_ids(tok, msgs, True)
    for word, option in zip(template.label_words, options):
        whole = template_ids(tok, messages(template, DEMOS[:k], QUERY, word), False)
        scored = list(request.prefix + request.query + option)
        assert whole[: len(scored)] == scored  # the label word opens the assistant's reply
        assert tok.decode(whole[len(scored) :]).strip() == chat.end_of_turn(tok)
    if k:  # the prefix is exactly the demonstrations' turns (and the system message)
        head = template_ids(tok, messages(template, DEMOS[:k], QUERY)[:-1], False)
        assert list(request.prefix) == head


def test_channel_chat_prompt_scores_the_input_as_the_reply(smollm2):
    request = prompts.channel_request(smollm2, TEMPLATE, DEMOS, "negative", QUERY, chat.CHAT)
    tok = smollm2.tokenizer
    msgs = [{"role": "system", "content": TEMPLATE.instruction}]
    for fields, word in DEMOS:
        msgs += [{"role": "user", "content": f"Sentiment: {word}"},
                 {"role": "assistant", "content": f"Review: {fields['text']}"}]  # fmt: skip
    msgs += [{"role": "user", "content": "Sentiment: negative"},
             {"role": "assistant", "content": f"Review: {QUERY['text']}"}]  # fmt: skip
    whole = template_ids(tok, msgs, False)
    scored = list(request.prefix + request.query + request.options[0])
    assert whole[: len(scored)] == scored
    assert tok.decode(request.options[0]).strip() == QUERY["text"]


REFUSES_SYSTEM = (
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<{{ m['role'] }}>{{ m['content'] }}</turn>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def test_a_template_without_a_system_role_gets_the_instruction_in_the_first_user_turn():
    lm = tiny_lm()
    lm.tokenizer.chat_template = REFUSES_SYSTEM
    assert not chat.has_system_role(lm.tokenizer)
    request = prompts.prompt_request(lm, TEMPLATE, DEMOS[:1], "Review: x\nSentiment:", (),
                                     chat.CHAT)  # fmt: skip
    text = lm.tokenizer.decode(request.prefix + request.query)
    assert text.startswith(f"<user>{TEMPLATE.instruction}\n\nReview: a joyous ride")
    assert text.endswith("<user>Review: x\nSentiment:</turn><assistant>")
    assert chat.end_of_turn(lm.tokenizer) == "</turn>"


def test_format_chat_with_a_tokenizer_without_chat_template_stops_naming_the_model(tmp_path):
    cfg = run_config("task=sst2", "model=gemma3-270m", "format=chat", "eval.n_test=4",
                     out_dir=tmp_path)  # fmt: skip
    with pytest.raises(ICLError, match="tokenizer of model 'gemma3-270m' has none"):
        run_cell(cfg, load_model=fail_if_loaded)


@pytest.mark.parametrize("selection", ["random", "bm25"])
def test_every_rule_and_generation_run_in_chat_format(selection, tmp_path):
    common = ("task=sst2", "model=tiny-llama", "demos.k=2", "eval.n_test=3", "format=chat",
              f"demos.selection={selection}")  # fmt: skip
    metrics = run_cell(run_config(*common, "scoring.rules=[direct_mean,calibrated,pmi,channel]",
                                  out_dir=tmp_path / "score"))  # fmt: skip
    assert metrics["format"] == "chat"
    assert set(metrics["rules"]) == {"direct", "direct_mean", "calibrated", "pmi", "channel"}
    generated = run_cell(run_config(*common, "method=generate", "decoding.max_new_tokens=12",
                                    out_dir=tmp_path / "generate"))  # fmt: skip
    assert generated["format"] == "chat" and generated["n"] == 3
    row = json.loads((tmp_path / "generate" / "predictions.jsonl").read_text().splitlines()[0])
    assert "<|end|>" not in row["generations"][0]["answer"]


def test_generation_stops_at_the_chat_templates_end_of_turn():
    from icl.methods.generate import Decoder

    lm = tiny_lm()
    decoder = Decoder(None, "\n\n", lm, end_of_turn=chat.end_of_turn(lm.tokenizer))
    assert decoder.stop(lm.encode("positive<|end|>"))
    assert not decoder.stop(lm.encode("posit"))
