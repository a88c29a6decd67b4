"""The patched-model folder: θα as an open_clip `local-dir:` folder plus the zero-shot heads.

`save_patched` writes it (the text tower is θ0's; the image tower is θα); `read_patched` reads one back
into a `PatchedBundle` ready for inference. MLflow logs the same folder as an MLflow Model (tracking.py):
its MLmodel names this module as the pyfunc loader, so `mlflow.pyfunc.load_model` and `mlflow models serve`
call `_load_pyfunc` here and get a `PatchedPyfunc`, which answers images with class probabilities. Nothing
in the folder is pickled: MLflow reads the same safetensors and JSON that open_clip and paint_ray read.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import pandas as pd

from ..errors import PaintRayError
from .interpolate import lerp_state, load_floating_state
from ..models.checkpoints import CONFIG_NAME, load_tensors, save_model_dir, save_tensors

HEADS_NAME = "heads.safetensors"


@dataclass
class PatchedBundle:
    """A patched open_clip model at its chosen α, its tokenizer and heads."""
    model: torch.nn.Module
    tokenizer: object
    heads: dict[str, torch.Tensor]
    classnames: dict[str, list[str]]
    alpha: float
    run_id: str = ""
    folder: Path | None = None
    precision: str = "fp32"          # the eval precision the study's rows were computed in

    @torch.inference_mode()
    def logits(self, task: str, images_uint8: torch.Tensor, device: str | None = None,
               precision: str | None = None) -> torch.Tensor:
        """fp32 logits (N x classes) of uint8 N x 3 x S x S images under `task`'s head, computed as `predict`
        computes them (batches of 512, the study's eval precision): their argmax is `predict`'s answer."""
        from ..devices import inference_autocast, resolve
        from ..models.heads import batch_logits
        from ..models.normalize import to_model_input
        device = resolve(device)
        visual = self.model.visual.to(device).eval()
        head = self.heads[task].to(device)
        out = []
        for i in range(0, len(images_uint8), 512):
            x = to_model_input(images_uint8[i:i + 512].to(device), visual)
            with inference_autocast(x.device, precision or self.precision):
                out.append(batch_logits(visual, head, x).cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.classnames[task]))

    @torch.inference_mode()
    def predict(self, task: str, images_uint8: torch.Tensor, groups=None, labels: torch.Tensor | None = None,
                device: str | None = None, precision: str | None = None) -> torch.Tensor:
        """Class indices for uint8 N x 3 x S x S images on `task`'s zero-shot head, scored exactly as the
        study's evaluator scored them (batches of 512, at the study's eval precision unless given), so on
        the same kind of device they reproduce the run's accuracies. For a multiple-choice task give its
        answer groups and each image's label (or any class of its question): each image is then answered
        among its own question's answers (answer_groups.py)."""
        from ..devices import resolve
        from ..models.heads import predictions
        from ..models.normalize import to_model_input
        from ..tasks.answer_groups import as_groups
        device = resolve(device)
        visual = self.model.visual.to(device).eval()
        head, groups = self.heads[task].to(device), as_groups(groups, device=device)
        out = []
        for i in range(0, len(images_uint8), 512):
            x = to_model_input(images_uint8[i:i + 512].to(device), visual)
            y = labels[i:i + 512].to(device) if groups is not None else None
            out.append(predictions(visual, head, x, y, groups, precision or self.precision).cpu())
        return torch.cat(out)


def save_patched(loaded, theta1: dict[str, torch.Tensor], alpha: float, start: dict[str, torch.Tensor] | None,
                 heads: dict[str, torch.Tensor], classnames: dict[str, list[str]], path: Path, extra: dict) -> Path:
    """θα = lerp(start or θ0, θ1, α) as an open_clip model folder at `path` (which may already hold other
    files: the MLflow Model's), plus heads.safetensors. `extra` lands in the config's paint_ray section (an
    `eval_precision` there is what `predict` uses, a `patch` the task a pyfunc request defaults to)."""
    model = copy.deepcopy(loaded.model)
    base = start if start is not None else {k: v for k, v in model.visual.state_dict().items() if k in theta1}
    load_floating_state(model.visual, lerp_state(base, theta1, alpha), "patched weights")
    save_model_dir(model, loaded.model_cfg, path, extra={"arch": loaded.arch, "alpha": alpha, **extra})
    save_tensors(heads, Path(path) / HEADS_NAME, metadata={"classnames": json.dumps(classnames)})
    return Path(path)


