"""Models from one spec string — the single place a model is looked up by name.

  toy-s | toy-m | toy-l          embedded CLIPs, pretrained by paint_ray on the generated world on first use
  ARCH:TAG                       open_clip architecture with a pretrained tag (ViT-B-32:openai)
  ARCH:/path/weights.safetensors open_clip architecture with a local checkpoint file (.safetensors/.pt/.bin)
  hf-hub:ORG/REPO                an open_clip model on the Hugging Face hub (from the local hub cache offline)
  local-dir:/path | /path        a folder with open_clip_config.json + weights (what paint_ray writes)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from ..errors import PaintRayError, closest, unknown
from ..paths import home
from .checkpoints import CONFIG_NAME, WEIGHTS_NAME, load_tensors, read_model_config, save_model_dir
from .grow import grow_depth
from .pretrain import PretrainRecipe, pretrain

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)

# Recipes per embedded size; changing one changes the cache key, so stale models are never reused.
EMBEDDED: dict[str, PretrainRecipe] = {
    "toy-xs": PretrainRecipe(steps=200, batch_size=128, lr=3e-3, corpus_size=6000),  # smoke tests, seconds
    "toy-s": PretrainRecipe(steps=800, lr=2e-3),      # 96 x 3 image blocks, ~1.5 min on 2 cores
    "toy-m": PretrainRecipe(steps=1000, lr=1.5e-3),   # 192 x 5, ~8 min
    # 192 x 7: toy-m grown deeper (models/grow.py), then trained on fresh captions, ~4 min after toy-m
    "toy-l": PretrainRecipe(steps=320, lr=1e-3, seed=1, grow_from="toy-m"),
}


@dataclass
class LoadedModel:
    """An open_clip CLIP with its tokenizer and the identity used in results and cache keys."""
    model: open_clip.CLIP
    tokenizer: object
    spec: str
    arch: str
    pretrained: str
    model_cfg: dict

    @property
    def key(self) -> str:
        """Filesystem-safe identity for caches (architecture + a hash of where the weights came from)."""
        digest = hashlib.sha1(f"{self.spec}|{self.pretrained}".encode()).hexdigest()[:10]
        return f"{self.arch}-{digest}"


@contextlib.contextmanager
def _quiet_open_clip():
    """open_clip logs at ERROR before re-raising; paint_ray turns those into one-line errors of its own."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.setLevel(old)


def embedded_dir(name: str) -> Path:
    recipe = EMBEDDED[name]
    config = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    from ..tasks.embedded import WORLD_VERSION
    key = [config, recipe.as_dict(), WORLD_VERSION]
    if recipe.grow_from:   # a grown model is only as fresh as the one it grew from
        key.append(embedded_dir(recipe.grow_from).name)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return home() / "models" / f"{name}-{digest}"


def ensure_embedded(name: str, progress: bool = True, device: str = "cpu") -> Path:
    """Pretrain the embedded model `name` unless its cached folder exists; returns the folder.

    A file lock makes concurrent callers (several Ray workers on one node) pretrain once and share it.
    """
    from filelock import FileLock
    path = embedded_dir(name)
    if (path / WEIGHTS_NAME).is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if (path / WEIGHTS_NAME).is_file():
            return path
        recipe = EMBEDDED[name]
        torch.manual_seed(recipe.seed)
        with _quiet_open_clip():  # "no pretrained weights": random init is the point here
            model = open_clip.create_model(name, pretrained=None)
        if recipe.grow_from:
            parent = _from_dir(ensure_embedded(recipe.grow_from, progress, device), recipe.grow_from)
            model = grow_depth(parent.model, model)
        tokenizer = open_clip.get_tokenizer(name)
        summary = pretrain(model, tokenizer, recipe, device=device, progress=progress,
                           desc=f"pretraining {name} (first use, cached after)")
        model.cpu()
        save_model_dir(model, open_clip.get_model_config(name), path,
                       extra={"embedded": name, "recipe": recipe.as_dict(), "pretrain": summary})
    return path


