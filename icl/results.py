"""Run files (predictions, metrics, config), resume checks, and the collected results table.

The tables of the studies are built from the collected table in ``icl.studies.tables``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from icl.errors import ICLError
from icl.identity import LATER_KEYS, LIST_FIELDS, SEED_FIELD, CellIdentity, group_columns
from icl.scoring import SCORING_RULES

try:  # POSIX; elsewhere cells go unlocked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
CONFIG_FILE = "config.yaml"
LOCK_FILE = ".icl.lock"
SUMMARY_STEM = "summary"
SEEDS_SUMMARY_STEM = "summary_seeds"
RULES_SUMMARY_STEM = "summary_rules"
# in the long form of the rule columns (rule_runs): the rule a row's metrics belong to
SCORED_RULE = "scored_rule"
# a generation run's share of answers that are no label word (not a class)
INVALID_SHARE = "prediction_share_invalid"


def _write_atomic(path: Path, text: str) -> None:
    """Write beside the target and rename over it, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_predictions(out_dir: Path, rows) -> None:
    """One JSON line per row (each row a method's typed row, with ``to_json``); strict JSON:
    a NaN or infinity is an error (the methods refuse non-finite scores before this)."""
    text = "".join(json.dumps(row.to_json(), allow_nan=False) + "\n" for row in rows)
    _write_atomic(Path(out_dir) / PREDICTIONS_FILE, text)


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
    _write_atomic(Path(out_dir) / METRICS_FILE, text)


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


def write_run_files(out_dir: Path, config_text: str, rows, metrics: dict) -> None:
    """The config, the predictions, then metrics.json (whose presence means finished). A
    failed write (a full disk, a read-only folder) leaves none of them, and says why."""
    out_dir = Path(out_dir)
    written = [out_dir / CONFIG_FILE, out_dir / PREDICTIONS_FILE]
    # temporary files of a run killed mid-write (the folder's lock is ours: none is live)
    for name in (CONFIG_FILE, PREDICTIONS_FILE, METRICS_FILE):
        for stale in out_dir.glob(f".{name}.*"):
            with contextlib.suppress(OSError):
                stale.unlink()
    try:
        # the folder reads as unfinished while its files change
        (out_dir / METRICS_FILE).unlink(missing_ok=True)
        _write_atomic(written[0], config_text)
        write_predictions(out_dir, rows)
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


def _flatten(metrics: dict, run_dir: Path, root: Path) -> dict:
    row = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    for key in LIST_FIELDS:  # identity lists, as one comparable value
        if key in metrics:
            row[key] = json.dumps(metrics[key])
    for name, share in (metrics.get("prediction_share") or {}).items():
        row[f"prediction_share_{name}"] = share
    for rule, scored in (metrics.get("rules") or {}).items():
        row[f"{rule}_accuracy"] = scored["accuracy"]
        row[f"{rule}_macro_f1"] = scored["macro_f1"]
        total = sum(scored["prediction_counts"].values())
        for name, count in scored["prediction_counts"].items():
            row[f"{rule}_share_{name}"] = count / total if total else float("nan")
    for name, p in (metrics.get("p_cf") or {}).items():
        row[f"p_cf_{name}"] = p
    row["run_dir"] = str(run_dir.relative_to(root)) if run_dir != root else "."
    return row


# what a run folder holds from its start (Hydra's .hydra, the lock) or a run that stopped
RUN_MARKERS = (".hydra", LOCK_FILE, CONFIG_FILE, PREDICTIONS_FILE)


def incomplete_runs(root: Path) -> list[str]:
    """The run folders under root with no finished result: unfinished (no metrics.json) or
    unreadable (a corrupt one); each line says which and how to finish it."""
    root = Path(root)
    found = []
    folders = {p.parent for marker in RUN_MARKERS for p in root.rglob(marker)}
    for folder in sorted(folders | {p.parent for p in root.rglob(METRICS_FILE)}):
        try:
            if read_metrics(folder) is None:
                found.append(f"{folder}: unfinished (no {METRICS_FILE}); rerun its sweep")
        except UnreadableMetrics as err:
            found.append(f"{folder}: unreadable ({err}); rerun its sweep to redo it")
    return found


