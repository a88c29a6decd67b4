"""One way to build a model from its open_clip config, here and on every Ray actor.

`load_model` builds every model with `build_clip(model_cfg)` and records that `model_cfg` on the
`LoadedModel`, so whatever rebuilds a tower elsewhere (`build_visual` on an evaluator actor) gets the
architecture the weights were loaded into: the same activation (QuickGELU for OpenAI / LAION-400M tags),
image size and hub config, not the architecture's default. No files are read and no hub is asked here
(except by open_clip's HF text towers, which need their transformers config).

`tensors_digest` is the content identity of weights: names, dtypes, shapes and bytes, never a path.
"""
from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections.abc import Mapping

import numpy as np
import open_clip
import torch
from torch import nn

from ..errors import PaintRayError

# Fields of an open_clip model config that are not constructor arguments of its model class.
_NOT_KWARGS = ("custom_text",)


def short(value, limit: int = 80) -> str:
    """`value` as text, at most `limit` characters: long values keep their end (where a path is telling)."""
    text = " ".join(str(value).split())         # one line whatever the value holds
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def first_line(e: BaseException, limit: int = 120) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clip_class(model_cfg: Mapping) -> type[nn.Module]:
    """The open_clip class `open_clip.create_model` picks for this config (CLIP, CustomTextCLIP or CoCa)."""
    custom = bool(model_cfg.get("custom_text")) or "hf_model_name" in (model_cfg.get("text_cfg") or {})
    if not custom:
        return open_clip.CLIP
    return open_clip.CoCa if "multimodal_cfg" in model_cfg else open_clip.CustomTextCLIP


def _kwargs(model_cfg: Mapping, source: str) -> dict:
    """Constructor arguments for `model_cfg`; tower weights always come from a state dict afterwards."""
    if not isinstance(model_cfg, Mapping):
        raise PaintRayError(f"{source} is a {type(model_cfg).__name__}, not an open_clip model config "
                            f"(a dict with embed_dim, vision_cfg, text_cfg)")
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in model_cfg]
    if missing:
        raise PaintRayError(f"{source} has no {missing[0]!r}; an open_clip model config needs embed_dim, "
                            f"vision_cfg and text_cfg (got keys: {short(', '.join(map(str, model_cfg)))})")
    cfg = {k: copy.deepcopy(v) for k, v in model_cfg.items() if k not in _NOT_KWARGS}
    for part in ("vision_cfg", "text_cfg"):
        if not isinstance(cfg[part], Mapping):
            raise PaintRayError(f"{source}: {part} is {short(repr(cfg[part]))}, not a dict")
        cfg[part] = dict(cfg[part])
    if "timm_model_name" in cfg["vision_cfg"]:
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    if "hf_model_name" in cfg["text_cfg"]:
        cfg["text_cfg"]["hf_model_pretrained"] = False
    return cfg


def build_clip(model_cfg: Mapping, source: str = "model_cfg") -> nn.Module:
    """An untrained, eval-mode open_clip model (fp32, CPU) of exactly the architecture `model_cfg` describes.

    `model_cfg` is a full open_clip model config (`open_clip.get_model_config`, the `model_cfg` of an
    open_clip_config.json), `quick_gelu` included. A config open_clip cannot build is a one-line
    PaintRayError that names `source`.
    """
    kwargs = _kwargs(model_cfg, source)
    try:
        return clip_class(model_cfg)(**kwargs).eval()
    except PaintRayError:
        raise
    except Exception as e:   # TypeError (unknown field), KeyError, AssertionError, ValueError... from open_clip
        raise PaintRayError(f"open_clip cannot build {source} ({type(e).__name__}: {first_line(e)})") from e


def build_vision_tower(model_cfg: Mapping, source: str = "model_cfg") -> nn.Module:
    """The image tower `build_clip(model_cfg).visual` would have, without building the text tower."""
    kwargs = _kwargs(model_cfg, source)
    try:
        from open_clip.model import _build_vision_tower
    except ImportError:                                   # open_clip moved it: build the whole model instead
        return build_clip(model_cfg, source).visual
    try:
        visual = _build_vision_tower(kwargs["embed_dim"], kwargs["vision_cfg"], bool(kwargs.get("quick_gelu", False)),
                                     None)
    except Exception as e:
        raise PaintRayError(f"open_clip cannot build the image tower of {source} "
                            f"({type(e).__name__}: {first_line(e)})") from e
    return visual.eval()


