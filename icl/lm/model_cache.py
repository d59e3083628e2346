"""The safetensors cache of dequantised models: built beside its place and renamed in, recorded
in a manifest, verified when loaded (and rebuilt, with a message, when it does not match), and
the staging folders of killed builds cleaned."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from icl.results import write_text_atomic

log = logging.getLogger(__name__)

# A load compares sizes and times (a stat per file); only a file whose times moved is hashed
# again (a 500 MB file takes seconds), so an untouched cache costs no reading. Any write to a
# file moves its mtime, and ctime cannot be set back (touch -d sets it to now), so damage by
# a write is always hashed; a changed size (a truncated file) needs no hash at all.
MANIFEST = "icl-cache.json"
# staging folders: .NAME-build-PID@HOST-XXXXXXXX, and caches being thrown away (-discard-)
STAGING = re.compile(r"^\..+-(?:build|discard)-(\d+)@(.*)-[a-z0-9_]{8}$")
# staging folders of icl versions that did not name their process: removed once this old
LEGACY_STAGING_AGE_S = 3600


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def file_stats(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}


def write_manifest(folder: Path, files: dict[str, dict]) -> None:
    write_text_atomic(folder / MANIFEST, json.dumps({"files": files}, indent=1))


def record_files(folder: Path) -> None:
    """The manifest of a freshly built cache: every file's stats and sha256."""
    files = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST):
        files[path.name] = {**file_stats(path), "sha256": sha256_of(path)}
    write_manifest(folder, files)


def safetensors_whole(path: Path) -> bool:
    """Whether a safetensors file is as long as its header says (a truncation check)."""
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(length))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        return path.stat().st_size == 8 + length + max(ends, default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def cache_problem(folder: Path) -> str | None:
    """Why a cache folder cannot be trusted (None: it matches what was built)."""
    if not (folder / "config.json").exists():
        return "has no config.json"
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return adopt_legacy_cache(folder)
    except (OSError, ValueError, KeyError, TypeError):
        return f"has an unreadable {MANIFEST}"
    moved = False
    for name, built in files.items():
        path = folder / name
        if not path.is_file():
            return f"lacks {name}"
        now = file_stats(path)
        if now["size"] != built["size"]:
            return f"has {name} of {now['size']} bytes, built with {built['size']}"
        if (now["mtime_ns"], now["ctime_ns"]) != (built["mtime_ns"], built["ctime_ns"]):
            if sha256_of(path) != built["sha256"]:
                return f"has {name} changed since it was built (sha256 differs)"
            files[name] = {**now, "sha256": built["sha256"]}  # the same bytes: new times
            moved = True
    if moved:
        write_manifest(folder, files)
    return None


def adopt_legacy_cache(folder: Path) -> str | None:
    """A cache built before manifests: its safetensors files must be whole; then it gets one.

    What it held before this check cannot be verified; non-finite scores are still refused.
    """
    broken = [p.name for p in folder.glob("*.safetensors") if not safetensors_whole(p)]
    if broken or not list(folder.glob("*.safetensors")):
        return f"has truncated or missing weights ({', '.join(broken) or 'no safetensors'})"
    record_files(folder)
    return None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_dead_staging(parent: Path) -> None:
    """Remove staging folders of builds whose process is gone (killed mid-build)."""
    if not parent.is_dir():
        return
    host = socket.gethostname()
    for entry in parent.iterdir():
        if not entry.is_dir() or not entry.name.startswith("."):
            continue
        match = STAGING.match(entry.name)
        if match:
            dead = match.group(2) == host and not process_alive(int(match.group(1)))
        else:  # an older icl's staging folder (.NAME-XXXXXXXX), if long abandoned
            legacy = any(entry.name.startswith(f".{c.name}-") for c in parent.iterdir())
            age = time.time() - entry.stat().st_mtime
            dead = legacy and age > LEGACY_STAGING_AGE_S
        if dead:
            log.info("removing %s, left by a build that did not finish", entry)
            shutil.rmtree(entry, ignore_errors=True)


def staging_dir(target: Path, kind: str) -> Path:
    prefix = f".{target.name}-{kind}-{os.getpid()}@{socket.gethostname()}-"
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix))


def build_cache(target: Path, save) -> None:
    """Build a cache folder with ``save(staging)`` beside the target, record its manifest and
    rename it into place, so a crash or a parallel job never sees half a cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_dead_staging(target.parent)
    staging = staging_dir(target, "build")
    try:
        save(staging)
        record_files(staging)
        os.replace(staging, target)
    except OSError:
        if not target.exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def discard(target: Path) -> None:
    """Move a bad cache aside (a process still reading it keeps its open files), then delete."""
    aside = staging_dir(target, "discard")
    os.replace(target, aside / target.name)
    shutil.rmtree(aside, ignore_errors=True)


def ensure_cache(target: Path, save) -> Path:
    """The verified cache folder, built (or rebuilt, with a message) when it does not match."""
    clean_dead_staging(target.parent)
    if target.exists():
        problem = cache_problem(target)
        if problem is None:
            return target
        log.warning("model cache %s %s: rebuilding it", target, problem)
        print(f"icl: model cache {target} {problem}; rebuilding it", file=sys.stderr)
        discard(target)
    build_cache(target, save)
    return target
