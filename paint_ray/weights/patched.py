"""The patched-model folder: θα as an open_clip `local-dir:` folder plus the zero-shot heads.

`save_patched` writes it (the text tower is θ0's; the image tower is θα); `read_patched` reads one back
into a `PatchedBundle` ready for inference. MLflow stores this folder as a run artifact (tracking.py).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

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
    """`extra` lands in the config's paint_ray section (an `eval_precision` there is what `predict` uses)."""
    """θα = lerp(start or θ0, θ1, α) as an open_clip model folder, plus heads.safetensors."""
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
