"""Where paint_ray caches pretrained embedded models, heads and fine-tuned weights.

May import: errors
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from .errors import PaintRayError


def home() -> Path:
    """PAINT_RAY_HOME, or ~/.cache/paint_ray (XDG_CACHE_HOME respected)."""
    if os.environ.get("PAINT_RAY_HOME"):
        return Path(os.environ["PAINT_RAY_HOME"]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(base) / "paint_ray").resolve()


def ensure_writable(directory: str | Path) -> Path:
    """Create `directory` and prove it is writable, before any expensive work starts."""
    path = Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise PaintRayError(f"output directory {path} is not writable ({e.strerror or e}); "
                            f"give a writable --out") from e
    return path.resolve()
