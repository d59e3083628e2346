"""Fault injection: kills, full disks, read-only folders, damaged caches and metrics files.

Each fault ends with a message and no partial file, and the next run recovers; a real sweep
killed at seeded random moments resumes to byte-identical results.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import ROOT, CountingLoader, fail_if_loaded, run_config

import icl.cli
import icl.methods
import icl.runner
from icl import collect, results
from icl.errors import ICLError
from icl.lm import model_cache
from icl.runner import run_cell

SMALL = ("task=sst2", "model=tiny-llama", "eval.n_test=4", "demos.k=2")
# what differs between two runs of the same cell: timings
# how a cell's work was done, not what it found: timings, and the examples computed against
# those served by the memo or the cross-process score cache (a resumed sweep finds the
# cache warm from the cells before the kill, so these differ where the results must not)
TIMINGS = (
    "wall_s",
    "scoring_s",
    "examples_per_s",
    "examples_scored",
    "examples_from_memo",
    "examples_from_cache",
    "zero_shot_perplexity_s",
    "zero_shot_computed",
    "zero_shot_from_memo",
    "zero_shot_from_cache",
)


def run_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name != results.LOCK_FILE}


def reference(tmp_path) -> bytes:
    """The predictions of an undisturbed run of SMALL."""
    run_cell(run_config(*SMALL, out_dir=tmp_path / "reference"), load_model=CountingLoader())
    return (tmp_path / "reference" / results.PREDICTIONS_FILE).read_bytes()


class FillingDisk:
    """os.fdopen for results: the predictions file gets half its text, then ENOSPC."""

    def __init__(self, real):
        self.real = real

    def __call__(self, fd, mode="r", *args, **kwargs):
        handle = self.real(fd, mode, *args, **kwargs)
        write = handle.write

        def partial(text):
            if len(text) > 200:  # the predictions, not the small config
                write(text[: len(text) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return write(text)

        handle.write = partial
        return handle


def test_a_disk_that_fills_mid_write_leaves_no_file_and_the_next_run_recovers(
    tmp_path, monkeypatch
):
    expected = reference(tmp_path)
    out = tmp_path / "full"
    with monkeypatch.context() as patch:
        patch.setattr(results.os, "fdopen", FillingDisk(os.fdopen))
        with pytest.raises(ICLError, match="No space left on device.*nothing of this run"):
            run_cell(run_config(*SMALL, out_dir=out), load_model=CountingLoader())
    assert run_files(out) == set()  # no partial predictions, no temporary file, no config
    run_cell(run_config(*SMALL, out_dir=out), load_model=CountingLoader())
    assert (out / results.PREDICTIONS_FILE).read_bytes() == expected


def test_a_read_only_folder_ends_with_a_message_and_the_next_run_recovers(tmp_path, monkeypatch):
    expected = reference(tmp_path)
    out = tmp_path / "read-only"
    out.mkdir()
    with monkeypatch.context() as patch:
        if os.geteuid() == 0:  # root writes through permissions: refuse as a read-only mount would

            def denied(*args, dir=None, **kwargs):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))

            patch.setattr(results.tempfile, "mkstemp", denied)
        else:
            out.chmod(0o555)
        with pytest.raises(ICLError, match="Permission denied.*make the folder writable"):
            run_cell(run_config(*SMALL, out_dir=out), load_model=CountingLoader())
    out.chmod(0o755)
    assert run_files(out) == set()
    run_cell(run_config(*SMALL, out_dir=out), load_model=CountingLoader())
    assert (out / results.PREDICTIONS_FILE).read_bytes() == expected


def test_a_finished_cell_with_hydras_own_files_is_not_listed_as_unfinished(tmp_path):
    """Hydra writes .hydra/config.yaml into every run folder: that is no run of its own."""
    run_cell(run_config(*SMALL, out_dir=tmp_path / "cell"), load_model=CountingLoader())
    (tmp_path / "cell" / ".hydra").mkdir()
    (tmp_path / "cell" / ".hydra" / results.CONFIG_FILE).write_text("x: 1\n")
    assert collect.incomplete_runs(tmp_path) == []
    (tmp_path / "stopped" / ".hydra").mkdir(parents=True)
    (tmp_path / "stopped" / ".hydra" / results.CONFIG_FILE).write_text("x: 1\n")
    (listed,) = collect.incomplete_runs(tmp_path)
    assert listed.startswith(f"{tmp_path / 'stopped'}: unfinished")


def test_a_truncated_metrics_file_is_listed_then_rerun_with_a_warning(tmp_path, capsys):
    expected = reference(tmp_path)
    metrics_path = tmp_path / "reference" / results.METRICS_FILE
    metrics_path.write_text(metrics_path.read_text()[:100])
    (tmp_path / "unfinished" / ".hydra").mkdir(parents=True)  # a cell that never finished
    listed = collect.incomplete_runs(tmp_path)
    assert any("reference: unreadable" in line for line in listed)
    assert any("unfinished: unfinished (no metrics.json)" in line for line in listed)
    with pytest.raises(FileNotFoundError):  # no readable run: nothing to tabulate
        collect.collect_runs(tmp_path)
    metrics = run_cell(run_config(*SMALL, out_dir=tmp_path / "reference"), CountingLoader())
    assert len(metrics["warnings"]) == 1 and "is not valid JSON" in metrics["warnings"][0]
    assert (tmp_path / "reference" / results.PREDICTIONS_FILE).read_bytes() == expected
    icl.cli.collect([str(tmp_path)])
    out = capsys.readouterr().out
    assert "1 cell(s) not in these tables" in out and "unfinished: unfinished" in out
    assert "nan" not in out.split("1 cell(s)")[0].lower()


def test_a_cell_held_by_another_process_is_waited_for_then_skipped(tmp_path):
    out = tmp_path / "cell"
    cfg = run_config(*SMALL, out_dir=out)
    held, other = threading.Event(), {}

    def first_process():
        with results.cell_lock(out):
            held.set()
            time.sleep(1.0)  # the second process arrives while this one computes
            method = icl.methods.get_method("score")
            other["metrics"] = icl.runner._run_locked(
                cfg, method, method.identity(cfg), out, CountingLoader()
            )

    thread = threading.Thread(target=first_process)
    thread.start()
    held.wait()
    started = time.perf_counter()
    assert run_cell(cfg, load_model=fail_if_loaded) is not None  # waited, then found it done
    thread.join()
    assert time.perf_counter() - started > 0.5
    assert results.read_metrics(out)["seed"] == other["metrics"]["seed"]


def start_python(code: str, path: Path) -> subprocess.Popen:
    """This checkout's icl in a child Python running ``code`` on ``path``; its output piped."""
    return subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_killed_process_does_not_hold_its_cell(tmp_path):
    out = tmp_path / "cell"
    holder = start_python(
        "import sys, time; from icl import results\n"
        "with results.cell_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)",
        out,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    metrics = run_cell(run_config(*SMALL, out_dir=out), load_model=CountingLoader())
    assert metrics["n"] == 4


# the model cache


def tiny_save(staging: Path) -> None:
    """What a cache build writes: a config and a safetensors file (a stand-in for the model)."""
    import torch
    from safetensors.torch import save_file

    (staging / "config.json").write_text("{}")
    save_file({"weight": torch.arange(4096, dtype=torch.float32)}, staging / "model.safetensors")


class CountingSave:
    def __init__(self):
        self.calls = 0

    def __call__(self, staging: Path) -> None:
        self.calls += 1
        tiny_save(staging)


def test_an_untouched_cache_is_verified_without_reading_its_weights(tmp_path, monkeypatch):
    save, target = CountingSave(), tmp_path / "models" / "m"
    model_cache.ensure_cache(target, save)
    hashed = []
    monkeypatch.setattr(model_cache, "sha256_of", lambda path: hashed.append(path) or "")
    model_cache.ensure_cache(target, save)
    assert save.calls == 1 and hashed == []


@pytest.mark.parametrize("damage", ["overwrite", "truncate", "delete"])
def test_a_damaged_cache_is_rebuilt_with_a_message(tmp_path, damage, capsys):
    save, target = CountingSave(), tmp_path / "models" / "m"
    model_cache.ensure_cache(target, save)
    weights = target / "model.safetensors"
    built = weights.read_bytes()
    if damage == "overwrite":  # the same size, other bytes (NaN scores, once loaded)
        with open(weights, "r+b") as handle:
            handle.seek(len(built) // 2)
            handle.write(b"\xff" * 64)
    elif damage == "truncate":
        weights.write_bytes(built[:1000])
    else:
        weights.unlink()
    model_cache.ensure_cache(target, save)
    assert save.calls == 2 and weights.read_bytes() == built
    assert f"model cache {target}" in capsys.readouterr().err
    assert [p.name for p in target.parent.iterdir()] == ["m"]  # the bad copy is gone


def test_a_cache_from_before_manifests_is_adopted_only_when_whole(tmp_path):
    save, target = CountingSave(), tmp_path / "models" / "m"
    model_cache.ensure_cache(target, save)
    (target / model_cache.MANIFEST).unlink()
    model_cache.ensure_cache(target, save)  # whole: adopted, a manifest written
    assert save.calls == 1 and (target / model_cache.MANIFEST).exists()
    (target / model_cache.MANIFEST).unlink()
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    model_cache.ensure_cache(target, save)
    assert save.calls == 2


def test_a_build_killed_midway_leaves_a_staging_folder_that_the_next_build_removes(tmp_path):
    target = tmp_path / "models" / "m"
    builder = start_python(
        "import sys, time; from pathlib import Path; from icl.lm import model_cache\n"
        "def save(staging):\n"
        "    (staging / 'config.json').write_text('{}'); print('saving', flush=True)\n"
        "    time.sleep(600)\n"
        "model_cache.ensure_cache(Path(sys.argv[1]), save)",
        target,
    )
    assert builder.stdout.readline().strip() == "saving"
    builder.send_signal(signal.SIGKILL)
    builder.wait()
    (left,) = target.parent.iterdir()
    assert left.name.startswith(".m-build-") and (left / "config.json").exists()
    model_cache.ensure_cache(target, tiny_save)
    assert [p.name for p in target.parent.iterdir()] == ["m"]


# a real sweep killed at random moments


SWEEP = (
    "-m",
    "task=sst2",
    "model=smollm2-135m",
    "demos.k=0,2",
    "demos.labels=gold,random",
    "demos.seed=1,2",
    "eval.n_test=4",
    "eval.progress=false",
)


def start_sweep(sweep_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["OMP_NUM_THREADS"] = os.environ.get("ICL_TEST_THREADS", "1")
    return subprocess.Popen(
        [*icl.cli.ICL_RUN, *SWEEP, f"hydra.sweep.dir={sweep_dir}"],
        cwd=sweep_dir.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def cell_files(sweep_dir: Path) -> dict[str, tuple[bytes, dict]]:
    """Each cell's predictions (bytes) and metrics (timings aside)."""
    found = {}
    for metrics_path in sorted(sweep_dir.rglob(results.METRICS_FILE)):
        folder = metrics_path.parent
        metrics = json.loads(metrics_path.read_text())
        for key in TIMINGS:
            metrics.pop(key, None)
        predictions = (folder / results.PREDICTIONS_FILE).read_bytes()
        found[str(folder.relative_to(sweep_dir))] = (predictions, metrics)
    return found


@pytest.mark.slow
def test_a_real_sweep_killed_at_random_moments_resumes_to_identical_files(tmp_path):
    whole = tmp_path / "whole"
    started, first_cell = time.perf_counter(), None
    proc = start_sweep(whole)
    while proc.poll() is None:  # when the first cell lands: the start (imports, model) is over
        if first_cell is None and next(whole.rglob(results.METRICS_FILE), None):
            first_cell = time.perf_counter() - started
        time.sleep(0.05)
    assert proc.returncode == 0, proc.stderr.read()
    duration = time.perf_counter() - started
    expected = cell_files(whole)
    assert len(expected) == 8 and first_cell is not None

    killed = tmp_path / "killed"
    # two kills, each while cells are being scored and written (a kill during the start
    # only repeats the start), early enough that the two together leave cells undone
    rng = random.Random(15)
    for _ in range(2):
        proc = start_sweep(killed)
        time.sleep(rng.uniform(first_cell * 0.9, first_cell + 0.3 * (duration - first_cell)))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(cell_files(killed)) < 8  # the kills stopped the sweep short
    proc = start_sweep(killed)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert cell_files(killed) == expected
    leftovers = [p for p in killed.rglob(".*") if p.is_file() and p.name != results.LOCK_FILE]
    assert not [p for p in leftovers if p.parent.name != ".hydra"]
