"""User-facing errors: each says what is wrong and what to change."""

from __future__ import annotations

from collections.abc import Iterable


class ICLError(ValueError):
    """Bad input found before any model work; the CLI prints it without a traceback."""


def unknown_name(kind: str, name: object, valid: Iterable[object]) -> ICLError:
    """The error for a lookup by name, listing the names that would work."""
    names = ", ".join(sorted(str(v) for v in valid))
    return ICLError(f"unknown {kind} {name!r}; valid names: {names}")
