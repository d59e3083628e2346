"""Tiny random-weight models built in memory, for fast tests of the whole pipeline."""

from __future__ import annotations

import torch

TINY_ARCHS = ("llama", "gemma3", "gemma2")


# a ChatML-like chat template in plain text, so format=chat runs on the tiny models too
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def byte_tokenizer():
    """A byte-level tokenizer with no merges: every UTF-8 byte is one token, BOS added; its
    chat template is ``TINY_CHAT_TEMPLATE``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = sorted(bytes_to_unicode().values())
    vocab = {"<bos>": 0, "<eos>": 1, "<pad>": 2}
    vocab.update({ch: i + 3 for i, ch in enumerate(alphabet)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 0)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def tiny_config(arch: str, vocab_size: int, sliding_window: int = 8):
    from transformers import Gemma2Config, Gemma3TextConfig, LlamaConfig

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    if arch == "llama":
        return LlamaConfig(num_hidden_layers=2, **common)
    # one sliding-window layer and one global one, with a window prefixes can pass
    windowed = dict(
        num_hidden_layers=2,
        head_dim=8,
        sliding_window=sliding_window,
        layer_types=["sliding_attention", "full_attention"],
        **common,
    )
    if arch == "gemma3":
        return Gemma3TextConfig(**windowed)
    if arch == "gemma2":
        # soft-capped attention scores (and logits) on top of the sliding window
        return Gemma2Config(
            attn_logit_softcapping=5.0,
            initializer_range=0.5,
            final_logit_softcapping=30.0,
            **windowed,
        )
    raise ValueError(f"unknown tiny architecture {arch!r}; valid: {', '.join(TINY_ARCHS)}")


def tiny_model_and_tokenizer(arch: str = "llama", seed: int = 0, sliding_window: int = 8):
    """A random-weight causal LM over the byte tokenizer; the same seed gives the same weights."""
    from transformers import AutoModelForCausalLM

    tokenizer = byte_tokenizer()
    config = tiny_config(arch, len(tokenizer), sliding_window)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # weight init draws from the global generator; restored below
    try:
        model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval(), tokenizer
