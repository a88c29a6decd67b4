"""MLflow: one run per patched model with its α frontier, its Tune trials as nested runs, its weights.

The driver does all logging through an explicit MlflowClient (no global mlflow state): trial metrics
come from Tune's results, so a trial is logged once, by one logger. A rerun finds runs by a key tag and
does not log them twice.

The patched model is an MLflow Model (a LoggedModel named `patched_model`, the run's output, its summary
metrics linked to it): its folder is at once the MLflow Model (MLmodel, pyfunc flavour with
weights/patched.py as loader module, paint_ray's code under code/), the open_clip `local-dir:` folder and
paint_ray's patched folder. So `mlflow.pyfunc.load_model("runs:/RUN/patched_model")` (or
"models:/NAME/VERSION" after `--register`) and `mlflow models serve` answer images with class
probabilities, while `open_clip.create_model("local-dir:FOLDER")` and `paint_ray.load_patched` read it too.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd

from . import published, published_report
from ..config import shown
from ..results.robust import BUDGET_COLUMNS
from ..errors import PaintRayError
from .mlflow_model import save_model_folder

KEY_TAG = "paint_ray.key"
ARTIFACT_MODEL = "patched_model"
# The experiment kind of a model-training experiment. MLflow 3.17's UI no longer reads it to pick its view:
# the `workflowType` in the page's address (else the browser's last choice, GenAI at first) decides, so the
# run addresses paint_ray gives (`run_url`) carry workflowType=machine_learning.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
WORKFLOW_QUERY = "workflowType=machine_learning"
# In every run's key: runs logged before the patched model was an MLflow Model (and before "none eligible"
# and θ0-based sequential figures) are not found again, so a rerun logs them anew, model included.
RUN_FORMAT = "run-format-2"


def run_url(uri: str, experiment_id: str, run_id: str | None = None) -> str | None:
    """The page of a run (or, without `run_id`, of the experiment) in the MLflow UI of tracking server
    `uri`, opening on the model-training view; None for a tracking URI that is no server (a SQLite file:
    open it with `mlflow ui`)."""
    if not uri.startswith(("http://", "https://")):
        return None
    page = f"experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{uri.rstrip('/')}/#/{page}?{WORKFLOW_QUERY}"


def tracking_uri(out: str | Path, override: str | None = None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else a SQLite file in the output directory."""
    uri = override or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(Path(out).resolve() / 'mlflow.db')}"


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """One line, before any fine-tuning, when the tracking server cannot be reached."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
                if r.status != 200:
                    raise OSError(f"HTTP {r.status}")
        except (OSError, urllib.error.URLError) as e:
            reason = getattr(e, "reason", None) or e
            raise PaintRayError(f"cannot reach the MLflow tracking server at {uri} ({reason}); start it "
                                f"(mlflow server ...), fix --tracking-uri / MLFLOW_TRACKING_URI, or unset it "
                                f"to log to a SQLite file in the output directory") from e


def _client(uri: str):
    import logging

    from mlflow import MlflowClient
    logging.getLogger("mlflow").setLevel(logging.WARNING)     # "Creating initial MLflow database tables..."
    return MlflowClient(tracking_uri=uri)


def experiment_id(uri: str, name: str, artifact_root: Path | None) -> str:
    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if artifact_root is not None and not uri.startswith(("http://", "https://")):
        location = artifact_root.resolve().as_uri()   # never a ./mlruns relative to wherever we run
    return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)


def _existing_run(client, exp_id: str, key: str):
    runs = client.search_runs([exp_id], filter_string=f"tags.`{KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
                              max_results=1)
    return runs[0] if runs else None


def log_study(result, uri: str, register: bool = False, identity: dict | None = None) -> dict[str, str]:
    """Log every patched model of a StudyResult; returns {'model/patch[/mode]': run_id}. A run is found
    again by the digest of what it shows (weight set, α grid, rule, task data, eval precision), so a rerun
    on the same inputs logs nothing and one on changed inputs logs a new run."""
    from ..config import anchored
    from ..identity import digest
    cfg = result.config
    client = _client(uri)
    exp_id = experiment_id(uri, cfg.name, Path(cfg.out) / "mlartifacts")
    run_ids = {}
    for pm in result.patched:
        # a search's α values follow from its results: its identity is its resolution, not a grid
        alphas = anchored(cfg.alphas) if cfg.alpha_search is None else ["auto", cfg.alpha_search]
        key = digest([pm.weights.key, pm.patch, pm.mode, alphas, cfg.rule, cfg.max_drop,
                      cfg.supported, cfg.extra_tasks, identity or {}, RUN_FORMAT]
                     + ([f"published-{published.VERSION}"] if published.covers(pm.model) else [])
                     # a schedule search shows (and logs as its model) other weights: its own run
                     + ([["schedule", cfg.schedule, cfg.searcher, cfg.schedule_trials, cfg.schedule_batch]]
                        if pm.schedule is not None else []))
        found = _existing_run(client, exp_id, key)
        if found is not None:
            run_ids[_run_label(pm)] = found.info.run_id
            continue
        name = (f"{pm.model} · {pm.patch}" + ("" if pm.mode == "single" else f" · {pm.mode}")
                + (f" · seed {pm.seed}" if len(cfg.seeds) > 1 else ""))
        run = client.create_run(exp_id, run_name=name,
                                tags={KEY_TAG: key, "paint_ray.study": cfg.name, "paint_ray.mode": pm.mode})
        rid = run.info.run_id
        try:   # a run whose logging failed is marked FAILED, never reused as finished
            summary = _log_patched_run(client, exp_id, rid, pm, result)
        except BaseException:
            client.set_terminated(rid, "FAILED")
            raise
        client.set_terminated(rid)
        if register and pm.selection.eligible:          # nothing was chosen, nothing to register
            _register(client, rid, pm, summary)
        run_ids[_run_label(pm)] = rid
    return run_ids


def _log_patched_run(client, exp_id: str, rid: str, pm, result) -> dict:
    """Params, per-α metrics, frontier, plot, the patched model and nested trials of one run; returns the
    summary. A run whose selection has no eligible α logs no model: its tag and description say so."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param

    from .plots import frontier_plot
    cfg = result.config
    now = int(time.time() * 1000)
    table, sel = pm.frontier.sort_values("alpha").reset_index(drop=True), pm.selection
    params = {"model": pm.model, "pretrained": pm.pretrained, "patch_task": pm.patch,
              "supported_tasks": ",".join(cfg.supported), "mode": pm.mode, "data_root": cfg.data_root or "embedded",
              "alpha_grid": ",".join(f"{a:g}" for a in table["alpha"]), "selection_rule": sel.describe(),
              "chosen_alpha": sel.alpha if sel.eligible else "none eligible", "trial": pm.trial, "seed": pm.seed,
              **{f"ft_{k}": v for k, v in pm.config.items() if k != "tune_path"}}
    if pm.schedule is not None:           # the patched model is formed with the rule's schedule
        sr, chosen = pm.schedule, pm.schedule.chosen
        params.update(schedule_family=sr.kind, schedule_searcher=sr.searcher, schedule_trials=cfg.schedule_trials,
                      schedule_batch=cfg.schedule_batch, schedule_rounds=sr.rounds,
                      chosen_schedule=(chosen.blocks if chosen.schedule else f"global α = {chosen.alpha:g}")
                      if chosen.eligible else "none eligible",
                      schedule_key=chosen.schedule if chosen.eligible else "")
    model_id = None
    if sel.eligible:      # the LoggedModel first, so the summary metrics are logged linked to it
        model_id = client.create_logged_model(
            exp_id, name=ARTIFACT_MODEL, source_run_id=rid, model_type="paint_ray patched open_clip",
            params={k: str(v)[:6000] for k, v in params.items()},
            tags={"paint_ray.patch": pm.patch, "paint_ray.mode": pm.mode}).model_id
    try:
        metrics = []
        value_cols = [c for c in table.columns if c.endswith(("_val", "_test"))]
        for step, row in table.iterrows():
            metrics.append(Metric("alpha", float(row["alpha"]), now, step))
            metrics += [Metric(f"{c}_acc", float(row[c]), now, step) for c in value_cols if pd.notna(row[c])]
        summary = pm.summary(cfg.supported, cfg.extra_tasks)
        headline = {k: summary[k] for k in ("patch_zero_shot", "patch_fine_tuned", "patch_patched",
                                             "supported_zero_shot", "supported_fine_tuned", "supported_patched",
                                             "gain", "drop", "cka", "weight_distance", *BUDGET_COLUMNS)}
        headline.update(chosen_alpha=sel.alpha, eligible=float(sel.eligible))
        headline.update({k: v for k, v in summary.items() if k.startswith("schedule_")
                         and isinstance(v, (int, float)) and not isinstance(v, bool)})
        # nan is what was not measured (no α chosen, no α within a budget): left out, not logged as a number
        metrics += [Metric(k, float(v), now, 0, model_id=model_id) for k, v in headline.items() if pd.notna(v)]
        client.log_batch(rid, metrics=metrics, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        client.set_tag(rid, "paint_ray.selection", "chosen" if sel.eligible else "none eligible")
        client.log_table(rid, table, "frontier.json")
        marks, published_note = _log_published(client, rid, pm, cfg.supported)   # nothing for uncovered models
        if pm.coefficient_table is not None:
            client.log_table(rid, pm.coefficient_table, "coefficients.json")
        if pm.schedule is not None:     # every point the search evaluated, global α values included
            client.log_table(rid, pm.schedule.table.drop(columns=["pareto"], errors="ignore"), "schedules.json")
        with tempfile.TemporaryDirectory() as tmp:
            png = frontier_plot(table, sel.alpha, f"{pm.model}: patch {pm.patch} vs {', '.join(cfg.supported)}",
                                Path(tmp) / "frontier.png", split="test" if marks else "val", published=marks)
            client.log_artifact(rid, str(png))
            if model_id is not None:
                folder = save_model_folder(client, model_id, rid, pm, result, Path(tmp) / ARTIFACT_MODEL)
                client.log_model_artifacts(model_id, str(folder))
                client.finalize_logged_model(model_id, LoggedModelStatus.READY)
                client.log_outputs(rid, [LoggedModelOutput(model_id, step=0)])   # the run's "Logged models"
    except BaseException:
        if model_id is not None:
            client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
        raise
    # the run's overview shows its description first: the headline figures and the frontier plot
    client.set_tag(rid, "mlflow.note.content", _description(pm, summary, rid, published_note))
    trials = result.trials[(result.trials.model == pm.model) & (result.trials.patch == pm.patch)
                           & (result.trials["mode"] == pm.mode) & (result.trials["seed"] == pm.seed)]
    for tr in trials.itertuples():
        _log_trial(client, exp_id, rid, tr, chosen=tr.theta1 == pm.weights.theta1)
    return summary


def _description(pm, summary: dict, rid: str, published_note: str = "") -> str:
    """Markdown for the run page: what was patched, the chosen point, and the frontier plot itself."""
    if not pm.selection.eligible:
        return (f"**PAINT**: {pm.model} on {pm.patch} ({pm.mode}): **none eligible**, no α keeps the supported "
                f"drop within {pm.selection.max_drop:g} points on validation, so no model was chosen or logged.\n\n"
                f"![accuracy frontier](get-artifact?path=frontier.png&run_uuid={rid})")
    sched = ""
    if pm.schedule is not None and pm.schedule.chosen.eligible and pm.schedule.chosen.schedule:
        sched = (f"The logged model is formed with the per-block schedule {pm.schedule.chosen.blocks} (a "
                 f"{pm.schedule.kind} schedule searched by {pm.schedule.searcher}, "
                 f"{summary.get('schedule_cells', 0)} cells): patch gain {100 * summary['schedule_gain']:+.1f} "
                 f"points, supported drop {100 * summary['schedule_drop']:.1f} points on test.\n\n")
    return (f"**PAINT**: {pm.model} patched on {pm.patch} ({pm.mode}) at α = {pm.selection.alpha:g} "
            f"({pm.selection.describe()}).\n\n" + sched +
            f"Patch task {summary['patch_zero_shot']:.1%} → {summary['patch_patched']:.1%} "
            f"(gain {100 * summary['gain']:+.1f} points); supported {summary['supported_zero_shot']:.1%} → "
            f"{summary['supported_patched']:.1%} (drop {100 * summary['drop']:.1f} points), test accuracy.\n\n"
            + (f"{published_note}\n\n" if published_note else "")
            + f"![accuracy frontier](get-artifact?path=frontier.png&run_uuid={rid})")


def _run_label(pm) -> str:
    return pm.label


def log_summary_run(uri: str, study: str, files: list) -> str:
    """One run named '<study> summary' holding the study-level artifacts. On a rerun the old one is deleted
    only once its successor is complete, so an interruption never leaves the study without one."""
    client = _client(uri)
    exp_id = experiment_id(uri, study, None)
    old = client.search_runs([exp_id], filter_string=f"tags.`paint_ray.summary` = '{study}'")
    run = client.create_run(exp_id, run_name=f"{study} summary", tags={"paint_ray.summary": study})
    try:
        for f in files:
            client.log_artifact(run.info.run_id, str(f))
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id)
    for r in old:
        client.delete_run(r.info.run_id)
    return run.info.run_id


