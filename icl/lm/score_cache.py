"""The score cache: scores that do not depend on the demonstrations, kept across processes.

The memo (``icl.lm.scorer.ScoreMemo``) lives as long as one process; every ``submitit`` job,
joblib worker, resumed sweep and separate run would compute the zero-shot perplexities and the
k=0 option scores again. This cache keeps them in one sqlite file in WAL mode (many readers and
one writer at a time; writers wait on each other, so the processes of one sweep, or two sweeps
at once, can share it), as lm-eval's ``--use_cache`` does.

An entry is keyed by a digest of everything its numbers depend on: the cache's version, the
model's weights fingerprint (``weights_fingerprint``), its dtype and device type, the torch
and transformers versions, the engine, whether the query's NLL was read, and the request's
token ids (prefix, query, options: the rendered template and input). A different model,
template or harness version never reads another's entries. A file sqlite cannot read is moved
aside with a warning and rebuilt; a failure while running disables the cache for the process
(scoring goes on without it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
from pathlib import Path

import torch

from icl.lm.requests import ScoreRequest, ScoreResult

log = logging.getLogger(__name__)

# bump when what an entry holds, or how its numbers are computed, changes
CACHE_VERSION = 1
# the cache folder: $ICL_SCORE_CACHE_DIR, else $ICL_CACHE_DIR/scores, else ~/.cache/icl/scores
ENV_DIR = "ICL_SCORE_CACHE_DIR"
FILE_NAME = f"scores-v{CACHE_VERSION}.sqlite"
# values sampled from each weight tensor for its fingerprint
SAMPLES_PER_TENSOR = 1024
# keys per SELECT (below sqlite's limit on bound parameters)
LOOKUP_CHUNK = 500
BUSY_TIMEOUT_S = 120.0


def cache_path() -> Path:
    """Where the score cache lives (read at each call, so tests can point it elsewhere)."""
    folder = os.environ.get(ENV_DIR)
    if not folder:
        root = os.environ.get("ICL_CACHE_DIR") or Path.home() / ".cache" / "icl"
        folder = Path(root) / "scores"
    return Path(folder) / FILE_NAME


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A digest of the model's config and weights: every tensor's name, shape and dtype, and
    SAMPLES_PER_TENSOR values spread over it (fine-tuning, another seed or another checkpoint
    moves them), so in-memory models have one too; milliseconds, where hashing every byte of
    a 1 GB model would cost seconds at each start."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // SAMPLES_PER_TENSOR)
            sample = flat[::step][:SAMPLES_PER_TENSOR].to("cpu", torch.float32).contiguous()
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def model_key(lm) -> str:
    """What an entry's numbers depend on besides the request: weights, dtype, device, code."""
    import transformers

    dtype = next(lm.model.parameters()).dtype
    parts = [
        f"v{CACHE_VERSION}",
        lm.weights_fingerprint,
        str(dtype),
        torch.device(lm.device).type,
        torch.__version__,
        transformers.__version__,
    ]
    return "|".join(parts)


def entry_key(model: str, engine: str, want_query: bool, request: ScoreRequest) -> bytes:
    tokens = json.dumps([request.prefix, request.query, request.options], separators=(",", ":"))
    text = f"{model}|{engine}|{int(want_query)}|{tokens}"
    return hashlib.blake2b(text.encode(), digest_size=20).digest()


def encode(result: ScoreResult) -> str:
    fields = [
        result.option_logprobs,
        result.prefix_nll,
        result.prefix_count,
        result.query_nll,
        result.query_count,
    ]
    return json.dumps(fields)


def decode(value: str) -> ScoreResult:
    options, prefix_nll, prefix_count, query_nll, query_count = json.loads(value)
    return ScoreResult(options, prefix_nll, prefix_count, query_nll, query_count)


class ScoreCache:
    """One sqlite file of scored requests, opened on first use."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self.disabled = False

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS scores (key BLOB PRIMARY KEY, value TEXT NOT NULL)"
            )
            conn.execute("SELECT count(*) FROM scores WHERE key = x'00'").fetchone()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self._conn = self._open()
            except sqlite3.OperationalError:
                raise  # locked past the timeout, unwritable: not the file's fault
            except sqlite3.DatabaseError as err:  # not a database, malformed
                self._set_aside(err)
                self._conn = self._open()
        return self._conn

    def _set_aside(self, err: Exception) -> None:
        """Move an unreadable cache file (and its WAL files) aside, so a new one is built."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{os.getpid()}")
        log.warning(
            "score cache %s is unreadable (%s): moved to %s, rebuilding it", self.path, err, aside
        )
        for suffix in ("", "-wal", "-shm"):
            # never there, or another process moved it first
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")

    def _failed(self, err: Exception) -> None:
        """A file found damaged while in use is set aside (the next use builds a new one);
        any other failure (locked past the timeout, disk full) turns the cache off here."""
        self.close()
        if isinstance(err, sqlite3.DatabaseError) and not isinstance(err, sqlite3.OperationalError):
            self._set_aside(err)
            return
        log.warning(
            "score cache %s failed (%s): scoring without it in this process", self.path, err
        )
        self.disabled = True

    def get(self, model: str, engine: str, want_query: bool, requests) -> dict:
        """The requests found in the cache: request -> ScoreResult."""
        if self.disabled or not requests:
            return {}
        keyed = {entry_key(model, engine, want_query, r): r for r in requests}
        keys, found = list(keyed), {}
        try:
            conn = self.connection()
            for start in range(0, len(keys), LOOKUP_CHUNK):
                chunk = keys[start : start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT key, value FROM scores WHERE key IN ({marks})"
                for key, value in conn.execute(sql, chunk):
                    found[keyed[bytes(key)]] = decode(value)
        except (sqlite3.Error, ValueError, TypeError) as err:
            self._failed(err)
            return {}
        return found

    def put(self, model: str, engine: str, want_query: bool, scored: dict) -> None:
        """Store request -> ScoreResult entries in one transaction (first writer wins)."""
        if self.disabled or not scored:
            return
        rows = [(entry_key(model, engine, want_query, r), encode(s)) for r, s in scored.items()]
        try:
            conn = self.connection()
            conn.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock
            try:
                conn.executemany("INSERT OR IGNORE INTO scores (key, value) VALUES (?, ?)", rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            self._failed(err)

    def __len__(self) -> int:
        return self.connection().execute("SELECT count(*) FROM scores").fetchone()[0]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_OPEN: dict[Path, ScoreCache] = {}


def process_cache() -> ScoreCache:
    """The score cache at ``cache_path()``, one per path for the process."""
    path = cache_path()
    if path not in _OPEN:
        _OPEN[path] = ScoreCache(path)
    return _OPEN[path]
