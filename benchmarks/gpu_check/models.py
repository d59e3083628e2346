"""Random-weight models of the real architectures, and random requests to score with them."""

from __future__ import annotations

import random

import torch

from benchmarks import icl_side

ARCHS = {
    "smollm2-135m": dict(
        model_type="llama",
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        vocab_size=49152,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        tie_word_embeddings=True,
    ),
    "gemma3-270m": dict(
        model_type="gemma3_text",
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        vocab_size=262144,
        max_position_embeddings=32768,
        query_pre_attn_scalar=256,
        sliding_window=512,
        layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3,
        tie_word_embeddings=True,
    ),
}


def build(arch: str, device, dtype, layers: int | None = None):
    """An icl LanguageModel of the architecture with random weights (seed 0)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(ARCHS[arch])
    if layers:  # a shallower model of the same width, for smoke tests
        spec["num_hidden_layers"] = layers
        if "layer_types" in spec:
            spec["layer_types"] = spec["layer_types"][-layers:]
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(device=device, dtype=dtype).eval()
    return icl_side.random_language_model(arch, model, config.max_position_embeddings, device)


def requests(n: int, prefix_len: int, suffix_len: int, option_lens, vocab: int, seed=0):
    """n requests sharing one random prefix; suffixes of suffix_len +- 3 random tokens."""
    rng = random.Random(seed)

    def toks(k):
        return tuple(rng.randrange(10, vocab - 10) for _ in range(k))

    prefix = toks(prefix_len)
    return [
        icl_side.ScoreRequest(
            prefix, toks(suffix_len + rng.randint(-3, 3)), tuple(toks(k) for k in option_lens)
        )
        for _ in range(n)
    ]


def free_memory(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
