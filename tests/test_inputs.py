"""Bad input: each case ends with a message that names the fix, and no metrics.json."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import ROOT, CountingLoader, fail_if_loaded, run_config, tiny_lm

import icl.cli
from icl import results
from icl.config import DatasetConfig, TaskConfig, TemplateConfig
from icl.errors import ICLError
from icl.lm.loading import check_model_folder
from icl.runner import run_cell

SMALL = ("task=sst2", "model=tiny-llama", "eval.n_test=4", "demos.k=1")


def write_csv(path, rows, header=("text", "label"), encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def task_over(tmp_path, files: dict[str, str], builder: str = "csv", **kwargs) -> TaskConfig:
    """A two-class task over files already written under tmp_path."""
    return TaskConfig(
        name="synthetic",
        dataset=DatasetConfig(path=builder, data_files=files),
        text_fields=["text"],
        label_values=["a", "b"],
        label_names=["a", "b"],
        demo_split="train",
        eval_split="train",
        templates={"t": TemplateConfig(input="Text: {text}\nLabel:", label_words=["a", "b"])},
        default_template="t",
        data_dir=str(tmp_path),
        **kwargs,
    )


def cell_on(tmp_path, task: TaskConfig, *overrides: str):
    cfg = run_config("model=tiny-llama", "eval.n_test=2", "demos.k=1", *overrides)
    cfg.task, cfg.template, cfg.out_dir = task, None, str(tmp_path / "run")
    return cfg


def refused(cfg, match: str, load_model=fail_if_loaded) -> ICLError:
    """The cell fails with a message matching ``match`` and writes no metrics.json."""
    with pytest.raises(ICLError, match=match) as info:
        run_cell(cfg, load_model=load_model)
    assert not (results.Path(cfg.out_dir) / results.METRICS_FILE).exists()
    return info.value


def rows(n: int) -> list[tuple[str, str]]:
    return [(f"text number {i}", "ab"[i % 2]) for i in range(n)]


# data


def test_a_row_with_an_empty_text_field_is_an_error_that_names_row_field_and_setting(tmp_path):
    write_csv(tmp_path / "train.csv", [*rows(9), ("", "a"), *rows(20)[9:]])
    task = task_over(tmp_path, {"train": "train.csv"})
    error = refused(cell_on(tmp_path, task), r"row 9 of split 'train'.*field 'text'")
    assert "task.missing_text=drop" in str(error)


def test_missing_text_drop_leaves_the_rows_out_and_records_how_many(tmp_path):
    write_csv(tmp_path / "train.csv", [*rows(10), ("", "a"), ("  ", "b"), *rows(20)[10:]])
    task = task_over(tmp_path, {"train": "train.csv"}, missing_text="drop")
    metrics = run_cell(cell_on(tmp_path, task), load_model=CountingLoader())
    assert metrics["warnings"] == [
        "task 'synthetic', split 'train': dropped 2 of 22 rows with a missing or empty text "
        "field (task.missing_text=drop)"
    ]
    assert "None" not in (tmp_path / "run" / results.PREDICTIONS_FILE).read_text()


def test_a_null_text_field_in_json_lines_is_not_scored_as_none(tmp_path):
    lines = [json.dumps({"text": t, "label": y}) for t, y in rows(12)]
    lines[3] = json.dumps({"text": None, "label": "a"})
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    task = task_over(tmp_path, {"train": "train.jsonl"}, builder="json")
    refused(cell_on(tmp_path, task), r"row 3 .* no text in field 'text'")


def test_a_malformed_json_line_names_the_file_and_line(tmp_path):
    lines = [json.dumps({"text": t, "label": y}) for t, y in rows(12)]
    lines[4] = '{"text": "broken", "label": '
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    task = task_over(tmp_path, {"train": "train.jsonl"}, builder="json")
    refused(cell_on(tmp_path, task), r"train\.jsonl, line 5: not valid JSON.*fix or remove")


def test_latin1_bytes_name_the_file_and_task_encoding_reads_them(tmp_path):
    write_csv(tmp_path / "train.csv", [("café crème", "a"), *rows(20)], encoding="latin-1")
    task = task_over(tmp_path, {"train": "train.csv"})
    refused(cell_on(tmp_path, task), r"train\.csv is not utf-8 \(byte 0xe9 on line 2\).*encoding")
    task = task_over(tmp_path, {"train": "train.csv"}, encoding="latin-1")
    metrics = run_cell(cell_on(tmp_path, task), load_model=CountingLoader())
    assert metrics["n"] == 2


def test_an_empty_data_file_is_named(tmp_path):
    (tmp_path / "train.csv").write_text("")
    task = task_over(tmp_path, {"train": "train.csv"})
    refused(cell_on(tmp_path, task), r"data file .*train\.csv is empty")


def test_n_test_beyond_the_test_pool_is_an_error_unless_all(tmp_path):
    write_csv(tmp_path / "train.csv", rows(20))  # 10 test examples after the hold-out
    task = task_over(tmp_path, {"train": "train.csv"})
    error = refused(cell_on(tmp_path, task, "eval.n_test=100000"), r"eval.n_test=100000 is more")
    assert "eval.n_test=all" in str(error) and "eval.n_test=10 " in str(error)
    metrics = run_cell(cell_on(tmp_path, task, "eval.n_test=all"), load_model=CountingLoader())
    assert (metrics["n"], metrics["n_test"]) == (10, "all")
    cfg = cell_on(tmp_path, task, "eval.n_test=up_to:50", "overwrite=true")
    assert run_cell(cfg, load_model=CountingLoader())["n"] == 10


@pytest.mark.parametrize("value", ["many", "0", "up_to:x"])
def test_an_invalid_n_test_fails_before_the_model(tmp_path, value):
    refused(run_config(*SMALL, f"eval.n_test={value}", out_dir=tmp_path), "positive integer")


# templates and label words


@pytest.mark.parametrize(
    "template, match",
    [
        ("Review: {text:>99999999}\nSentiment:", r"\{text:>99999999\}.*plain names"),
        ("Review: {text!r}\nSentiment:", r"\{text!r\}"),
        ("Review: {0}\nSentiment:", r"\{0\}"),
        ("Review: {}\nSentiment:", r"\{\}"),
        ("Review: {text.upper}\nSentiment:", r"\{text.upper\}"),
        ("Review: {text\nSentiment:", r"cannot be parsed.*doubled"),
        ("Review: {text}}\nSentiment:", r"cannot be parsed.*doubled"),
    ],
)
def test_template_fields_are_plain_names(tmp_path, template, match):
    cfg = run_config(*SMALL, out_dir=tmp_path)
    cfg.task.templates["review"].input = template
    refused(cfg, match)


def test_unquoted_yes_no_label_words_are_refused_with_the_fix(tmp_path):
    cfg = run_config(*SMALL, "task.templates.review.label_words=[false,true]", out_dir=tmp_path)
    refused(cfg, r"must be strings.*quote them")
    cfg = run_config(*SMALL, "label_words=[false,true]", out_dir=tmp_path)
    refused(cfg, r"must be strings.*quote them")


def test_options_that_are_a_prefix_of_another_are_refused_under_direct(tmp_path):
    words = ("task.templates.review.label_words=[good,goodness]",)
    cfg = run_config(*SMALL, *words, out_dir=tmp_path)
    refused(cfg, r"'goodness' starts with the tokens of 'good'.*direct_mean", CountingLoader())
    cfg = run_config(*SMALL, *words, "scoring.rule=direct_mean", out_dir=tmp_path)
    assert run_cell(cfg, load_model=CountingLoader())["rule"] == "direct_mean"


# scores


def nan_loader(model_cfg):
    """A tiny model whose weights were overwritten with NaN (a damaged cache)."""
    lm = tiny_lm("llama")
    with torch.no_grad():
        lm.model.model.embed_tokens.weight[5:40] = float("nan")
    return lm


def test_nan_scores_are_an_error_and_nothing_is_written(tmp_path):
    refused(
        run_config(*SMALL, out_dir=tmp_path), r"non-finite scores.*nothing was written", nan_loader
    )
    assert not (tmp_path / results.PREDICTIONS_FILE).exists()


def test_predictions_are_strict_json(tmp_path):
    run_cell(run_config(*SMALL, out_dir=tmp_path), load_model=CountingLoader())
    for line in (tmp_path / results.PREDICTIONS_FILE).read_text().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in predictions"))


# models


def test_an_empty_model_folder_says_what_it_lacks(tmp_path):
    with pytest.raises(ICLError, match="lacks config.json; safetensors weights.*save_pretrained"):
        check_model_folder(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"0")
    with pytest.raises(ICLError, match="pickled weights are not loaded"):
        check_model_folder(tmp_path)


# config


def test_a_task_without_an_ood_file_composes_and_ood_inputs_says_what_to_add(tmp_path):
    conf = tmp_path / "conf"
    (conf / "task").mkdir(parents=True)
    (conf / "task" / "mine.yaml").write_text(
        (ROOT / "conf" / "task" / "sst2.yaml").read_text().replace("name: sst2", "name: mine")
    )
    cfg = run_config(f"hydra.searchpath=[file://{conf}]", *SMALL[1:], "task=mine")
    assert cfg.task.name == "mine" and cfg.demos.ood_task is None
    cfg.out_dir, cfg.demos.labels = str(tmp_path / "run"), "ood_inputs"
    refused(cfg, r"task 'mine' has no default \(conf/ood/mine.yaml\).*corpus@demos.ood_task")


def icl_run(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*icl.cli.ICL_RUN, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )


def test_a_task_from_a_folder_outside_the_repo_runs_and_unknown_names_hint_config_dir(tmp_path):
    """The README's "Adding a task": a task YAML in a folder of one's own, with --config-dir;
    unquoted yes/no label words there are refused with the fix."""
    write_csv(tmp_path / "train.csv", [(f"text {i}", "ab"[i % 2]) for i in range(20)])
    (tmp_path / "mine" / "task").mkdir(parents=True)
    yaml = textwrap.dedent(f"""\
        defaults:
          - task_schema
          - _self_
        name: my_task
        dataset:
          path: csv
          data_files: {{train: {tmp_path / "train.csv"}}}
        text_fields: [text]
        label_values: [a, b]
        label_names: [first, second]
        demo_split: train
        eval_split: train
        default_template: basic
        templates:
          basic:
            input: "Text: {{text}}\\nLabel:"
            label_words: [no, yes]
        """)
    (tmp_path / "mine" / "task" / "my_task.yaml").write_text(yaml)
    args = ("model=tiny-llama", "eval.n_test=4", "eval.progress=false")
    unknown = icl_run("task=my_task", *args, cwd=tmp_path)
    assert unknown.returncode == 2
    assert "unknown task 'my_task'" in unknown.stderr and "--config-dir" in unknown.stderr
    assert "task_schema" not in unknown.stderr
    own = ("--config-dir", str(tmp_path / "mine"), "task=my_task", *args)
    bools = icl_run(*own, f"hydra.run.dir={tmp_path / 'bools'}", cwd=tmp_path)
    assert bools.returncode == 2 and 'quote them (label_words: ["no", "yes"])' in bools.stderr
    (tmp_path / "mine" / "task" / "my_task.yaml").write_text(
        yaml.replace("[no, yes]", '["no", "yes"]')
    )
    done = icl_run(*own, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / results.METRICS_FILE).read_text())["n"] == 4


def test_macro_f1_baseline_is_the_majority_class_macro_f1():
    from icl.metrics import classification_metrics

    metrics = classification_metrics([0, 0, 0, 0], [0, 0, 0, 1], ["a", "b"])
    assert metrics["majority_baseline"] == 0.75
    # always "a": F1(a) = 2*3 / (2*3 + 1) = 6/7, F1(b) = 0
    assert metrics["majority_baseline_macro_f1"] == pytest.approx(6 / 7 / 2)
    assert metrics["macro_f1"] == pytest.approx(metrics["majority_baseline_macro_f1"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
