"""End to end through the console scripts with the tiny model: run, sweep, collect, plot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import compose_config
from omegaconf import OmegaConf

import icl.cli

METRICS_KEYS = {"accuracy", "macro_f1", "n", "task", "template", "model", "k", "labels", "seed"}
PREDICTION_KEYS = {
    "example_id",
    "demo_ids",
    "demo_label_words",
    "option_logprob",
    "prediction",
    "gold",
    "zero_shot_perplexity",
    "kshot_perplexity",
}
TINY = ("model=tiny-llama", "task=sst2", "eval.n_test=10", "eval.progress=false")


def script(name: str) -> str:
    """The console script installed beside this interpreter (else the one on PATH)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def start_script(name: str, *args: str, cwd: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": os.environ.get("ICL_TEST_THREADS", "1"),
    }
    return subprocess.Popen(
        [script(name), *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run_script(
    name: str, *args: str, cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess:
    return finish(start_script(name, *args, cwd=cwd), timeout)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """A single run, a two-by-two sweep and a bad-template run, started side by side."""
    root = tmp_path_factory.mktemp("cli")
    grid = ("demos.k=0,1", "demos.labels=gold,permuted")
    commands = {
        "single": (*TINY, "demos.k=2", f"hydra.run.dir={root / 'single'}"),
        "sweep": ("-m", *TINY, *grid, f"hydra.sweep.dir={root / 'sweep'}"),
        "bad": (*TINY, "template=no_such_template", f"hydra.run.dir={root / 'bad'}"),
    }
    started = {}
    for key, args in commands.items():
        cwd = root / f"{key}-cwd"
        cwd.mkdir()
        started[key] = start_script("icl-run", *args, cwd=cwd)
    return {key: (root / key, finish(proc)) for key, proc in started.items()}


@pytest.fixture(scope="module")
def single_run(runs) -> Path:
    out, proc = runs["single"]
    ok(proc)
    return out


@pytest.fixture(scope="module")
def sweep(runs) -> Path:
    out, proc = runs["sweep"]
    ok(proc)
    return out


def test_run_writes_metrics_predictions_and_config(single_run):
    metrics = json.loads((single_run / "metrics.json").read_text())
    assert set(metrics) >= METRICS_KEYS
    assert (metrics["task"], metrics["model"], metrics["template"]) == (
        "sst2",
        "tiny-llama",
        "review",
    )
    assert (metrics["k"], metrics["labels"], metrics["n"]) == (2, "gold", 10)
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1

    lines = (single_run / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 10
    rows = [json.loads(line) for line in lines]
    assert len({row["example_id"] for row in rows}) == 10
    for row in rows:
        assert set(row) >= PREDICTION_KEYS
        assert len(row["demo_ids"]) == len(row["demo_label_words"]) == 2
        assert set(row["option_logprob"]) == {"negative", "positive"}
        assert row["prediction"] == max(row["option_logprob"], key=row["option_logprob"].get)
    correct = [row["prediction"] == row["gold"] for row in rows]
    assert metrics["accuracy"] == pytest.approx(sum(correct) / len(rows))

    config = OmegaConf.load(single_run / "config.yaml")
    assert config.demos.k == 2 and config.model.name == "tiny-llama"


def test_sweep_writes_one_finished_cell_per_combination(sweep):
    cells = [json.loads(p.read_text()) for p in sweep.rglob("metrics.json")]
    assert len(cells) == 4
    assert {(m["k"], m["labels"]) for m in cells} == {
        (0, "gold"),
        (0, "permuted"),
        (1, "gold"),
        (1, "permuted"),
    }


def test_collect_then_plot_write_the_summaries_and_a_png(sweep):
    ok(run_script("icl-collect", str(sweep), cwd=sweep.parent))
    runs = pd.read_csv(sweep / "summary.csv")
    assert len(runs) == 4
    assert set(zip(runs["k"], runs["labels"])) == {
        (0, "gold"),
        (0, "permuted"),
        (1, "gold"),
        (1, "permuted"),
    }
    assert len(pd.read_parquet(sweep / "summary.parquet")) == 4
    seeds = pd.read_csv(sweep / "summary_seeds.csv")
    assert len(seeds) == 4 and (seeds["n_seeds"] == 1).all()
    assert "accuracy_mean" in seeds

    ok(run_script("icl-plot", str(sweep), cwd=sweep.parent))
    pngs = list(sweep.glob("*.png"))
    assert pngs and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_collect_of_an_empty_folder_fails_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        icl.cli.collect([str(tmp_path)])
    assert info.value.code != 0
    assert "no metrics.json" in capsys.readouterr().err


def test_unknown_template_exits_non_zero_with_the_valid_names(runs):
    out, proc = runs["bad"]
    assert proc.returncode != 0
    assert "no_such_template" in proc.stderr
    for name in ("review", "it_was", "rating", "question_answer"):
        assert name in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(out.parent.glob("bad*/**/metrics.json"))


def test_wandb_logger_in_offline_mode_logs_a_cell_without_an_account(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_config(
        "model=tiny-llama",
        "task=sst2",
        "eval.n_test=4",
        "eval.progress=false",
        "demos.k=1",
        "logger=wandb",
        "logger.mode=offline",
    )
    cfg.out_dir = str(tmp_path / "run")
    accuracy = icl.cli.execute(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert accuracy == metrics["accuracy"] and metrics["n"] == 4
    # the offline run's log, and its predictions table with one row per test example
    (run_dir,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert list(run_dir.glob("*.wandb"))
    (table_file,) = (run_dir / "files" / "media" / "table").glob("predictions_*.table.json")
    table = json.loads(table_file.read_text())
    assert len(table["data"]) == 4 and "prediction" in table["columns"]