def _log_trial(client, exp_id: str, parent: str, tr, chosen: bool) -> None:
    from mlflow.entities import Metric, Param
    child = client.create_run(exp_id, run_name=f"trial {tr.trial}", tags={
        "mlflow.parentRunId": parent, "paint_ray.chosen": str(chosen), "paint_ray.tune_path": str(tr.path)})
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(h[k]), now, int(h.get("step", i)))
               for i, h in enumerate(tr.history) for k in ("patch_val_acc", "loss") if pd.notna(h.get(k))]
    params = [Param(k, str(v)) for k, v in tr.recipe.items()]
    client.log_batch(child.info.run_id, metrics=metrics, params=params)
    client.set_terminated(child.info.run_id)


def _register(client, run_id: str, pm, summary: dict) -> None:
    name = f"paint_ray-{pm.model}-{pm.patch}".replace(":", "-").replace("/", "-")
    description = (f"PAINT-patched {pm.model} on {pm.patch} at α={pm.selection.alpha:g}: patch "
                   f"{summary['patch_zero_shot']:.1%} → {summary['patch_patched']:.1%} (gain {summary['gain']:+.1%}), "
                   f"supported {summary['supported_zero_shot']:.1%} → {summary['supported_patched']:.1%} "
                   f"(drop {summary['drop']:+.1%}).")
    from mlflow.exceptions import MlflowException
    try:
        client.create_registered_model(name, description=description)
    except MlflowException:
        client.update_registered_model(name, description=description)
    # the LoggedModel the run produced, so `models:/NAME/VERSION` loads as the MLflow Model it is. Its source
    # is the model's artifact location, not `models:/ID`: MLflow 3.17's SQL registry resolves that through
    # the process-wide tracking URI, not this client's, and fails for a store it was not pointed at.
    model_id = next(o.model_id for o in client.get_run(run_id).outputs.model_outputs)
    client.create_model_version(name, client.get_logged_model(model_id).artifact_location, run_id=run_id,
                                description=description, model_id=model_id)


