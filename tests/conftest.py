"""Shared fixtures: one cache home, one pretrained tiny model and one local Ray for the whole session; one
StudyConfig factory (`study_config`), one reader of every results part as written (`raw_rows`), and the
helpers that run a command line in this process (`run_main`) or, once per entry point, as a real process
(`run_cli`).

Markers (pyproject.toml): `ray` for tests on a Ray cluster (given automatically to every test that uses
`ray_local`), `slow` for tests that fine-tune or run whole studies, `browser` for the Chromium check.
`scripts/test.sh --quick` runs the rest."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

# Set before paint_ray is imported anywhere, so every cache lands in a throwaway home.
# PAINT_RAY_TEST_HOME keeps one home across local runs (toy-xs is then pretrained once); CI leaves it unset.
# The xdist workers of one run share one throwaway home (named by the run's id): toy-xs is pretrained and each
# eval cache built once, by whichever worker comes first, under the caches' own locks. The process that made
# a throwaway home removes it at the end (for xdist, the controller, which named the run).
_KEPT = os.environ.get("PAINT_RAY_TEST_HOME")


def _shared_home(run: str) -> str:
    return os.path.join(tempfile.gettempdir(), f"paint_ray_test_home_{run[:16]}")


_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
_HOME = _KEPT or (_shared_home(_RUN) if _RUN else tempfile.mkdtemp(prefix="paint_ray_test_home_"))
os.makedirs(_HOME, exist_ok=True)
os.environ["PAINT_RAY_HOME"] = _HOME
# A Hugging Face cache of the session's own (tests write hub entries into it), offline, set before anything
# imports huggingface_hub or starts Ray, so the driver and every Ray worker read the same one.
os.environ["HF_HOME"] = os.path.join(_HOME, "hf")
os.environ["HF_HUB_OFFLINE"] = "1"
# Ray turns token authentication on for a new local cluster and, with no token at hand, writes one to
# ~/.ray/auth_token: the session's Rays get a token of their own instead, and nothing is written to $HOME.
# One file per xdist worker: workers sharing a kept test home must not overwrite each other's live token.
_TOKEN = Path(_HOME) / f"ray_auth_token_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
_TOKEN.parent.mkdir(parents=True, exist_ok=True)
_TOKEN.write_text(secrets.token_hex(32))
os.environ.setdefault("RAY_AUTH_TOKEN_PATH", str(_TOKEN))

import torch  # noqa: E402

torch.set_num_threads(2)

TINY = "toy-xs"
# a recipe that fine-tunes toy-xs in a few seconds (studies that need a trained θ1, not a good one)
RECIPE = {"lr": [3e-3], "steps": [6], "batch_size": [32], "warmup_steps": [1]}


def pytest_configure(config):
    """The xdist controller names the run itself (xdist would draw the same kind of id), so that it knows
    which shared home its workers use and can remove it afterwards."""
    if (getattr(config.option, "numprocesses", None) and "PYTEST_XDIST_WORKER" not in os.environ
            and getattr(config.option, "testrunuid", "") is None):
        import uuid
        config.option.testrunuid = uuid.uuid4().hex


def pytest_unconfigure(config):
    if _KEPT or "PYTEST_XDIST_WORKER" in os.environ:
        return                                  # a kept home stays; a worker's shared home is the controller's
    import shutil
    run = getattr(config.option, "testrunuid", None)
    for home_dir in {_HOME, *([_shared_home(run)] if run else [])}:
        shutil.rmtree(home_dir, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Every test on a Ray cluster is marked `ray`, whether it says so or only asks for one. Then the longest
    files go first (each file's tests stay together, in their order): xdist hands out whole files as workers
    free up, and quick files last fill the gaps instead of one long file running alone at the end. Longest
    by the last run's seconds (pytest's cache), else by a guess from the markers."""
    for item in items:
        if {"ray_local", "gpu_cluster"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)
    cache = getattr(config, "cache", None)           # None under -p no:cacheprovider
    seconds = dict(cache.get(_SECONDS, {}) if cache else {})
    guess: dict[str, float] = {}          # without a measurement: a test on Ray costs most, a slow one some
    for item in items:
        guess[_file(item)] = guess.get(_file(item), 0.0) + (5.0 if item.get_closest_marker("ray") else
                                                            1.0 if item.get_closest_marker("slow") else 0.0)
    items.sort(key=lambda item: -seconds.get(_file(item), guess[_file(item)]))   # stable: a file's order kept


