"""Deterministic fault points, for the tests that show a run survives a crash (no timing, no killing by name).

`PAINT_RAY_FAULT=point[:n]` arms one point; the process that reaches it exits at once (`os._exit`, as a
kill would leave it: no cleanup, no flush). Each point fires once per key (a marker file under
PAINT_RAY_FAULT_DIR, default PAINT_RAY_HOME/faults), so the retried trial or the rerun goes on. Points:

- `trial-exit-after-checkpoint`: a Tune trial, right after its first checkpoint is reported;
- `driver-exit-after-parts:N`: the driver, right after writing its N-th results part.

Unset (always, outside tests), every point is a no-op.

May import: paths
"""
from __future__ import annotations

import os
from pathlib import Path


def armed(point: str) -> str | None:
    """The point's argument ('' when it has none) if PAINT_RAY_FAULT arms it, else None."""
    spec = os.environ.get("PAINT_RAY_FAULT", "")
    name, _, arg = spec.partition(":")
    return arg if name == point else None


def fire_once(point: str, key: str) -> None:
    """Exit the process (status 3) the first time `point` is reached for `key` while it is armed."""
    if armed(point) is None:
        return
    from .paths import home
    folder = Path(os.environ.get("PAINT_RAY_FAULT_DIR") or home() / "faults")
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{point}-{key}"
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return
    os._exit(3)
