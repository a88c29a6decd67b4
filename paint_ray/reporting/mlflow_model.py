"""A patched model as an MLflow Model: the folder that is at once the MLflow Model (MLmodel, pyfunc flavour
with weights/patched.py as loader module, this paint_ray as its code, a signature), the open_clip
`local-dir:` folder and paint_ray's patched folder. tracking.py logs it; this writes it.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

LOADER_MODULE = "paint_ray.weights.patched"     # its _load_pyfunc reads the folder back (no pickle)


def save_model_folder(client, model_id: str, rid: str, pm, result, folder: Path) -> Path:
    """The MLflow Model folder of a patched model: MLmodel (pyfunc, loader module weights/patched.py, this
    paint_ray as its code, a signature) and, in the same folder, the open_clip files and heads."""
    import mlflow.pyfunc
    from mlflow.models import Model

    from ..caches.heads import cached_head
    from ..models.checkpoints import load_tensors
    from ..tasks import get_task
    from ..weights.patched import save_patched
    from ..storage import fetch
    cfg = result.config
    logged = client.get_logged_model(model_id)
    with warnings.catch_warnings():
        # the signature is given: an input example would only re-derive it, by loading and running the model
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        mlflow.pyfunc.save_model(
            str(folder), loader_module=LOADER_MODULE, code_paths=[str(Path(__file__).resolve().parents[1])],
            mlflow_model=Model(artifact_path=logged.artifact_location, run_id=rid, model_id=model_id,
                               model_uuid=model_id),
            signature=signature(), pip_requirements=requirements())
    for cache in folder.rglob("__pycache__"):          # compiled files of this machine's Python: not the model's
        shutil.rmtree(cache, ignore_errors=True)
    tasks = [get_task(t, cfg.data_root) for t in cfg.eval_tasks(pm.patch)]
    loaded = result.models[pm.model]
    ws, storage = pm.weights, result.storage
    schedule = None
    if pm.schedule is not None and pm.schedule.chosen.eligible:
        from ..weights.schedule import Schedule, parse_groups
        schedule = Schedule(parse_groups(pm.schedule.chosen.point)[1:-1])
    return save_patched(loaded, load_tensors(fetch(ws.theta1, storage)), pm.selection.alpha,
                        load_tensors(fetch(ws.start, storage)) if ws.start else None,
                        {t.name: cached_head(loaded, t, "cpu", storage) for t in tasks},
                        {t.name: list(t.classnames) for t in tasks}, folder,
                        {"run_id": rid, "model_id": model_id, "patch": pm.patch, "model_spec": pm.model,
                         "eval_precision": result.identity.get("precision", "fp32")}, schedule=schedule)


def signature():
    """Images in (encoded bytes; base64 text over HTTP), optionally the task's head; a class per image out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array
    return ModelSignature(inputs=Schema([ColSpec("binary", "image"), ColSpec("string", "task", required=False)]),
                          outputs=Schema([ColSpec("string", "task"), ColSpec("long", "index"),
                                          ColSpec("string", "label"), ColSpec(Array("double"), "probabilities")]))


def requirements() -> list[str]:
    """What the model's code imports, at the versions that wrote it (no inference: that would load it)."""
    from importlib.metadata import PackageNotFoundError, version
    out = []
    for dist in ("torch", "torchvision", "open_clip_torch", "safetensors", "numpy", "pandas", "pillow", "mlflow"):
        try:
            out.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            out.append(dist)
    return out