def _file(item_or_report) -> str:
    return item_or_report.nodeid.split("::")[0]


_SECONDS = "paint_ray/seconds_per_file"
_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Seconds per test file (set-up, call and tear-down), as reported to this process: on the xdist
    controller, every worker's."""
    _seconds[_file(report)] = _seconds.get(_file(report), 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus):
    """Seconds per file, kept in pytest's cache for the next run's order, from runs of whole files only: a
    run with -m or -k (`--quick`) keeps nothing (on the xdist controller, deselection is not seen per file)."""
    opt, cache = session.config.option, getattr(session.config, "cache", None)
    if ("PYTEST_XDIST_WORKER" in os.environ or cache is None or not _seconds
            or getattr(opt, "markexpr", "") or getattr(opt, "keyword", "")):
        return
    cache.set(_SECONDS, {**cache.get(_SECONDS, {}), **{k: round(v, 1) for k, v in _seconds.items()}})


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


def make_study_config(out, **changes):
    """A small study of the tiny model: patch colors, support shapes, α 0/0.5/1, `RECIPE`, no MLflow, no bars."""
    from paint_ray.config import StudyConfig
    base = dict(name="t", models=[TINY], patch_tasks=["colors"], supported=["shapes"], alphas=[0.0, 0.5, 1.0],
                out=str(out), search_space=RECIPE, progress=False, mlflow=False)
    base.update(changes)
    return StudyConfig(**base)


@pytest.fixture(scope="session")
def study_config() -> Callable[..., "StudyConfig"]:  # noqa: F821
    """`study_config(out, **changes)`: the one StudyConfig factory of the suite (make_study_config)."""
    return make_study_config


def raw_rows(out) -> "pd.DataFrame":  # noqa: F821
    """Every row of every results part under `out`/results as written, without de-duplication (a cell
    evaluated twice shows up twice); an empty frame when there is no part."""
    import pandas as pd
    import pyarrow.parquet as pq
    parts = sorted((Path(out) / "results").glob("part-*.parquet"))
    return pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True) if parts else pd.DataFrame()


def run_main(main: Callable, argv: Sequence[str], capsys) -> tuple[int, str, str]:
    """Run a command line's `main(argv)` in this process: (exit code, stdout, stderr). argparse's usage
    errors exit through SystemExit, the rest return their code; both count."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code: int, err: str) -> str:
    """The single `paint-ray: error:` line of a refused command line (exit 2, no traceback)."""
    lines = err.strip().splitlines()
    assert code == 2, (code, err[-1500:])
    assert len(lines) == 1 and lines[0].startswith("paint-ray: error: ") and "Traceback" not in err, err[-1500:]
    return lines[0]


def load_script(name: str):
    """experiments/NAME.py as a module (its PRESETS, __doc__ and main), without running it."""
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    snapshot.mkdir(parents=True, exist_ok=True)      # a kept test home (PAINT_RAY_TEST_HOME) has it already
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


def run_process(cmd: Sequence[str], env: dict | None = None, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run `cmd` as its own process group (session), output captured. If it outlives `timeout`, that group
    (the process this test started and whatever it started, a Ray cluster of its own included) is killed
    by its id and the test fails; nothing else on the machine is touched."""
    import signal
    proc = subprocess.Popen(list(cmd), env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(map(str, cmd))[:200]} ran past {timeout:g} s: {err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m paint_ray ARGS` as a user would, in a subprocess (the suite keeps one such run per
    entry point; everything else calls `paint_ray.cli.main` in process through `run_main`)."""
    return run_process([sys.executable, "-m", "paint_ray", *args], env, timeout)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server of this module's own on 127.0.0.1, a bucket in it, and the environment to reach it."""
    port = _free_port()
    import time
    import urllib.request
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(env["AWS_ENDPOINT_URL"], timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        import boto3
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="test", aws_secret_access_key="test",
                     region_name="us-east-1").create_bucket(Bucket="paint-ray-test")
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        yield "s3://paint-ray-test"
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    finally:
        server.terminate()
        server.wait(timeout=30)