def _from_dir(path: Path, spec: str, arch: str | None = None, pretrained: str | None = None) -> LoadedModel:
    cfg = read_model_config(path)
    if not (path / WEIGHTS_NAME).is_file():
        raise PaintRayError(f"model folder {path} has no {WEIGHTS_NAME}")
    model_cfg = cfg["model_cfg"]
    with _quiet_open_clip():  # weights are loaded next, by paint_ray, with one-line errors
        model = open_clip.create_model(f"local-dir:{path}", load_weights=False)
    state = load_tensors(path / WEIGHTS_NAME)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise PaintRayError(f"checkpoint {path / WEIGHTS_NAME} does not match its config "
                            f"({str(e).splitlines()[0]})") from e
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    arch = arch or cfg.get("paint_ray", {}).get("arch") or cfg.get("paint_ray", {}).get("embedded") or path.name
    return LoadedModel(model, tokenizer, spec, arch, pretrained or str(path), model_cfg)


def _offline_hint(spec: str, arch: str) -> str:
    return (f"weights for {spec!r} are not available offline; download them once with internet, or give a "
            f"local file: --model {arch}:/path/to/weights.safetensors")


def load_model(spec: str, progress: bool = True) -> LoadedModel:
    """Resolve a model spec (see module docstring) into a ready, eval-mode CLIP on the CPU."""
    spec = spec.strip()
    if spec in EMBEDDED:
        return _from_dir(ensure_embedded(spec, progress=progress), spec, arch=spec, pretrained="paint_ray-world")
    if spec.startswith("local-dir:") or (os.sep in spec and ":" not in spec):
        path = Path(spec.removeprefix("local-dir:")).expanduser()
        if not path.is_dir():
            raise PaintRayError(f"model folder {path} does not exist; a model folder holds {CONFIG_NAME} + {WEIGHTS_NAME}")
        return _from_dir(path.resolve(), spec)
    if spec.startswith("hf-hub:"):
        with _quiet_open_clip():
            try:
                model = open_clip.create_model(spec)
                tokenizer = open_clip.get_tokenizer(spec)
            except Exception as e:
                raise PaintRayError(_offline_hint(spec, "ARCH") + f" ({type(e).__name__})") from e
        return LoadedModel(model.eval(), tokenizer, spec, spec.removeprefix("hf-hub:").replace("/", "-"), spec, {})
    arch, sep, pretrained = spec.partition(":")
    if not sep or arch not in open_clip.list_models():
        valid = sorted(EMBEDDED) + ["ARCH:TAG", "ARCH:/path/to/checkpoint", "hf-hub:ORG/REPO", "local-dir:/path"]
        if not sep:
            raise PaintRayError(f"unknown model spec {spec!r}{closest(spec, EMBEDDED)}; valid: {', '.join(valid)} "
                                f"(ARCH from open_clip.list_models())")
        raise PaintRayError(f"unknown open_clip architecture {arch!r}{closest(arch, open_clip.list_models())} in model "
                            f"spec {spec!r}; valid: an architecture from open_clip.list_models() (e.g. ViT-B-32, "
                            f"ViT-B-16, ViT-L-14) or an embedded model: {', '.join(sorted(EMBEDDED))}")
    model_cfg = open_clip.get_model_config(arch)
    looks_like_path = os.sep in pretrained or pretrained.endswith((".safetensors", ".pt", ".pth", ".bin"))
    if looks_like_path:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise PaintRayError(f"checkpoint file {path} does not exist (from model spec {spec!r})")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local file needs no hub; never let it try
        # Read the file first: a corrupt one fails before the model is built.
        state = load_tensors(path) if path.suffix == ".safetensors" else _torch_load(path)
        with _quiet_open_clip():  # open_clip warns "initialized randomly"; the weights are loaded right after
            model = open_clip.create_model(arch, pretrained=None)
        try:
            model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except RuntimeError as e:
            raise PaintRayError(f"checkpoint {path} does not fit {arch} ({str(e).splitlines()[0]})") from e
        return LoadedModel(model.eval(), open_clip.get_tokenizer(arch), spec, arch, str(path.resolve()), model_cfg)
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        raise unknown(f"pretrained tag for {arch}", pretrained, tags or ["(none: give a checkpoint file)"])
    with _quiet_open_clip():
        try:
            model = open_clip.create_model(arch, pretrained=pretrained)
        except Exception as e:
            raise PaintRayError(_offline_hint(spec, arch)) from e
    return LoadedModel(model.eval(), open_clip.get_tokenizer(arch), spec, arch, pretrained, model_cfg)


def _torch_load(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PaintRayError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}); "
                            f"delete it or give a valid file") from e
    if not isinstance(state, dict):
        raise PaintRayError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state


def model_names() -> list[str]:
    return sorted(EMBEDDED)
