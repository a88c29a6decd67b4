"""Where paint_ray caches pretrained embedded models, heads and fine-tuned weights."""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """PAINT_RAY_HOME, or ~/.cache/paint_ray (XDG_CACHE_HOME respected)."""
    if os.environ.get("PAINT_RAY_HOME"):
        return Path(os.environ["PAINT_RAY_HOME"]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(base) / "paint_ray").resolve()
