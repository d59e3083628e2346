"""Every use of icl by the benchmarks, in one place: when icl's API moves, only this file does.

The lm-eval worker never imports this module: its wall time and peak RSS are lm-eval's own.
"""

from __future__ import annotations

import contextlib
import types
from pathlib import Path

import torch

from icl.config import ModelConfig, TemplateConfig
from icl.data import default_data_dir
from icl.lm import LanguageModel, ScoreRequest, load_language_model, prefix_attention
from icl.lm import score_requests as _score_requests
from icl.lm.engines import ENGINES, resolve_engine, shared_query_start
from icl.lm.forward import padded
from icl.lm.loading import cache_key, cache_root, gguf_path, load_tokenizer, tokenizer_adds_bos
from icl.prompts import build_prompt, option_tokens
from icl.templates import render_prefix, render_prompt

__all__ = [
    "ENGINES",
    "LOGGER",
    "ScoreRequest",
    "adds_bos",
    "compiled_manual_attention",
    "default_data_dir",
    "greedy_answers",
    "icl_prompts",
    "load_language_model",
    "manual_attention",
    "model_config",
    "model_folder",
    "padded",
    "prefix_attention",
    "random_language_model",
    "render_prefix",
    "retrieval_plan",
    "retrieval_prompts",
    "render_prompt",
    "resolve_engine",
    "score",
    "shared_prefix_call",
    "shared_query_start",
    "template_config",
]

# the parent of icl's scoring loggers: batch_size=auto's choice is logged below it
LOGGER = "icl.lm"
_LAYER0 = types.SimpleNamespace(layer_idx=0)


def model_config(spec: dict, device: str, dtype: str) -> ModelConfig:
    """An icl model config from a benchmark's model entry (name, source, package, ...)."""
    return ModelConfig(**spec, device=device, dtype=dtype)


def template_config(input: str, label_words, answer_sep: str, demo_sep: str) -> TemplateConfig:
    return TemplateConfig(
        input=input, label_words=list(label_words), answer_sep=answer_sep, demo_sep=demo_sep
    )


def model_folder(cfg: ModelConfig) -> Path:
    """The float folder icl's loader dequantises a GGUF model into (and reads it from)."""
    return cache_root() / cache_key(cfg, gguf_path(cfg))


def adds_bos(cfg: ModelConfig) -> bool:
    """Whether icl prepends BOS for this model (its tokenizer's own behaviour, tested)."""
    return tokenizer_adds_bos(load_tokenizer(cfg))


def random_language_model(name: str, model, max_length: int, device) -> LanguageModel:
    """A LanguageModel around a randomly initialised model (no tokenizer; token ids only)."""
    return LanguageModel(
        name=name,
        model=model,
        tokenizer=None,
        adds_bos=False,
        max_length=max_length,
        device=device,
        fingerprint=f"random-weights:{name}:{model.config.num_hidden_layers}:{model.dtype}",
    )


def score(lm, requests, engine: str, batch_size, want_query: bool, merge: bool = False):
    """icl.lm.score_requests with no memo: every call computes every request (``merge``: the
    per-example prompts' grouping, as a retrieval cell scores them)."""
    return _score_requests(
        lm, requests, engine=engine, batch_size=batch_size, want_query=want_query, progress=False,
        merge=merge,
    )  # fmt: skip


def composed_config(overrides: list[str]):
    """The typed RunConfig icl-run would get for these overrides."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from icl.cli import conf_dir, setup

    setup()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return OmegaConf.to_object(compose("config", overrides=["eval.progress=false", *overrides]))


def retrieval_plan(overrides: list[str]):
    """icl's plan of a cell composed from icl-run overrides (e.g. demos.selection=knn): its
    test examples and each one's retrieved demonstrations, before any model loads."""
    from icl.plan import plan_cell

    return plan_cell(composed_config(overrides))


def finetune_plan(overrides: list[str]):
    """icl's plan of a method=finetune cell (its training, development and test examples)."""
    from icl.methods import get_method

    cfg = composed_config(["method=finetune", *overrides])
    return get_method("finetune").plan(cfg)


def retrieval_prompts(lm, plan):
    """The requests the score method builds for the plan's examples (each with its own
    demonstrations), and each example's prompt text (the context lm-eval scores)."""
    options = option_tokens(lm, plan.template)
    built = [
        build_prompt(lm, plan.template, d.pairs, ex.fields, options)
        for d, ex in zip(plan.demos, plan.test)
    ]
    assert all(p.n_dropped == 0 for p in built), "every prompt fits the context"
    texts = [
        render_prompt(plan.template, d.pairs, ex.fields) for d, ex in zip(plan.demos, plan.test)
    ]
    return [p.request for p in built], texts


def icl_prompts(lm, template, shown: list[tuple[dict, str]], queries: list[dict]):
    """The requests icl's runner builds (``option_tokens`` + ``build_prompt``) and the number
    of demonstrations dropped to fit the context."""
    options = option_tokens(lm, template)
    built = [build_prompt(lm, template, shown, fields, options) for fields in queries]
    return [p.request for p in built], sum(p.n_dropped for p in built)


@contextlib.contextmanager
def manual_attention():
    """prefix_shared with its fused kernels switched off: the plain-operation path."""
    kernels = prefix_attention._kernels
    prefix_attention._kernels = lambda *args, **kwargs: []
    try:
        yield
    finally:
        prefix_attention._kernels = kernels


@contextlib.contextmanager
def compiled_manual_attention():
    """The manual path under torch.compile (fused kernels off)."""
    manual = prefix_attention._manual
    try:
        prefix_attention._manual = torch.compile(manual, dynamic=False)
        with manual_attention():
            yield
    finally:
        prefix_attention._manual = manual


def shared_prefix_call(module, q, k, v, pk, pv, length: int, **kwargs):
    """``module.shared_prefix_attention`` for layer 0 with (pk, pv) as the active prefix.

    ``module`` is icl's prefix_attention or an older copy of it loaded from a file.
    """
    token = module._ACTIVE.set(module.PrefixKV(layers={0: (pk, pv)}, length=length))
    try:
        return module.shared_prefix_attention(_LAYER0, q, k, v, **kwargs)
    finally:
        module._ACTIVE.reset(token)


def greedy_answers(lm, requests, max_new: int, batch_size="auto") -> list[str]:
    """Greedy answers (decoded text) through method=generate's own decoding path: each prefix
    encoded once, the examples decoded over its cache, ``batch_size`` side by side, until a
    newline or ``max_new`` tokens."""
    from icl.lm.sampling import Sampler
    from icl.methods.generate import Decoder, Decoding, decode_all

    decoder = Decoder(Decoding(Sampler("greedy"), max_new, batch_size=batch_size), "\n\n", lm)
    answers = decode_all(decoder, requests)
    return [lm.tokenizer.decode(a[0].tokens, skip_special_tokens=True) for a in answers]
