"""paint_ray: PAINT (patching open-vocabulary models by interpolating weights) as parallel sweeps.

May import: anything, lazily (the public API: paint_ray.load_patched)
"""
__version__ = "0.1.0"


def load_patched(run_id: str, tracking_uri: str | None = None, dst=None):
    """The patched open_clip model and zero-shot heads logged by MLflow run `run_id` (see tracking.py)."""
    from .reporting.tracking import load_patched as _load
    return _load(run_id, tracking_uri, dst)
