"""Shared fixtures: one cache home and one pretrained tiny model for the whole session."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Set before paint_ray is imported anywhere, so every cache lands in a throwaway home.
_HOME = tempfile.mkdtemp(prefix="paint_ray_test_home_")
os.environ["PAINT_RAY_HOME"] = _HOME
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(2)

TINY = "toy-xs"


@pytest.fixture(scope="session")
def home() -> Path:
    return Path(_HOME)


@pytest.fixture(scope="session")
def tiny():
    """toy-xs pretrained (a few seconds) and loaded once per session."""
    from paint_ray.models.registry import load_model
    return load_model(TINY, progress=False)


@pytest.fixture(scope="session")
def ray_local(tiny):
    """One local Ray for the test session (the multi-node test, which runs last, replaces it)."""
    import ray

    from paint_ray.distributed.cluster import connect
    if not ray.is_initialized():
        connect(num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    if ray.is_initialized():
        from paint_ray.distributed.evaluators import shutdown_evaluators
        shutdown_evaluators()
        ray.shutdown()


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m paint_ray ARGS` as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "paint_ray", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
