"""Shared fixtures: one cache home and one pretrained tiny model for the whole session."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Set before paint_ray is imported anywhere, so every cache lands in a throwaway home.
# PAINT_RAY_TEST_HOME keeps one home across local runs (toy-xs is then pretrained once); CI leaves it unset.
_HOME = os.environ.get("PAINT_RAY_TEST_HOME") or tempfile.mkdtemp(prefix="paint_ray_test_home_")
os.environ["PAINT_RAY_HOME"] = _HOME
# A Hugging Face cache of the session's own (tests write hub entries into it), offline, set before anything
# imports huggingface_hub or starts Ray, so the driver and every Ray worker read the same one.
os.environ["HF_HOME"] = os.path.join(_HOME, "hf")
os.environ["HF_HUB_OFFLINE"] = "1"

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
        connect("local", num_cpus=2)      # never joins a cluster this session did not start
    yield ray.get_runtime_context().gcs_address
    if ray.is_initialized():
        from paint_ray.distributed.evaluators import shutdown_evaluators
        shutdown_evaluators()
        ray.shutdown()


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, offline: nothing can be fetched, only what the cache holds is found."""
    import huggingface_hub.constants as hf_constants
    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these once at import; the environment alone would not reach it any more
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return hub


def hub_snapshot(hub: Path, repo: str) -> Path:
    """The snapshot folder of `repo` in the cache, with refs/main pointing at it (as a download leaves it)."""
    import hashlib
    root = hub / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(f"paint_ray test {repo}".encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return snapshot


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m paint_ray ARGS` as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "paint_ray", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
