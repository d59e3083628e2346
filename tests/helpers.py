"""Helpers the test modules import: composed configs, real task pools, tiny in-memory models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import icl.cli
from icl.data import Pools, load_pools
from icl.lm.loading import LanguageModel, tokenizer_adds_bos
from icl.lm.tiny import tiny_model_and_tokenizer

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
LOCAL_TASKS = ("sst2", "rotten_tomatoes", "agnews", "rte", "cb")


def compose_config(*overrides: str):
    """The DictConfig ``icl-run`` would get for these command-line overrides."""
    icl.cli.setup()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def run_config(*overrides: str, out_dir: Path | None = None):
    """A typed RunConfig (quiet, writing to out_dir) for runner tests."""
    cfg = OmegaConf.to_object(compose_config("eval.progress=false", *overrides))
    if out_dir is not None:
        cfg.out_dir = str(out_dir)
    return cfg


_POOLS: dict[str, Pools] = {}


def task_pools(task: str) -> Pools:
    """The real demonstration and test pools of a local task, loaded once per session."""
    if task not in _POOLS:
        _POOLS[task] = load_pools(run_config(f"task={task}").task)
    return _POOLS[task]


def tiny_lm(
    arch: str = "llama", seed: int = 0, name: str | None = None, max_length: int = 2048
) -> LanguageModel:
    """A random-weight model over the byte tokenizer, built in memory (fresh each call)."""
    model, tok = tiny_model_and_tokenizer(arch, seed=seed)
    return LanguageModel(
        name or f"tiny-{arch}", model, tok, tokenizer_adds_bos(tok), max_length, torch.device("cpu")
    )


def fail_if_loaded(model_cfg):
    """A load_model for run_cell that fails the test: the error must come before any model."""
    pytest.fail(f"a model was loaded ({model_cfg.name}) before the input error was raised")


class CountingLoader:
    """A load_model for run_cell that hands out a tiny model and counts its calls."""

    def __init__(self, arch: str = "llama", **kwargs):
        self.arch, self.kwargs, self.calls = arch, kwargs, 0

    def __call__(self, model_cfg):
        self.calls += 1
        return tiny_lm(self.arch, **self.kwargs)
