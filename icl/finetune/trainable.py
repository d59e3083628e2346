"""What a fine-tuning cell trains: a copy of the loaded model (never the cached one) with its
top layers, every parameter or LoRA adapters trainable, and a classifier head for kind=head."""

from __future__ import annotations

import copy

import torch

from icl.errors import ICLError

# the attention projections LoRA adapts (Llama, Gemma and most decoder LMs name them so)
LORA_TARGETS = ("q_proj", "v_proj")
ALL = "all"


def decoder_layers(model) -> torch.nn.ModuleList:
    layers = getattr(model.base_model, "layers", None)
    if layers is None:
        raise ICLError(
            f"cannot find the transformer layers of {type(model).__name__} (model.base_model"
            f".layers); use finetune.train_layers=all or finetune.lora_r"
        )
    return layers


def seeded(seed: int, build):
    """build() with the global generator seeded (module initialisers draw from it), then
    restored, so nothing else in the process sees a changed stream."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build()
    finally:
        torch.random.set_rng_state(state)


def add_lora(model, rank: int, alpha: float, seed: int):
    """LoRA adapters injected into the copy's attention projections (through peft)."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(LORA_TARGETS)
    )
    return seeded(seed, lambda: inject_adapter_in_model(config, model))


def trainable_copy(base, kind: str, train_layers, lora_r: int, lora_alpha: float, seed: int):
    """A deep copy of the base model with only the parameters this cell trains left
    trainable: LoRA adapters, every parameter (``all``), or the top N layers and the final
    norm (kind=prompt trains the final norm even at N = 0)."""
    model = copy.deepcopy(base)
    model.requires_grad_(False)
    if lora_r:
        model = add_lora(model, lora_r, lora_alpha, seed)
        for name, param in model.named_parameters():
            param.requires_grad_("lora_" in name)
        return model
    if train_layers == ALL:
        return model.requires_grad_(True)
    layers = decoder_layers(model)
    for layer in list(layers)[len(layers) - train_layers :] if train_layers else []:
        layer.requires_grad_(True)
    norm = getattr(model.base_model, "norm", None)
    if norm is not None and (train_layers or kind == "prompt"):
        norm.requires_grad_(True)
    return model


def lm_is_frozen(model) -> bool:
    return not any(p.requires_grad for p in model.parameters())


def make_head(kind: str, width: int, n_classes: int, seed: int, device, dtype):
    """linear: one layer on the hidden state; mlp: dense, tanh, out (RoBERTa's classifier)."""

    def build():
        if kind == "linear":
            return torch.nn.Linear(width, n_classes)
        return torch.nn.Sequential(
            torch.nn.Linear(width, width), torch.nn.Tanh(), torch.nn.Linear(width, n_classes)
        )

    return seeded(seed, build).to(device=device, dtype=dtype)


def trainable_state(model, head) -> dict[str, torch.Tensor]:
    """A copy of the trainable parameters only (the best checkpoint), keyed by name."""
    state = {f"lm.{n}": p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    if head is not None:
        state.update({f"head.{n}": p.detach().clone() for n, p in head.named_parameters()})
    return state


@torch.no_grad()
def load_trainable_state(model, head, state: dict[str, torch.Tensor]) -> None:
    params = {f"lm.{n}": p for n, p in model.named_parameters()}
    if head is not None:
        params.update({f"head.{n}": p for n, p in head.named_parameters()})
    for name, value in state.items():
        params[name].copy_(value)


def n_trainable(model, head) -> int:
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return count + (sum(p.numel() for p in head.parameters()) if head is not None else 0)