def collect_runs(root: Path) -> pd.DataFrame:
    """One row per finished run under root (every readable metrics.json below it; the others
    are listed by ``incomplete_runs``)."""
    root = Path(root)
    rows = []
    for path in sorted(root.rglob(METRICS_FILE)):
        try:
            metrics = read_metrics(path.parent)
        except UnreadableMetrics:
            continue
        rows.append(_flatten(metrics, path.parent, root))
    if not rows:
        raise FileNotFoundError(f"no {METRICS_FILE} under {root}: nothing has finished there yet")
    frame = pd.DataFrame(rows)
    sort_by = [c for c in ["task", "model", "template", "labels", "k", SEED_FIELD] if c in frame]
    return frame.sort_values(sort_by).reset_index(drop=True)


def _generated_rows(run_dir: str, lines: list[dict], primary: str, n_classes: int) -> list[dict]:
    """A generation run's per-example outcomes (its first answer; an invalid one is -1),
    filed under the run's scoring rule so they pair with other runs of the same cell."""
    return [
        {"run_dir": run_dir, SCORED_RULE: primary, "example_id": str(line["example_id"]),
         "pred": -1 if line["prediction_index"] is None else line["prediction_index"],
         "gold": line["gold_index"], "n_classes": n_classes, "correct": bool(line["correct"])}
        for line in lines
    ]  # fmt: skip


def _example_rows(run_dir: str, lines: list[dict], primary: str, n_classes: int) -> list[dict]:
    """A run's per-example outcomes, one row per (example, rule computed)."""
    if lines and "generations" in lines[0]:
        return _generated_rows(run_dir, lines, primary, n_classes)
    rows = []
    for line in lines:
        if "correct" not in line or "option_logprob" not in line:
            return []  # a method whose rows are not classifications
        classes = list(line["option_logprob"])
        by_rule = line.get("predictions_by_rule") or {primary: line["prediction"]}
        gold = classes.index(line["gold"])
        for rule, predicted in by_rule.items():
            pred = classes.index(predicted)
            rows.append(
                {"run_dir": run_dir, SCORED_RULE: rule, "example_id": str(line["example_id"]),
                 "pred": pred, "gold": gold, "n_classes": len(classes), "correct": pred == gold}
            )  # fmt: skip
    return rows


def collect_examples(root: Path, runs: pd.DataFrame) -> pd.DataFrame:
    """Per-example outcomes of the collected runs, read from each run's predictions.jsonl:
    one row per (run_dir, scored_rule, example_id) with the predicted and gold class indices
    and ``correct``. Runs without predictions (or not of a classifying method) give none."""
    root = Path(root)
    rows = []
    primaries = runs["rule"] if "rule" in runs else pd.Series(None, index=runs.index)
    # classes per run: its prediction shares, but for the share of invalid answers
    shares = [c for c in runs.columns if c.startswith("prediction_share_") and c != INVALID_SHARE]
    n_classes = runs[shares].notna().sum(axis=1) if shares else pd.Series(0, index=runs.index)
    for run_dir, primary, n in zip(runs["run_dir"], primaries, n_classes):
        path = root / run_dir / PREDICTIONS_FILE
        if path.exists():
            primary = primary if isinstance(primary, str) else "direct"
            rows += _example_rows(run_dir, read_predictions(path.parent), primary, int(n))
    columns = ["run_dir", SCORED_RULE, "example_id", "pred", "gold", "n_classes", "correct"]
    return pd.DataFrame(rows, columns=columns)


def rule_columns(runs: pd.DataFrame) -> list[str]:
    """The per-rule metric columns of the collected table (``calibrated_accuracy``, ...)."""
    prefixes = tuple(f"{rule}_" for rule in SCORING_RULES) + ("p_cf_",)
    return [c for c in runs.columns if c.startswith(prefixes)]


