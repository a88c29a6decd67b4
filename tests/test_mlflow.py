"""MLflow as users meet it: a real `mlflow server` on 127.0.0.1, queried over HTTP, and its UI in Chromium."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from conftest import RECIPE, TINY, make_study_config, one_line_error, run_main, run_process

LR_GRID = {**RECIPE, "lr": [3e-3, 1e-3]}

pytestmark = pytest.mark.slow              # a real MLflow server for the module, and Ray studies logged to it


def _cli(argv, capsys) -> tuple[int, str, str]:
    from paint_ray.cli import main
    return run_main(main, argv, capsys)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen([str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)      # its workers in its group: ended with it, by its pid
    uri = f"http://127.0.0.1:{port}"
    for _ in range(600):                                  # a bounded wait for it to answer (5 minutes)
        if proc.poll() is not None:
            break
        try:
            if urllib.request.urlopen(uri + "/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        _end(proc)
        raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
    yield uri
    _end(proc)


@pytest.fixture(scope="module")
def logged_study(ray_local, mlflow_server, tmp_path_factory):
    from paint_ray.pipeline import run_study
    out = tmp_path_factory.mktemp("mlflow_study")
    # registered too: one study serves the tracking and the registry tests (a study costs ~25 s here)
    cfg = make_study_config(out, name="t-mlflow", search_space=LR_GRID, tracking_uri=mlflow_server, mlflow=True,
                            register=True)
    return cfg, run_study(cfg)


def test_runs_params_metrics_artifacts_and_nested_trials_over_http(mlflow_server, logged_study):
    from mlflow import MlflowClient
    cfg, result = logged_study
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("t-mlflow")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`paint_ray.key` != ''")
    assert len(parents) == 1
    run = parents[0]
    assert run.info.run_name == f"{TINY} · colors" and run.info.status == "FINISHED"
    p = run.data.params
    chosen = result.patched[0]
    assert p["model"] == TINY and p["patch_task"] == "colors" and p["supported_tasks"] == "shapes"
    assert float(p["chosen_alpha"]) == chosen.selection.alpha and p["alpha_grid"] == "0,0.5,1"
    assert float(p["ft_lr"]) == chosen.config["lr"] and "max mean" in p["selection_rule"]
    history = client.get_metric_history(run.info.run_id, "alpha")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.0), (1, 0.5), (2, 1.0)]
    colors_test = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "colors_test_acc")}
    table = chosen.frontier.sort_values("alpha").reset_index(drop=True)
    assert colors_test == pytest.approx(dict(enumerate(table["colors_test"])))
    assert run.data.metrics["gain"] == pytest.approx(result.table()["gain"].iloc[0])

    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"frontier.json", "frontier.png"} <= names
    # the patched model is the run's LoggedModel (MLflow 3), its headline metrics linked to it
    (output,) = run.outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert logged.name == "patched_model" and logged.source_run_id == run.info.run_id
    assert str(logged.status) in ("READY", "LoggedModelStatus.READY")
    linked = {m.key: m.value for m in logged.metrics}
    assert linked["gain"] == pytest.approx(run.data.metrics["gain"]) and linked["eligible"] == 1.0
    import mlflow.artifacts
    model_files = {Path(a.path).name for a in mlflow.artifacts.list_artifacts(
        artifact_uri=logged.artifact_location, tracking_uri=mlflow_server)}
    assert {"MLmodel", "open_clip_config.json", "open_clip_model.safetensors", "heads.safetensors"} <= model_files
    frontier = Path(client.download_artifacts(run.info.run_id, "frontier.json"))
    import json
    logged = json.loads(frontier.read_text())
    assert "pareto" in logged["columns"] and len(logged["data"]) == 3

    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert len(children) == 2                                    # one per Tune trial, no duplicates
    assert sorted(c.data.tags["paint_ray.chosen"] for c in children) == ["False", "True"]
    assert all(client.get_metric_history(c.info.run_id, "patch_val_acc") for c in children)


def test_rerun_does_not_duplicate_runs(mlflow_server, logged_study):
    from mlflow import MlflowClient

    from paint_ray.pipeline import run_study
    cfg, result = logged_study
    again = run_study(cfg)
    assert again.run_ids == result.run_ids
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("t-mlflow")
    assert len(client.search_runs([exp.experiment_id])) == 3     # 1 patched model + 2 trials


def test_a_run_whose_logging_fails_is_failed_and_the_next_log_replaces_it(mlflow_server, logged_study, tmp_path):
    from dataclasses import replace

    from mlflow import MlflowClient

    from paint_ray.reporting.tracking import log_study
    cfg, result = logged_study
    study = replace(cfg, name="t-mlflow-fail", out=str(tmp_path))
    pm = result.patched[0]                                      # no θ1 file: saving the patched model fails
    broken = replace(result, config=study,
                     patched=[replace(pm, weights=replace(pm.weights, theta1="finetuned/gone.safetensors"))])
    from paint_ray.errors import PaintRayError
    with pytest.raises(PaintRayError):
        log_study(broken, mlflow_server)
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("t-mlflow-fail")
    assert [r.info.status for r in client.search_runs([exp.experiment_id])] == ["FAILED"]
    ids = log_study(replace(result, config=study), mlflow_server)
    assert client.get_run(next(iter(ids.values()))).info.status == "FINISHED"   # not the failed one
    assert log_study(replace(result, config=study), mlflow_server) == ids        # and that one is reused


def test_load_patched_reproduces_study_predictions(mlflow_server, logged_study, capsys):
    import paint_ray
    from paint_ray.caches.eval import prepare_task
    from paint_ray.evaluation.evaluator import Evaluator
    from paint_ray.models.heads import predictions
    from paint_ray.models.normalize import to_model_input
    from paint_ray.results.store import ResultStore
    from paint_ray.tasks import get_task
    cfg, result = logged_study
    chosen = result.patched[0]
    import tempfile
    downloads = set(Path(tempfile.gettempdir()).glob("paint_ray_patched_*"))
    bundle = paint_ray.load_patched(result.run_ids[f"{TINY}/colors"], mlflow_server)
    assert set(Path(tempfile.gettempdir()).glob("paint_ray_patched_*")) == downloads   # its download is gone
    assert bundle.folder is None
    assert bundle.alpha == chosen.selection.alpha and set(bundle.heads) == {"colors", "shapes"}
    assert bundle.precision == result.identity["precision"]           # it predicts as the study's rows were made
    data = prepare_task(get_task("colors"), "test", 32)
    predictions_ = bundle.predict("colors", data.images)

    ev = Evaluator(result.models[TINY].model.visual)               # the study's own θα, formed in place
    from paint_ray.caches.heads import cached_head
    from paint_ray.models.checkpoints import load_tensors
    from paint_ray.storage import fetch
    ev.add_weights(chosen.trial, load_tensors(fetch(chosen.weights.theta1, None)))   # a store name, not a path
    ev.set_model(chosen.trial, chosen.selection.alpha)
    head = cached_head(result.models[TINY], get_task("colors"))
    with torch.inference_mode():
        x = to_model_input(data.images, ev.visual)
        expected = torch.cat([predictions(ev.visual, head, x[i:i + 512], precision=result.identity["precision"])
                              for i in range(0, len(x), 512)])
    assert torch.equal(predictions_, expected)
    rows = ResultStore(Path(cfg.out) / "results").read()
    recorded = rows[(rows.trial == chosen.trial) & (rows.alpha == chosen.selection.alpha)
                    & (rows.eval_task == "colors") & (rows.split == "test")]["accuracy"].iloc[0]
    assert float((predictions_ == data.labels).float().mean()) == pytest.approx(recorded)

    code, out, err = _cli(["load", result.run_ids[f"{TINY}/colors"], "--tracking-uri", mlflow_server,
                           "--evaluate", "colors"], capsys)
    assert code == 0, err
    assert f"colors test accuracy: {recorded:.4f}" in out


def test_unknown_run_id_and_unreachable_server_are_one_line(mlflow_server, tmp_path, capsys):
    from paint_ray.backends.local import LocalBackend
    from paint_ray.errors import PaintRayError
    from paint_ray.pipeline import run_study
    from paint_ray.reporting.tracking import load_patched
    with pytest.raises(PaintRayError, match="unknown MLflow run id 'deadbeef'"):
        load_patched("deadbeef", mlflow_server)
    code, _, err = _cli(["load", "deadbeef", "--tracking-uri", mlflow_server], capsys)
    assert "deadbeef" in one_line_error(code, err)
    cfg = make_study_config(tmp_path, name="t-down", alphas=[0, 1], tracking_uri="http://127.0.0.1:9", mlflow=True)
    backend = LocalBackend("cpu")
    started = []
    backend.start = lambda: started.append(True)          # the backend would be started after the check
    with pytest.raises(PaintRayError, match="cannot reach the MLflow tracking server at http://127.0.0.1:9"):
        run_study(cfg, backend)
    assert not started and not (tmp_path / "tune").exists() and not (tmp_path / "results").exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


# Off CI a developer without Chromium is told so; on CI (CI set) a missing browser fails the check instead.
@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None and not os.environ.get("CI"),
                    reason="Debian's chromium is not installed (scripts/test.sh installs it when run as root)")
def test_run_page_renders_in_a_real_browser(mlflow_server, logged_study, tmp_path):
    from mlflow import MlflowClient
    browser = _chromium()
    assert browser, "CI must check the MLflow UI in Chromium: scripts/test.sh installs Debian's chromium as root"
    _, result = logged_study
    run_id = result.run_ids[f"{TINY}/colors"]
    from paint_ray.reporting.tracking import run_url
    run = MlflowClient(tracking_uri=mlflow_server).get_run(run_id)
    url = run_url(mlflow_server, run.info.experiment_id, run_id)      # the address paint_ray gives users
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000", "--virtual-time-budget=20000"]
    dom = run_process([browser, *flags, "--dump-dom", url], timeout=120).stdout
    assert ">" + f"{TINY} · colors" + "<" in dom, dom[-1500:]            # the run's name, as a whole element
    assert ">colors_test_acc<" in dom                                  # a frontier metric, by its exact name
    assert "frontier.png" in dom and "PAINT" in dom                    # the description with the plot
    for error in ("Page not found", "Something went wrong", "Internal Server Error", "No Experiment Exists"):
        assert error not in dom
    # the model-training view, not the GenAI one a fresh browser opens by default (whose side bar has
    # "Evaluation runs" and whose breadcrumb ends "Evaluations"): its side bar has "Model registry" and the
    # breadcrumb ends "Runs"
    assert ">Model registry<" in dom and ">Evaluation runs<" not in dom and ">Evaluations<" not in dom, dom[-3000:]
    assert ">Runs<" in dom
    assert ">Logged models (1)<" in dom and ">patched_model<" in dom          # the MLflow Model, listed
    shot = tmp_path / "mlflow_run_page.png"
    run_process([browser, *flags, f"--screenshot={shot}", url], timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


@pytest.fixture(scope="module")
def registered(logged_study):
    return logged_study


def _png(images_uint8: torch.Tensor) -> list[bytes]:
    import io

    from PIL import Image
    out = []
    for x in images_uint8:
        buf = io.BytesIO()
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(buf, format="PNG")      # lossless: the same pixels
        out.append(buf.getvalue())
    return out


def test_register_puts_the_patched_model_in_the_registry(mlflow_server, registered, monkeypatch):
    import mlflow.pyfunc
    import pandas as pd
    from mlflow import MlflowClient

    import paint_ray
    from paint_ray.caches.eval import prepare_task
    from paint_ray.tasks import get_task
    _, result = registered
    client = MlflowClient(tracking_uri=mlflow_server)
    model = client.get_registered_model(f"paint_ray-{TINY}-colors")
    assert "PAINT-patched" in model.description and "α=" in model.description
    versions = client.search_model_versions(f"name = 'paint_ray-{TINY}-colors'")
    run_id = result.run_ids[f"{TINY}/colors"]
    (version,) = [v for v in versions if v.run_id == run_id]
    # the version is an MLflow Model: pyfunc answers images with a class and probabilities per image, the
    # class being load_patched's prediction
    data = prepare_task(get_task("colors"), "test", 32)
    images = data.images[:40]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)      # as a user points MLflow at the server
    pyfunc = mlflow.pyfunc.load_model(f"models:/paint_ray-{TINY}-colors/{version.version}")
    out = pyfunc.predict(pd.DataFrame({"image": _png(images)}))        # no task: the patch task's head
    bundle = paint_ray.load_patched(run_id, mlflow_server)
    assert out["task"].eq("colors").all()
    assert out["index"].tolist() == bundle.predict("colors", images).tolist()
    assert out["label"].tolist() == [bundle.classnames["colors"][i] for i in out["index"]]
    probs = torch.tensor(out["probabilities"].tolist())
    assert probs.shape == (40, len(bundle.classnames["colors"])) and torch.allclose(probs.sum(1), torch.ones(40))
    assert torch.equal(probs.argmax(1), torch.tensor(out["index"].tolist()))
    shapes = pyfunc.predict(pd.DataFrame({"image": _png(images[:3]), "task": ["shapes"] * 3}))
    assert shapes["index"].tolist() == bundle.predict("shapes", images[:3]).tolist()


def test_the_logged_folder_is_an_mlflow_model_open_clip_and_paint_ray_all_read(mlflow_server, logged_study, tmp_path,
                                                                              monkeypatch):
    import mlflow.artifacts
    import open_clip
    import yaml

    import paint_ray
    _, result = logged_study
    run_id = result.run_ids[f"{TINY}/colors"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)      # runs:/ as users resolve it
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{run_id}/patched_model",
                                                      dst_path=str(tmp_path)))
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "paint_ray.weights.patched"
    assert mlmodel["run_id"] == run_id and mlmodel["model_id"].startswith("m-")
    assert not [p for p in folder.rglob("*") if p.suffix in (".pkl", ".pickle", ".pt", ".pth")]   # nothing pickled
    model = open_clip.create_model(f"local-dir:{folder}")                   # open_clip reads the same folder
    bundle = paint_ray.load_patched(run_id, mlflow_server)
    theirs, ours = model.visual.state_dict(), bundle.model.visual.state_dict()
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"no answer from {url} in {timeout:.0f} s: {log.read_text()[-3000:]}")


def _end(proc: subprocess.Popen) -> None:
    """End the server this test started and what it spawned (its own process group, led by its pid)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_mlflow_models_serve_answers_images_over_http_as_load_patched_does(mlflow_server, registered, tmp_path):
    import base64
    import json

    from mlflow import MlflowClient

    import paint_ray
    from paint_ray.caches.eval import prepare_task
    from paint_ray.tasks import get_task
    _, result = registered
    run_id = result.run_ids[f"{TINY}/colors"]
    (version,) = [v for v in MlflowClient(tracking_uri=mlflow_server).search_model_versions(
        f"name = 'paint_ray-{TINY}-colors'") if v.run_id == run_id]
    port = _free_port()
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
                             f"models:/paint_ray-{TINY}-colors/{version.version}", "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                            # the venv's bin on PATH, as when it is activated: the server execs its uvicorn
                            env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server,
                                 "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
                            cwd=tmp_path,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/ping", proc, log, timeout=240)
        data = prepare_task(get_task("colors"), "test", 32)
        rows = [[base64.b64encode(png).decode(), "colors"] for png in _png(data.images)]
        body = json.dumps({"dataframe_split": {"columns": ["image", "task"], "data": rows}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as r:
            answer = json.loads(r.read())["predictions"]
    finally:
        _end(proc)
    bundle = paint_ray.load_patched(run_id, mlflow_server)
    assert len(answer) == len(data.images)
    assert [a["index"] for a in answer] == bundle.predict("colors", data.images).tolist()
    assert all(a["label"] == bundle.classnames["colors"][a["index"]] for a in answer)
    assert all(abs(sum(a["probabilities"]) - 1) < 1e-4 for a in answer)