def check_readable_store(uri: str) -> None:
    """For read-only commands: the tracking store must exist; nothing is created to find that out."""
    import sqlite3
    from urllib.parse import urlparse
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        check_tracking(uri)
        return
    if scheme != "sqlite":
        raise PaintRayError(f"tracking URI {shown(uri)} has an unknown scheme {scheme!r}; valid: "
                            f"sqlite:////abs/path/mlflow.db or http://HOST:PORT")
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.is_file():
        raise PaintRayError(f"no MLflow database at {shown(str(path))}; give the mlflow.db a study wrote "
                            f"(e.g. sqlite:///$PWD/scaling_out/mlflow.db)")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            db.execute("select 1 from runs limit 1")
    except sqlite3.Error as e:
        raise PaintRayError(f"{shown(str(path))} is not an MLflow database ({e}); give the mlflow.db a study "
                            f"wrote") from e


def model_location(client, run_id: str) -> str:
    """Where a run's patched model folder is: its LoggedModel's artifact location (MLflow 3), else (runs
    logged before it was an MLflow Model) the run's own `patched_model` artifact. Resolved with `client`:
    MLflow 3.17 resolves `runs:/RUN/patched_model` through the process-wide tracking URI, not the one given."""
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    for out in outputs:
        logged = client.get_logged_model(out.model_id)
        if logged.name == ARTIFACT_MODEL:
            return logged.artifact_location
    return f"{run.info.artifact_uri}/{ARTIFACT_MODEL}"


