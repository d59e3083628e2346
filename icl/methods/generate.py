"""The ``generate`` method: the model writes each test example's answer after the same k-shot
prompt the ``score`` method scores, and the answer is mapped to a label word.

Answers are decoded greedily or sampled (temperature, top-k, top-p), optionally several per
example (majority vote) and optionally by exact speculative sampling (a draft model of the same
tokenizer, or prompt lookup). The demonstrations are encoded once per prefix; each example
decodes over that cache. The label words are also scored on the same prompts in the same
process (``scoring_accuracy``), so one run shows both numbers.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from icl import chat
from icl.answers import MATCHES, answer_text, match_class, stops
from icl.config import DecodingConfig, ModelConfig, RunConfig
from icl.errors import ICLError, unknown_name
from icl.lm.decoding import (
    ModelDrafter,
    PromptLookupDrafter,
    Stream,
    generate,
    speculative_generate,
)
from icl.lm.forward import encode_prefix
from icl.lm.sampling import Sampler
from icl.methods import CellOutput, Method, register
from icl.methods.generate_rows import GenerationRow, generation_metrics, majority
from icl.methods.score import cell_prompts, scorer_for
from icl.plan import CellPlan, cell_identity, plan_cell, require
from icl.prompts import option_tokens
from icl.rule_passes import rule_inputs, rule_predictions
from icl.scoring import option_scores

NAME = "generate"
SPECULATIVE = ("none", "draft", "prompt_lookup")


@dataclass(frozen=True)
class Decoding:
    """How answers are written: the sampler, their length, how many, speculative or not."""

    sampler: Sampler
    max_new_tokens: int
    samples: int = 1
    speculative: str = "none"
    draft_tokens: int = 4
    lookup_ngram: int = 3
    seed: int = 0


@dataclass(frozen=True)
class GeneratePlan:
    """A scoring plan's prompts, plus how the answers are written and mapped to classes."""

    cell: CellPlan
    decoding: Decoding
    match: str
    draft: ModelConfig | None


def check_decoding(decoding: DecodingConfig) -> Sampler:
    """Fail, naming the fix, on decoding settings that cannot run; the sampler they give."""
    sampler = Sampler(decoding.strategy, decoding.temperature, decoding.top_k, decoding.top_p)
    sampler.check()
    if decoding.speculative not in SPECULATIVE:
        raise unknown_name("decoding.speculative mode", decoding.speculative, SPECULATIVE)
    if decoding.match not in MATCHES:
        raise unknown_name("decoding.match", decoding.match, MATCHES)
    for name in ("max_new_tokens", "samples", "draft_tokens", "lookup_ngram"):
        if getattr(decoding, name) < 1:
            raise ICLError(f"decoding.{name} must be >= 1, got {getattr(decoding, name)}")
    if decoding.speculative == "draft" and decoding.draft is None:
        raise ICLError(
            "decoding.speculative=draft needs a draft model of the target's tokenizer: "
            "+model@decoding.draft=NAME (a config under conf/model/)"
        )
    if decoding.strategy == "greedy" and decoding.samples > 1:
        raise ICLError("decoding.samples > 1 needs decoding.strategy=sample (greedy repeats)")
    return sampler


def identity(cfg: RunConfig):
    require(cfg, NAME, "model", "task")
    d = cfg.decoding
    sampled = d.strategy == "sample"
    return dataclasses.replace(
        cell_identity(cfg, NAME),
        decoding=d.strategy,
        temperature=d.temperature if sampled else None,
        top_k=d.top_k if sampled else None,
        top_p=d.top_p if sampled else None,
        max_new_tokens=d.max_new_tokens,
        answer_match=d.match,
        samples=d.samples,
        speculative=d.speculative,
        draft_model=d.draft.name if d.speculative == "draft" and d.draft else None,
        draft_tokens=d.draft_tokens if d.speculative != "none" else None,
        decoding_seed=d.seed if sampled else None,
    )


def plan(cfg: RunConfig, cell=None) -> GeneratePlan:
    d = cfg.decoding
    sampler = check_decoding(d)
    decoding = Decoding(
        sampler=sampler,
        max_new_tokens=d.max_new_tokens,
        samples=d.samples,
        speculative=d.speculative,
        draft_tokens=d.draft_tokens,
        lookup_ngram=d.lookup_ngram,
        seed=d.seed,
    )
    return GeneratePlan(
        cell=plan_cell(cfg, NAME, cell),
        decoding=decoding,
        match=d.match,
        draft=d.draft if d.speculative == "draft" else None,
    )