def _as_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    with warnings.catch_warnings():   # object-store arrays are read-only; loading copies them into the module
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.asarray(value))


def load_strict(module: nn.Module, state: Mapping, what: str, floating_only: bool = False) -> None:
    """Load `state` into `module`; a missing, unexpected or misshapen tensor is a one-line PaintRayError.

    `what` begins the message ("checkpoint X does not fit ViT-B-32"). With `floating_only`, the module's
    non-floating buffers (index tables a config determines) may be absent from `state`.
    """
    tensors = {k: _as_tensor(v) for k, v in state.items()}
    own = module.state_dict()
    missing = sorted(k for k, v in own.items() if k not in tensors and (v.is_floating_point() or not floating_only))
    unexpected = sorted(k for k in tensors if k not in own)
    misshapen = sorted(k for k in tensors if k in own and tuple(tensors[k].shape) != tuple(own[k].shape))

    def more(names: list[str]) -> str:
        return f" (+{len(names) - 1} more)" if len(names) > 1 else ""
    if missing:
        raise PaintRayError(f"{what}: missing tensor {short(missing[0])!r}{more(missing)}"
                            + (f", unexpected tensor {short(unexpected[0])!r}{more(unexpected)}" if unexpected else ""))
    if unexpected:
        raise PaintRayError(f"{what}: unexpected tensor {short(unexpected[0])!r}{more(unexpected)}")
    if misshapen:
        k = misshapen[0]
        raise PaintRayError(f"{what}: tensor {short(k)!r} has shape {tuple(tensors[k].shape)}, "
                            f"expected {tuple(own[k].shape)}{more(misshapen)}")
    try:
        module.load_state_dict(tensors, strict=not floating_only)
    except RuntimeError as e:
        raise PaintRayError(f"{what} ({first_line(e)})") from e


def set_preprocess_cfg(visual: nn.Module, preprocess_cfg: Mapping) -> None:
    """Attach `preprocess_cfg` the way open_clip does (`preprocess_cfg`, plus the legacy mean/std attributes)."""
    cfg = copy.deepcopy(dict(preprocess_cfg))
    visual.preprocess_cfg = cfg
    if "mean" in cfg:
        visual.image_mean = cfg["mean"]
    if "std" in cfg:
        visual.image_std = cfg["std"]


def build_visual(model_cfg: Mapping, preprocess_cfg: Mapping,
                 state: Mapping[str, np.ndarray | torch.Tensor]) -> nn.Module:
    """An eval-mode open_clip image encoder from the model's config and the tower's weights (no files, no hub).

    `model_cfg` is `LoadedModel.model_cfg` (so the activation, image size... are those the model was loaded
    with); `state` is the image tower's state dict (tensors or numpy arrays, e.g. from the Ray object store),
    at least every floating-point tensor of it. Any missing or unexpected tensor is a PaintRayError naming it.
    """
    visual = build_vision_tower(model_cfg)
    load_strict(visual, state, "image-tower weights do not fit their model_cfg", floating_only=True)
    set_preprocess_cfg(visual, preprocess_cfg)
    return visual.eval()


def _update_tensors(h, state: Mapping[str, torch.Tensor]) -> None:
    for name in sorted(state):
        t = state[name].detach()
        if t.device.type != "cpu":
            t = t.cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())   # no copy for a contiguous tensor


def tensors_digest(state: Mapping[str, torch.Tensor], config=None, length: int = 16) -> str:
    """Hex digest of named tensors (name, dtype, shape, bytes) and of a JSON-able `config`; never of a path."""
    h = hashlib.sha256()     # SHA-NI makes it ~2.5x faster than blake2b on x86: ~0.5 s for ViT-B-32's 605 MB
    h.update(json.dumps(config, sort_keys=True, default=str).encode() + b"\n")
    _update_tensors(h, state)
    return h.hexdigest()[:length]


def vision_cfg_of(model_cfg: Mapping) -> dict:
    """The part of `model_cfg` that decides the image tower (what `build_visual` reads)."""
    return {"embed_dim": model_cfg.get("embed_dim"), "vision_cfg": model_cfg.get("vision_cfg"),
            "quick_gelu": bool(model_cfg.get("quick_gelu", False))}