def load_patched(run_id: str, tracking_uri_: str | None = None, dst: str | Path | None = None):
    """The patched open_clip model and zero-shot heads logged by run `run_id`, ready for inference.

    With `dst` the folder is kept there; otherwise it is downloaded to a temporary folder, read, and removed."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from ..weights.patched import read_patched
    uri = tracking_uri_ or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise PaintRayError("no tracking URI: pass --tracking-uri (e.g. sqlite:////abs/path/mlflow.db or "
                            "http://127.0.0.1:5000) or set MLFLOW_TRACKING_URI")
    check_readable_store(uri)
    client = _client(uri)
    try:
        client.get_run(run_id)
    except MlflowException as e:
        raise PaintRayError(f"unknown MLflow run id {shown(run_id)} at {uri}; list runs in the MLflow UI "
                            f"or with `mlflow runs list --experiment-id ID`") from e
    target = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="paint_ray_patched_"))
    try:
        try:
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_location(client, run_id),
                                                              dst_path=str(target), tracking_uri=uri))
        except (MlflowException, OSError) as e:
            raise PaintRayError(f"run {run_id!r} has no {ARTIFACT_MODEL} artifact (not a paint_ray patched model)") from e
        bundle = read_patched(folder, run_id)
    finally:
        if not dst:
            shutil.rmtree(target, ignore_errors=True)
    if not dst:
        bundle.folder = None
    return bundle


def _log_published(client, rid: str, pm, supported) -> tuple[list[dict], str]:
    """Put the published figures on an MLflow run: every comparison as published.json, one tag per summary
    slot (published value, kind, source; ours; the flag), a tag listing the flagged slots. Returns the marks
    for the frontier plot and a markdown line for the run's description (both empty when none apply)."""
    comps = published_report.comparisons(pm, supported)
    if not comps:
        return [], ""
    client.log_table(rid, published_report.comparison_frame(comps), "published.json")
    slots = published_report.primary(pm, supported, comps)
    for slot, c in slots.items():
        client.set_tag(rid, f"paint_ray.published.{slot}",
                       f"{c.figure.percent_text}% {c.kind}, {c.figure.label}; ours {100 * c.ours:.1f}% "
                       f"({c.diff_points:+.1f} points{', flagged' if c.flagged else ''})")
    flagged = [s for s, c in slots.items() if c.flagged]
    client.set_tag(rid, "paint_ray.published_flags", ", ".join(flagged) if flagged else "none")
    md = "; ".join(f"{slot.replace('_', ' ')}: ours {100 * c.ours:.1f}% vs {c.figure.percent_text}% "
                   f"({c.figure.source.name}, {c.kind}){' ⚑' if c.flagged else ''}" for slot, c in slots.items())
    note = (f"Published (test accuracy; ⚑ = more than {published.FLAG_POINTS:g} points apart; all {len(comps)} in "
            f"published.json): {md}.") if md else f"Published figures: {len(comps)} in published.json."
    return published_report.plot_marks(pm, supported, comps), note