def read_patched(folder: Path, run_id: str = "") -> PatchedBundle:
    """A folder written by `save_patched`."""
    from safetensors import safe_open

    from ..models.registry import load_model
    if not (folder / HEADS_NAME).is_file():
        raise PaintRayError(f"{folder} has no {HEADS_NAME}: not a paint_ray patched model folder")
    loaded = load_model(f"local-dir:{folder}", progress=False)
    try:
        with safe_open(str(folder / HEADS_NAME), "pt") as f:
            classnames = json.loads(f.metadata()["classnames"])
        section = json.loads((folder / CONFIG_NAME).read_text())["paint_ray"]
        alpha, precision = section["alpha"], section.get("eval_precision", "fp32")
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise PaintRayError(f"{folder} lacks paint_ray's metadata ({type(e).__name__}): not a patched model") from e
    return PatchedBundle(loaded.model, loaded.tokenizer, load_tensors(folder / HEADS_NAME), classnames,
                         float(alpha), run_id, folder, precision)


class PatchedPyfunc:
    """A patched folder as MLflow's pyfunc flavour serves it.

    Input: a DataFrame with a column `image` (encoded image bytes, PNG or JPEG, or their base64 text) and an
    optional column `task` (a head of the folder; default: its patch task). Each image is resized and
    centre-cropped to the model's input size as the study's eval cache prepared its images (an image
    already at that size is used as it is), then scored as `PatchedBundle.predict` scores it.
    Output: one row per image: `task`, `index` (the predicted class, `predict`'s answer), `label` (its
    class name) and `probabilities` (softmax of the logits, in the head's class order)."""

    def __init__(self, bundle: PatchedBundle, default_task: str):
        self.bundle, self.default_task = bundle, default_task

    def predict(self, model_input: pd.DataFrame | dict, params: dict | None = None) -> pd.DataFrame:
        """`model_input`: a DataFrame (or what pandas makes one of); `params` is unused."""
        import pandas as pd
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "image" not in frame.columns:
            raise PaintRayError(f"the input has columns {list(frame.columns)}; give a column 'image' of encoded "
                                f"images (PNG/JPEG bytes or base64) and optionally 'task'")
        tasks = frame["task"].fillna(self.default_task).astype(str).tolist() if "task" in frame.columns \
            else [self.default_task] * len(frame)
        unknown_tasks = sorted(set(tasks) - set(self.bundle.heads))
        if unknown_tasks:
            raise PaintRayError(f"unknown task {unknown_tasks[0]!r} for this patched model; valid: "
                                f"{', '.join(sorted(self.bundle.heads))}")
        images = decode_images(frame["image"].tolist(), image_size(self.bundle.model.visual))
        rows: list[dict | None] = [None] * len(frame)
        for task in dict.fromkeys(tasks):
            idx = [i for i, t in enumerate(tasks) if t == task]
            logits = self.bundle.logits(task, images[idx])
            probs = torch.softmax(logits, dim=-1)
            names = self.bundle.classnames[task]
            for i, k, p in zip(idx, logits.argmax(-1).tolist(), probs.tolist()):
                rows[i] = {"task": task, "index": k, "label": names[k], "probabilities": p}
        return pd.DataFrame(rows, columns=["task", "index", "label", "probabilities"])


def image_size(visual: torch.nn.Module) -> int:
    from ..data import image_size_of
    return image_size_of(visual)


def decode_images(values: list, size: int) -> torch.Tensor:
    """Encoded images (bytes or base64 text) -> uint8 N x 3 x size x size, prepared as the eval cache does."""
    import base64
    import binascii
    import io

    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from ..data import resize_center_crop
    out = []
    for i, v in enumerate(values):
        try:
            raw = base64.b64decode(v, validate=True) if isinstance(v, str) else bytes(v)
            with Image.open(io.BytesIO(raw)) as img:
                out.append(resize_center_crop(img, size))
        except (binascii.Error, UnidentifiedImageError, OSError, TypeError, ValueError) as e:
            raise PaintRayError(f"image {i} is not an encoded image ({type(e).__name__}); give PNG or JPEG "
                                f"bytes, or their base64 text") from e
    if not out:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return torch.from_numpy(np.ascontiguousarray(np.stack(out).transpose(0, 3, 1, 2)))


def default_task(folder: Path, heads: dict) -> str:
    """The head a request without a `task` is answered on: the (first) patch task, else the first head."""
    section = json.loads((Path(folder) / CONFIG_NAME).read_text()).get("paint_ray", {})
    patch = [t for t in str(section.get("patch", "")).split("+") if t in heads]
    return patch[0] if patch else next(iter(heads))


def _load_pyfunc(path: str) -> PatchedPyfunc:
    """MLflow's pyfunc loader hook (the MLmodel's `loader_module` is this module): `path` is the model's
    folder, which is the patched folder itself."""
    bundle = read_patched(Path(path))
    return PatchedPyfunc(bundle, default_task(Path(path), bundle.heads))
