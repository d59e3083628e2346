"""Run files (predictions, metrics, config): atomic writes, reading them back, the resume
check and the cell lock. The collected table of many runs is ``icl.collect``."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from icl.errors import ICLError
from icl.identity import LATER_KEYS, CellIdentity

try:  # POSIX; elsewhere cells go unlocked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
CONFIG_FILE = "config.yaml"
LOCK_FILE = ".icl.lock"


def write_atomic(path: Path, write, binary: bool = False) -> None:
    """``write(handle)`` into a file beside the target, then rename it over the target, so a
    reader never sees half a file and a failed write leaves none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text))


def write_predictions(out_dir: Path, rows) -> None:
    """One JSON line per row (each row a method's typed row, with ``to_json``); strict JSON:
    a NaN or infinity is an error (the methods refuse non-finite scores before this)."""
    text = "".join(json.dumps(row.to_json(), allow_nan=False) + "\n" for row in rows)
    write_text_atomic(Path(out_dir) / PREDICTIONS_FILE, text)


def finite_or_none(value):
    """The value with every NaN or infinite float (an undefined mean) as None: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def write_metrics(out_dir: Path, metrics: dict) -> None:
    """Written last: its presence means the cell finished."""
    text = json.dumps(finite_or_none(metrics), indent=2, allow_nan=False) + "\n"
    write_text_atomic(Path(out_dir) / METRICS_FILE, text)


class UnreadableMetrics(ValueError):
    """A metrics.json that is not a JSON object (a truncated or corrupted file)."""


def read_metrics(out_dir: Path) -> dict | None:
    """The metrics of a finished run in out_dir (None: none); UnreadableMetrics if corrupt."""
    path = Path(out_dir) / METRICS_FILE
    if not path.exists():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UnreadableMetrics(f"{path} is not valid JSON ({err})") from err
    if not isinstance(metrics, dict):
        raise UnreadableMetrics(f"{path} holds no JSON object")
    return metrics


def finished_cell(out_dir: Path, identity: CellIdentity) -> dict | None:
    """The metrics of a finished run of the same cell in out_dir, if there is one."""
    try:
        metrics = read_metrics(out_dir)
    except UnreadableMetrics:
        return None
    if metrics is None:
        return None
    return metrics if identity.matches(metrics) else None


@dataclass(frozen=True)
class FolderState:
    """What a run folder holds before a cell runs into it."""

    finished: dict | None = None  # the metrics of a finished run of this very cell
    other: dict | None = None  # the metrics of a finished run of another cell
    warnings: tuple[str, ...] = ()


def folder_state(out_dir: Path, identity: CellIdentity) -> FolderState:
    """Whether out_dir holds this cell finished, another cell, or nothing usable (a corrupt
    metrics.json counts as unfinished, with a warning)."""
    try:
        metrics = read_metrics(out_dir)
    except UnreadableMetrics as err:
        return FolderState(warnings=(f"{err}: the cell did not finish there and is run again",))
    if metrics is None:
        return FolderState()
    if identity.matches(metrics):
        return FolderState(finished=metrics)
    return FolderState(other=metrics)


def other_cell_error(out_dir: Path, identity: CellIdentity, stored: dict) -> ICLError:
    """The refusal to run a cell into a folder that holds another cell's results."""
    differ = [
        f"{key}: {stored.get(key, LATER_KEYS.get(key))!r} there, {value!r} here"
        for key, value in identity.to_dict().items()
        if stored.get(key, LATER_KEYS.get(key)) != value
    ]
    return ICLError(
        f"{out_dir} holds the results of another cell ({'; '.join(differ)}); choose another "
        f"output folder (hydra.run.dir=...), or overwrite=true to replace them"
    )


@contextlib.contextmanager
def cell_lock(out_dir: Path):
    """Hold the run folder's lock while a cell is checked, run and written, so two processes
    on one sweep never compute the same cell twice. An flock dies with its process: a killed
    run never holds a folder."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        handle = open(out_dir / LOCK_FILE, "a+")  # noqa: SIM115 (closed below)
    except OSError as err:
        raise ICLError(
            f"cannot use the output folder {out_dir} ({err.strerror or err}); make it writable "
            f"or choose another hydra.run.dir"
        ) from err
    if fcntl is None:  # pragma: no cover
        handle.close()
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            log.info("waiting for %s, which is running the cell in %s", holder, out_dir)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_jsonl(path: Path, lines: list[dict]) -> None:
    """JSON rows, one a line, written atomically."""
    write_atomic(path, lambda handle: handle.writelines(json.dumps(x) + "\n" for x in lines))


def write_run_files(
    out_dir: Path, config_text: str, rows, metrics: dict, files: dict | None = None
) -> None:
    """The config, the predictions (and a method's further JSONL ``files``), then
    metrics.json (whose presence means finished). A failed write (a full disk, a read-only
    folder) leaves none of them, and says why."""
    out_dir = Path(out_dir)
    files = files or {}
    written = [out_dir / CONFIG_FILE, out_dir / PREDICTIONS_FILE, *(out_dir / n for n in files)]
    # temporary files of a run killed mid-write (the folder's lock is ours: none is live)
    for name in (CONFIG_FILE, PREDICTIONS_FILE, METRICS_FILE, *files):
        for stale in out_dir.glob(f".{name}.*"):
            with contextlib.suppress(OSError):
                stale.unlink()
    try:
        # the folder reads as unfinished while its files change
        (out_dir / METRICS_FILE).unlink(missing_ok=True)
        write_text_atomic(written[0], config_text)
        write_predictions(out_dir, rows)
        for name, lines in files.items():
            write_jsonl(out_dir / name, lines)
        write_metrics(out_dir, metrics)
    except OSError as err:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        raise ICLError(
            f"could not write the run files to {out_dir} ({err.strerror or err}: "
            f"{err.filename or out_dir}); nothing of this run was kept: free disk space or make "
            f"the folder writable (or choose another hydra.run.dir), then run it again"
        ) from err


def read_config(out_dir: Path):
    """The RunConfig a run saved (keys added since then take their defaults)."""
    from omegaconf import OmegaConf

    from icl.config import RunConfig

    stored = OmegaConf.load(Path(out_dir) / CONFIG_FILE)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), stored))


def read_predictions(out_dir: Path) -> list[dict]:
    """The rows of predictions.jsonl as JSON dicts (the method's row type reads them)."""
    with open(Path(out_dir) / PREDICTIONS_FILE) as handle:
        return [json.loads(line) for line in handle]