def rule_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, rule): the rule's accuracy, macro-F1 and prediction shares.

    The long form of the rule columns, under the names the primary rule's metrics have
    (``accuracy``, ``macro_f1``, ``prediction_share_<class>``) and ``scored_rule``; runs with
    no per-rule metrics give one row each, for their primary rule.
    """
    base = runs.drop(columns=rule_columns(runs))
    p_cf = runs[[c for c in runs.columns if c.startswith("p_cf_")]]
    frames = []
    for rule in SCORING_RULES:
        if f"{rule}_accuracy" not in runs:
            continue
        done = runs[f"{rule}_accuracy"].notna()
        ours = [c for c in runs.columns if c.startswith(f"{rule}_share_")]
        frame = base[done].drop(columns=[c for c in base if c.startswith("prediction_share_")])
        frame = frame.assign(
            **{SCORED_RULE: rule},
            accuracy=runs.loc[done, f"{rule}_accuracy"],
            macro_f1=runs.loc[done, f"{rule}_macro_f1"],
            **{
                "prediction_share_" + c.removeprefix(f"{rule}_share_"): runs.loc[done, c]
                for c in ours
            },
        )
        frames.append(pd.concat([frame, p_cf[done]], axis=1))
    if not frames:
        # runs from before scoring.rules: each holds its one (primary) rule's metrics
        return runs.assign(**{SCORED_RULE: runs.get("rule", "direct")})
    order = {rule: i for i, rule in enumerate(SCORING_RULES)}
    long = pd.concat(frames, ignore_index=True)
    return long.sort_values(
        [c for c in ["task", "model", "template", "k"] if c in long] + [SCORED_RULE],
        key=lambda col: col.map(order) if col.name == SCORED_RULE else col,
        kind="stable",
    ).reset_index(drop=True)


def summarise_seeds(runs: pd.DataFrame, metrics: list[str], intervals=None) -> pd.DataFrame:
    """Mean, std and count over seeds of ``metrics`` (and the per-class and per-rule columns)
    for every cell; ``intervals(runs, keys, metrics)``, when given, adds a frame of interval
    columns per cell (``icl.effects.cell_intervals``) after the count."""
    keys = [c for c in group_columns(SCORED_RULE) if c in runs]
    extra = [c for c in runs.columns if c.startswith("prediction_share_")] + rule_columns(runs)
    chosen = [c for c in metrics if c in runs] + extra
    grouped = runs.groupby(keys, dropna=False)[chosen].agg(["mean", "std"])
    grouped.columns = [f"{metric}_{stat}" for metric, stat in grouped.columns]
    grouped["n_seeds"] = runs.groupby(keys, dropna=False)[SEED_FIELD].nunique()
    grouped = grouped.reset_index()
    if intervals is None:
        return grouped
    found = intervals(runs, keys, [c for c in metrics if c in runs])
    # merged on a string form of the keys: missing values match each other
    as_text = {c: f"__{c}" for c in keys}
    left = grouped.assign(**{v: grouped[c].map(str) for c, v in as_text.items()})
    right = found.assign(**{v: found[c].map(str) for c, v in as_text.items()}).drop(columns=keys)
    merged = left.merge(right, on=list(as_text.values()), how="left")
    return merged.drop(columns=list(as_text.values()))


def write_summary(root: Path, runs: pd.DataFrame, metrics: list[str], intervals=None):
    """Write the collected runs of root to summary.{csv,parquet} and their mean and std over
    seeds (of ``metrics``, with ``intervals`` as in ``summarise_seeds``) to
    summary_seeds.{csv,parquet}; return the latter.

    Runs that report several rules also give summary_rules.{csv,parquet}: mean and std over
    seeds per (cell, rule), from the long form ``rule_runs``.
    """
    root = Path(root)
    seeds = summarise_seeds(runs, metrics, intervals)
    frames = [(runs, SUMMARY_STEM), (seeds, SEEDS_SUMMARY_STEM)]
    if rule_columns(runs):
        frames.append((summarise_seeds(rule_runs(runs), metrics, intervals), RULES_SUMMARY_STEM))
    for frame, stem in frames:
        _write_atomic(root / f"{stem}.csv", frame.to_csv(index=False))
        frame.to_parquet(root / f"{stem}.parquet", index=False)
    return seeds
