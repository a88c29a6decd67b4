"""The one exception type users see: a one-line message naming the bad value and what would be valid.

May import: nothing in paint_ray
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class PaintRayError(Exception):
    """A user-facing error. The CLI prints its message as one line and exits non-zero."""


def closest(value: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' when a close match exists, else ''."""
    match = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def unknown(kind: str, value: str, choices: Iterable[str]) -> PaintRayError:
    choices = sorted(choices)
    return PaintRayError(f"unknown {kind} {value!r}{closest(value, choices)}; valid: {', '.join(choices)}")
