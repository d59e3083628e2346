"""The ``generate`` method: the model writes each test example's answer after the same k-shot
prompt the ``score`` method scores, and the answer is mapped to a label word.

Answers are decoded greedily or sampled (temperature, top-k, top-p), optionally several per
example (majority vote) and optionally by exact speculative sampling (a draft model of the same
tokenizer, or prompt lookup). The demonstrations are encoded once per prefix; plain decoding
writes the answers of many examples at once over that cache (``decoding.batch_size`` rows,
sorted by query length, finished rows leaving the batch); speculative decoding, which is about
one sequence's latency, writes one answer at a time. The label words are also scored on the
same prompts in the same process (``scoring_accuracy``), so one run shows both numbers.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from icl import chat
from icl.answers import MATCHES, answer_text, match_class, stops
from icl.config import DecodingConfig, ModelConfig, RunConfig
from icl.errors import ICLError, unknown_name
from icl.lm.batching import AUTO, CPU_BATCH_SIZE
from icl.lm.decoding import (
    BatchRows,
    ModelDrafter,
    PromptLookupDrafter,
    Stream,
    generate_batch,
    speculative_generate,
)
from icl.lm.forward import encode_prefix
from icl.lm.loading import load_tokenizer, same_tokenizer
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
    # plain decoding: answers written side by side (auto: 16 on CPU, more on CUDA)
    batch_size: int | str = AUTO


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
    size = decoding.batch_size
    if size != AUTO and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ICLError(f"decoding.batch_size must be a positive integer or auto, got {size!r}")
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
        batch_size=d.batch_size,
    )
    if d.speculative == "draft":
        check_draft_tokenizer(cfg.model, d.draft)
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


# batch_size=auto for plain decoding on CUDA: rows hold their own copy of the prefix's cache
CUDA_DECODE_BATCH_SIZE = 128


@dataclass
class Decoder:
    """Everything decoding needs besides the prompts."""

    decoding: Decoding
    demo_sep: str  # an answer ends at a newline or this separator
    lm: object
    draft: object | None = None
    # format=chat: an answer also ends where the chat template closes the assistant's turn
    end_of_turn: str | None = None
    progress: bool = False

    def stop(self, tokens: list[int]) -> bool:
        eos = self.lm.tokenizer.eos_token_id
        if tokens[-1] == eos:
            return True
        if self.end_of_turn and self.end_of_turn in self.lm.tokenizer.decode(tokens):
            return True
        return stops(self.lm.tokenizer.decode(tokens, skip_special_tokens=True), self.demo_sep)

    @property
    def batch_size(self) -> int:
        size = self.decoding.batch_size
        if size != AUTO:
            return size
        return CUDA_DECODE_BATCH_SIZE if self.lm.device.type == "cuda" else CPU_BATCH_SIZE

    def decode_batch(self, queries, encoded, generators):
        """Plain decoding of one answer per query, side by side over the encoded prefix."""
        d = self.decoding
        batch = BatchRows(
            self.lm.model, self.lm.device, encoded.cache, encoded.length, len(queries)
        )
        return generate_batch(batch, queries, d.sampler, d.max_new_tokens, self.stop, generators)

    def decode_speculative(self, request, encoded, draft_encoded, generator):
        """One answer by speculative sampling: the target checks the drafts in one pass."""
        d = self.decoding
        target = Stream(self.lm.model, self.lm.device, encoded.cache, encoded.length)
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


def tokenizer_mismatch(target: str, draft: str) -> ICLError:
    return ICLError(
        f"draft model {draft!r} does not share {target!r}'s tokenizer; speculative decoding "
        f"needs the same tokens (or use decoding.speculative=prompt_lookup)"
    )


def check_draft_tokenizer(target: ModelConfig, draft: ModelConfig) -> None:
    """Before any model loads: the draft's tokenizer must be the target's (drafts are ids)."""
    if dataclasses.replace(draft, name=target.name) == target:
        return  # the same model: the same tokenizer
    if not same_tokenizer(load_tokenizer(target), load_tokenizer(draft)):
        raise tokenizer_mismatch(target.name, draft.name)


def load_draft(plan: GeneratePlan, models, lm):
    """The draft model, checked again once loaded (a caller's own loader may differ)."""
    if plan.draft is None:
        return None
    draft = models.get(plan.draft)
    if not same_tokenizer(draft.tokenizer, lm.tokenizer) or draft.bos != lm.bos:
        raise tokenizer_mismatch(lm.name, draft.name)
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
    draft = load_draft(plan, models, lm)
    decoder = Decoder(
        plan.decoding, cell.template.demo_sep, lm, draft, turn_end, cell.scoring.progress
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
    """Each request's answers (``Decoded``), in sample order; the prefix of each group of
    requests is encoded once. The benchmarks time this same path."""
    samples = decoder.decoding.samples
    out: list[list] = [[None] * samples for _ in requests]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(request.prefix, []).append(i)
    bar = tqdm(total=len(requests) * samples, desc="generating", unit="answer",
               disable=not decoder.progress)  # fmt: skip
    for prefix, indices in groups.items():
        encoded, draft = decoder.encode(prefix)
        answers = [(i, j) for i in indices for j in range(samples)]
        if decoder.decoding.speculative != "none":
            for i, j in answers:
                out[i][j] = decoder.decode_speculative(
                    requests[i], encoded, draft, answer_seed(decoder.decoding.seed, i, j)
                )
                bar.update()
            continue
        # length-sorted batches: little padding; each answer keeps its own generator
        answers.sort(key=lambda a: len(requests[a[0]].query))
        size = decoder.batch_size
        for start in range(0, len(answers), size):
            chunk = answers[start : start + size]
            generators = [answer_seed(decoder.decoding.seed, i, j) for i, j in chunk]
            queries = [requests[i].query for i, _ in chunk]
            for (i, j), decoded in zip(chunk, decoder.decode_batch(queries, encoded, generators)):
                out[i][j] = decoded
            bar.update(len(chunk))
    bar.close()
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