def scoring_predictions(scorer, cell: CellPlan, prompts, options) -> list[int]:
    """The label-word scoring prediction on each prompt (the cell's primary rule)."""
    scored = scorer.score([p.request for p in prompts])
    rule = cell.scoring.rule
    extra = rule_inputs(scorer, cell, [p.n_dropped for p in prompts], options, [rule])
    return [
        rule_predictions(option_scores(r.option_logprobs), [rule], inputs)[rule]
        for r, inputs in zip(scored, extra)
    ]


def answer_seed(seed: int, example: int, sample: int) -> torch.Generator:
    """A generator of its own for each answer: the same seed gives the same answers."""
    state = np.random.SeedSequence([seed, example, sample]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass
class Decoder:
    """Everything one answer's decoding needs besides its prompt."""

    decoding: Decoding
    demo_sep: str  # an answer ends at a newline or this separator
    lm: object
    draft: object | None = None
    # format=chat: an answer also ends where the chat template closes the assistant's turn
    end_of_turn: str | None = None

    def stop(self, tokens: list[int]) -> bool:
        eos = self.lm.tokenizer.eos_token_id
        if tokens[-1] == eos:
            return True
        if self.end_of_turn and self.end_of_turn in self.lm.tokenizer.decode(tokens):
            return True
        return stops(self.lm.tokenizer.decode(tokens, skip_special_tokens=True), self.demo_sep)

    def decode(self, request, encoded, draft_encoded, generator):
        d = self.decoding
        target = Stream(self.lm.model, self.lm.device, encoded.cache, encoded.length)
        if d.speculative == "none":
            return generate(
                target, list(request.query), d.sampler, d.max_new_tokens, self.stop, generator
            )
        if d.speculative == "prompt_lookup":
            drafter = PromptLookupDrafter(d.lookup_ngram)
        else:
            cache, length = draft_encoded.cache, draft_encoded.length
            drafter = ModelDrafter(Stream(self.draft.model, self.draft.device, cache, length))
        committed = list(request.prefix) + list(request.query)
        return speculative_generate(
            target, drafter, committed, d.sampler, d.max_new_tokens, self.stop, generator,
            d.draft_tokens,
        )  # fmt: skip

    def encode(self, prefix):
        """The prefix encoded once for the target (and the draft model)."""
        encoded = encode_prefix(self.lm.model, prefix, (), self.lm.device, want_nll=False)
        draft = None
        if self.draft is not None:
            draft = encode_prefix(self.draft.model, prefix, (), self.draft.device, False)
        return encoded, draft


def load_draft(plan: GeneratePlan, models, lm):
    """The draft model, checked to share the target's tokenizer (the drafts are token ids)."""
    if plan.draft is None:
        return None
    draft = models.get(plan.draft)
    probe = "Review: a b c\nSentiment: positive\n\n"
    same = draft.tokenizer.get_vocab() == lm.tokenizer.get_vocab() and draft.encode(
        probe
    ) == lm.encode(probe)
    if not same or draft.bos != lm.bos:
        raise ICLError(
            f"draft model {draft.name!r} does not share {lm.name!r}'s tokenizer; speculative "
            f"decoding needs the same tokens (or use decoding.speculative=prompt_lookup)"
        )
    return draft


def run(plan: GeneratePlan, models) -> CellOutput:
    """Write every test example's answers; map them; score the same prompts; metrics."""
    cell = plan.cell
    scorer = scorer_for(cell, models)
    lm = scorer.lm
    options = option_tokens(lm, cell.template, cell.format)
    prompts = cell_prompts(lm, cell, options)
    scoring = scoring_predictions(scorer, cell, prompts, options)
    turn_end = chat.end_of_turn(lm.tokenizer) if cell.format == chat.CHAT else None
    decoder = Decoder(
        plan.decoding, cell.template.demo_sep, lm, load_draft(plan, models, lm), turn_end
    )
    started = time.perf_counter()
    decoded = decode_all(decoder, [p.request for p in prompts])
    generation_s = time.perf_counter() - started
    rows = [
        generation_row(plan, lm, ex, demos, prompt, answers, cell.label_names[s])
        for ex, demos, prompt, answers, s in zip(cell.test, cell.demos, prompts, decoded, scoring)
    ]
    metrics = generation_metrics(rows, cell.label_names, scoring)
    metrics.update(speed_metrics(decoded, generation_s, len(rows), plan.decoding.speculative))
    metrics["device"] = str(lm.device)
    return CellOutput(rows, metrics)


def decode_all(decoder: Decoder, requests) -> list[list]:
    """Each request's answers (``Decoded``); the prefix of each group of requests is encoded
    once. The benchmarks time this same path."""
    out: list[list] = [[] for _ in requests]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(request.prefix, []).append(i)
    for prefix, indices in groups.items():
        encoded, draft = decoder.encode(prefix)
        for i in indices:
            for j in range(decoder.decoding.samples):
                generator = answer_seed(decoder.decoding.seed, i, j)
                out[i].append(decoder.decode(requests[i], encoded, draft, generator))
    return out


def generation_row(plan, lm, example, demos, prompt, answers, scoring_name) -> GenerationRow:
    """One example's row: each answer's text, its cut answer and class."""
    cell, kept = plan.cell, slice(prompt.n_dropped, None)
    names = cell.label_names
    generations, classes = [], []
    for decoded in answers:
        text = lm.tokenizer.decode(decoded.tokens, skip_special_tokens=True)
        if cell.format == chat.CHAT:  # the reply ends at the template's end of turn
            text = text.split(chat.end_of_turn(lm.tokenizer))[0]
        answer = answer_text(text, cell.template.demo_sep)
        found = match_class(answer, cell.template.label_words, plan.match)
        classes.append(found)
        generations.append(
            {
                "text": text,
                "answer": answer.strip(),
                "tokens": decoded.tokens,
                "class": None if found is None else names[found],
                "valid": found is not None,
            }
        )
    vote = majority(classes)
    return GenerationRow(
        example_id=example.id,
        demo_ids=demos.ids[kept],
        demo_label_words=[word for _, word in demos.pairs][kept],
        demo_gold_words=demos.gold_words[kept],
        demo_scores=None if demos.scores is None else demos.scores[kept],
        n_demos_dropped=prompt.n_dropped,
        generations=generations,
        prediction=generations[0]["class"],
        prediction_index=classes[0],
        vote=None if vote is None else names[vote],
        gold=names[example.label],
        gold_index=example.label,
        correct=classes[0] == example.label,
        scoring_prediction=scoring_name,
        prompt_tokens=len(prompt.request.prefix) + len(prompt.request.query),
    )


def speed_metrics(decoded: list[list], seconds: float, n: int, speculative: str) -> dict:
    """Tokens and examples per second; for speculative decoding, how many drafts were kept."""
    answers = [a for per_example in decoded for a in per_example]
    tokens = sum(len(a.tokens) for a in answers)
    passes = sum(a.target_passes for a in answers)
    out = {
        "generation_s": seconds,
        "generated_tokens": tokens,
        "tokens_per_s": tokens / seconds if seconds else None,
        "examples_per_s": n / seconds if seconds else None,
        "target_passes": passes,
        "tokens_per_target_pass": tokens / passes if passes else None,
    }
    if speculative != "none":
        drafted = sum(a.drafted for a in answers)
        out["drafted_tokens"] = drafted
        out["acceptance_rate"] = sum(a.accepted for a in answers) / drafted if drafted else None
    return out


def describe(metrics: dict) -> str:
    return (
        f"{metrics['task']} k={metrics['k']} {metrics['decoding']}: valid "
        f"{metrics['format_valid_rate']:.3f} accuracy {metrics['accuracy']:.3f} (scoring "
        f"{metrics['scoring_accuracy']:.3f}, n={metrics['n']})"
    )


METHOD = register(
    Method(
        name=NAME,
        identity=identity,
        plan=plan,
        run=run,
        row_type=GenerationRow,
        summary_metrics=(
            "accuracy",
            "format_valid_rate",
            "accuracy_valid",
            "macro_f1",
            "scoring_accuracy",
            "vote_accuracy",
            "tokens_per_s",
            "acceptance_rate",
        ),
        describe=describe,
    )
)
