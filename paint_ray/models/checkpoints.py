"""Portable model folders: open_clip_config.json + open_clip_model.safetensors.

This is open_clip's own `local-dir:` layout, so `open_clip.create_model('local-dir:PATH')` loads any
folder paint_ray writes (embedded models, patched models) without paint_ray installed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import PaintRayError
from .build import short

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Atomic safetensors write: a killed process never leaves a half-written file under `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as f:       # on disk before it is renamed into place: a power cut leaves old or new
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise PaintRayError(f"cannot write {path}: {e.strerror or e}") from e


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; a corrupt or truncated file is a one-line PaintRayError."""
    path = Path(path)
    if not path.is_file():
        raise PaintRayError(f"checkpoint {path} does not exist")
    try:
        return load_file(str(path), device=str(device))
    except Exception as e:  # safetensors raises its own SafetensorError for any malformed file
        raise PaintRayError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else 'unreadable'}); delete it or give a valid file") from e


def save_model_dir(model: torch.nn.Module, model_cfg: dict, path: str | Path, extra: dict | None = None) -> Path:
    """Write `model` as an open_clip local-dir folder (config first, weights atomically last)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        config = {"model_cfg": model_cfg, "preprocess_cfg": dict(getattr(model.visual, "preprocess_cfg", {}) or {})}
        if extra:
            config["paint_ray"] = extra
        (path / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    except OSError as e:
        raise PaintRayError(f"cannot write model folder {path}: {e.strerror or e}") from e
    save_tensors(model.state_dict(), path / WEIGHTS_NAME)
    return path


def read_model_config(path: str | Path) -> dict:
    """The JSON config of a model folder (a dict); anything else is a one-line PaintRayError."""
    cfg = Path(path) / CONFIG_NAME
    if cfg.is_dir():
        raise PaintRayError(f"model config {short(cfg)} is a directory; it must be a JSON file "
                            f"holding {{\"model_cfg\": {{...}}, \"preprocess_cfg\": {{...}}}}")
    try:
        data = json.loads(cfg.read_text())
    except FileNotFoundError as e:
        raise PaintRayError(f"model folder {short(path)} has no {CONFIG_NAME}") from e
    except json.JSONDecodeError as e:
        raise PaintRayError(f"model config {short(cfg)} is not valid JSON ({e.msg} at line {e.lineno})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise PaintRayError(f"cannot read model config {short(cfg)} "
                            f"({getattr(e, 'strerror', None) or type(e).__name__})") from e
    if not isinstance(data, dict):
        raise PaintRayError(f"model config {short(cfg)} holds a JSON {type(data).__name__}, not an object "
                            f"with 'model_cfg'")
    return data

