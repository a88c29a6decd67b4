"""Models from one spec string — the single place a model is looked up by name.

  toy-s | toy-m | toy-l          embedded CLIPs, pretrained by paint_ray on the generated world on first use
  ARCH:TAG                       open_clip architecture with a pretrained tag (ViT-B-32:openai)
  ARCH:/path/weights.safetensors open_clip architecture with a local checkpoint file (.safetensors/.pt/.bin)
  hf-hub:ORG/REPO                an open_clip model on the Hugging Face hub (from the local hub cache offline)
  local-dir:/path | /path        a folder with open_clip_config.json + weights (what paint_ray writes)

Every kind is built by `build.build_clip(model_cfg)` from the full open_clip config it was loaded with, and
that config travels on the `LoadedModel` (a tag whose pretrained config says quick_gelu=True, e.g. OpenAI
or LAION-400M, is built and recorded with QuickGELU). Identity is content: `LoadedModel.digest` hashes the
weights and that config, never the spec or the path.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import open_clip
import torch
from open_clip.transform import PreprocessCfg, merge_preprocess_dict

from ..errors import PaintRayError, closest, unknown
from ..identity import digest as content_digest
from ..paths import home
from .build import build_clip, first_line, load_strict, set_preprocess_cfg, short, tensors_digest, vision_cfg_of
from .checkpoints import CONFIG_NAME, WEIGHTS_NAME, load_tensors, read_model_config, save_model_dir
from .grow import grow_depth
from .normalize import normalization_of
from .pretrain import PretrainRecipe, pretrain

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)

# Recipes per embedded size; changing one changes the cache key, so stale models are never reused.
EMBEDDED: dict[str, PretrainRecipe] = {
    "toy-xs": PretrainRecipe(steps=200, batch_size=128, lr=3e-3, corpus_size=6000),  # smoke tests, seconds
    # The three sizes learn with equal captions as positives (pretrain.clip_loss). toy-m's tower is 192 wide:
    # at 128 a digits fine-tune took shapes with it. Both train 1,000 steps: at 700 toy-m's shapes features
    # were unfinished (zero-shot 71-85% over two draws, 93-95% at 1,000) and a digits fine-tune overwrote
    # them; a 700-step toy-s knew so little shapes (40-57%) that it had little to lose and out-patched toy-m
    # in two pretraining draws of three (README, "Why 1,000 pretraining steps").
    "toy-s": PretrainRecipe(steps=1000, lr=2e-3, positives="caption"),   # 96 x 3 image blocks, ~3 min on 2 cores
    "toy-m": PretrainRecipe(steps=1000, lr=2e-3, positives="caption"),   # 192 x 4, ~8 min
    # 192 x 6: toy-m grown deeper (models/grow.py), then trained on fresh captions, ~2 min after toy-m
    "toy-l": PretrainRecipe(steps=200, lr=1e-3, seed=1, corpus_size=30_000, grow_from="toy-m", positives="caption"),
}


@dataclass(frozen=True)
class ModelRef:
    """A loaded model as the pipeline names it: its spec for reading, its weight digest for identity."""
    spec: str
    digest: str
    pretrained: str
    arch: str
    visual_params: int
    image_size: int = 0          # the image tower's input resolution (what eval data is prepared at)


@dataclass
class LoadedModel:
    """An open_clip CLIP as it was built and loaded, with its tokenizer and its content identity.

    `model_cfg` is the full open_clip model config the model was built from (`build_clip(model_cfg)` rebuilds
    the same architecture: activation, image size, hub config), `preprocess_cfg` its image preprocessing.
    `digest` is the identity used in results and cache keys: a digest of every tensor of the weights plus
    `model_cfg`, never of the spec or the path the weights came from.
    """
    model: open_clip.CLIP
    tokenizer: object
    spec: str
    arch: str
    pretrained: str
    model_cfg: dict
    preprocess_cfg: dict = field(default_factory=dict)

    @cached_property
    def digest(self) -> str:
        """16 hex chars over the model's state dict (names, dtypes, shapes, bytes), `model_cfg` and the input
        normalisation (`preprocess_cfg`'s mean and std: the same weights under another normalisation are
        another model)."""
        return tensors_digest(self.model.state_dict(), {"model_cfg": self.model_cfg,
                                                        "normalize": normalization_of(self.preprocess_cfg)})

    @cached_property
    def visual_digest(self) -> str:
        """Like `digest`, over the image tower's tensors and the config fields that build it only."""
        return tensors_digest(self.model.visual.state_dict(), {"vision": vision_cfg_of(self.model_cfg)})

    @property
    def ref(self) -> ModelRef:
        from ..data import image_size_of
        return ModelRef(self.spec, self.digest, self.pretrained, self.arch,
                        sum(p.numel() for p in self.model.visual.parameters()), image_size_of(self.model.visual))

    @property
    def key(self) -> str:
        """Filesystem-safe identity for caches: the architecture (for reading) and the content digest."""
        return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', self.arch)}-{self.digest[:10]}"


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
    return home() / "models" / f"{name}-{content_digest(key, 10)}"


def ensure_embedded(name: str, progress: bool = True, device: str = "cpu", storage: str | None = None) -> Path:
    """The embedded model `name`'s folder: from this node's cache, else from the study's `storage` (where the
    node that pretrained it published it: seeded pretraining on another kind of CPU gives other weights), else
    pretrained here and published there. A file lock makes concurrent callers on a node (several Ray
    workers) pretrain or fetch once and share it."""
    from filelock import FileLock

    from ..storage import exists, fetch, publish, relative_name
    path = embedded_dir(name)
    if (path / WEIGHTS_NAME).is_file():
        if storage:       # cached here from an earlier study: this study's other nodes read it from its storage
            for f in (CONFIG_NAME, WEIGHTS_NAME):
                publish(path / f, storage)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if (path / WEIGHTS_NAME).is_file():
            return path
        names = [relative_name(path / f) for f in (CONFIG_NAME, WEIGHTS_NAME)]
        if storage and all(exists(n, storage) for n in names):
            for n in names:                  # the weights last: their presence marks a complete folder
                fetch(n, storage)
            return path
        recipe = EMBEDDED[name]
        torch.manual_seed(recipe.seed)
        model = build_clip(open_clip.get_model_config(name), f"the config of {name}")  # random init: the point
        if recipe.grow_from:
            parent = _from_dir(ensure_embedded(recipe.grow_from, progress, device), recipe.grow_from)
            model = grow_depth(parent.model, model)
        tokenizer = open_clip.get_tokenizer(name)
        summary = pretrain(model, tokenizer, recipe, device=device, progress=progress,
                           desc=f"pretraining {name} (first use, cached after)")
        model.cpu()
        save_model_dir(model, open_clip.get_model_config(name), path,
                       extra={"embedded": name, "recipe": recipe.as_dict(), "pretrain": summary})
        if storage:
            for n in names:
                publish(home() / n, storage)
    return path


def _preprocess(*overlays: dict, model: torch.nn.Module) -> dict:
    """open_clip's preprocessing defaults, overlaid in order, with the size the built image tower takes."""
    cfg = asdict(PreprocessCfg())
    for overlay in overlays:
        cfg = merge_preprocess_dict(cfg, overlay or {})
    size = getattr(model.visual, "image_size", None)
    if size is not None:                   # as open_clip.create_model does
        cfg["size"] = size
    return cfg


def _finish(model: torch.nn.Module, tokenizer, spec: str, arch: str, pretrained: str, model_cfg: dict,
            preprocess_cfg: dict) -> LoadedModel:
    set_preprocess_cfg(model.visual, preprocess_cfg)
    loaded = LoadedModel(model.eval(), tokenizer, spec, arch, pretrained, model_cfg, preprocess_cfg)
    loaded.digest      # noqa: B018 -- identity of the weights as loaded, before anything can touch them
    return loaded


def _from_dir(path: Path, spec: str, arch: str | None = None, pretrained: str | None = None) -> LoadedModel:
    cfg = read_model_config(path)
    cfg_path = path / CONFIG_NAME
    if not isinstance(cfg, dict) or "model_cfg" not in cfg:
        keys = ", ".join(map(str, cfg)) if isinstance(cfg, dict) else type(cfg).__name__
        raise PaintRayError(f"model config {short(cfg_path)} has no 'model_cfg' (found: {short(keys or 'nothing', 60)}); "
                            f"a model folder's {CONFIG_NAME} holds {{\"model_cfg\": {{...}}, \"preprocess_cfg\": {{...}}}}")
    if not (path / WEIGHTS_NAME).is_file():
        raise PaintRayError(f"model folder {short(path)} has no {WEIGHTS_NAME}")
    model_cfg = cfg["model_cfg"]
    model = build_clip(model_cfg, f"the model_cfg in {short(cfg_path)}")
    load_strict(model, load_tensors(path / WEIGHTS_NAME), f"checkpoint {short(path / WEIGHTS_NAME)} does not match its config")
    with _quiet_open_clip():
        tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    extra = cfg.get("paint_ray") if isinstance(cfg.get("paint_ray"), dict) else {}
    arch = arch or extra.get("arch") or extra.get("embedded") or path.name
    preprocess = _preprocess(cfg.get("preprocess_cfg") if isinstance(cfg.get("preprocess_cfg"), dict) else {},
                             model=model)
    return _finish(model, tokenizer, spec, arch, pretrained or str(path), model_cfg, preprocess)


def _offline_hint(spec: str, arch: str) -> str:
    return (f"weights for {short(spec)!r} are not available offline; download them once with internet, or give a "
            f"local file: --model {arch}:/path/to/weights.safetensors")


def _load_downloaded(model: torch.nn.Module, path: str, spec: str, arch: str) -> None:
    """Weights open_clip fetched (hub cache, URL cache), with its format conversions, strictly."""
    try:
        open_clip.load_checkpoint(model, path, strict=True)
    except RuntimeError as e:
        if "state_dict" in str(e):   # "Error(s) in loading state_dict for CLIP: ..."
            raise PaintRayError(f"weights {short(path)} of {short(spec)!r} do not fit {arch} ({first_line(e)})") from e
        raise PaintRayError(f"weights {short(path)} of {short(spec)!r} are corrupt or truncated "
                            f"({type(e).__name__}); delete them or give a local file") from e
    except Exception as e:
        raise PaintRayError(f"weights {short(path)} of {short(spec)!r} are corrupt or truncated "
                            f"({type(e).__name__}: {first_line(e, 80)}); delete them or give a local file") from e


def _from_hub(spec: str) -> LoadedModel:
    """hf-hub:ORG/REPO: the repo's open_clip_config.json and weights, from the hub (its local cache offline)."""
    from open_clip.pretrained import download_pretrained_from_hf
    repo = spec.removeprefix("hf-hub:").strip()
    arch = repo.replace("/", "-")
    if not repo or repo.count("/") != 1:
        raise PaintRayError(f"hf-hub model {short(spec)!r} is not of the form hf-hub:ORG/REPO")
    with _quiet_open_clip():
        try:
            cfg_file = download_pretrained_from_hf(repo, filename=CONFIG_NAME)
        except Exception as e:
            raise PaintRayError(_offline_hint(spec, "ARCH") + f" ({type(e).__name__})") from e
    try:
        cfg = json.loads(Path(cfg_file).read_text())
    except (OSError, ValueError) as e:
        raise PaintRayError(f"{CONFIG_NAME} of {short(spec)!r} is not valid JSON ({type(e).__name__}); "
                            f"delete {short(cfg_file)} from the hub cache") from e
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg"), dict):
        raise PaintRayError(f"{CONFIG_NAME} of {short(spec)!r} has no 'model_cfg'; it is not an open_clip model")
    model_cfg = cfg["model_cfg"]
    model = build_clip(model_cfg, f"the model_cfg of {short(spec)}")
    with _quiet_open_clip():
        try:
            weights = download_pretrained_from_hf(repo)   # open_clip_model.safetensors, else open_clip_pytorch_model.bin
        except Exception as e:
            raise PaintRayError(_offline_hint(spec, "ARCH") + f" ({type(e).__name__})") from e
        _load_downloaded(model, weights, spec, arch)
        tokenizer = open_clip.get_tokenizer(spec)
    preprocess = _preprocess(cfg.get("preprocess_cfg") if isinstance(cfg.get("preprocess_cfg"), dict) else {},
                             model=model)
    return _finish(model, tokenizer, spec, arch, spec, model_cfg, preprocess)


def _from_tag(spec: str, arch: str, tag: str) -> LoadedModel:
    """ARCH:TAG. The tag's pretrained config decides the activation: quick_gelu=True builds QuickGELU."""
    from open_clip.pretrained import download_pretrained
    pretrained_cfg = open_clip.get_pretrained_cfg(arch, tag)
    model_cfg = open_clip.get_model_config(arch)
    if pretrained_cfg.get("quick_gelu", False):
        model_cfg["quick_gelu"] = True            # what open_clip's force_quick_gelu=True does
    with _quiet_open_clip():
        try:
            weights = download_pretrained(pretrained_cfg)
        except Exception as e:
            raise PaintRayError(_offline_hint(spec, arch)) from e
    if not weights:
        raise PaintRayError(_offline_hint(spec, arch))
    model = build_clip(model_cfg, f"the open_clip config of {arch}")
    with _quiet_open_clip():
        _load_downloaded(model, weights, spec, arch)
    return _finish(model, open_clip.get_tokenizer(arch), spec, arch, tag, model_cfg,
                   _preprocess(pretrained_cfg, model=model))


def _from_checkpoint(spec: str, arch: str, path: Path) -> LoadedModel:
    """ARCH:/path/file: the architecture's open_clip config, the file's weights, read by paint_ray."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local file needs no hub; never let it try
    # Read the file first: a corrupt one fails before the model is built.
    state = load_tensors(path) if path.suffix == ".safetensors" else _torch_load(path)
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    model_cfg = open_clip.get_model_config(arch)
    model = build_clip(model_cfg, f"the open_clip config of {arch}")
    load_strict(model, state, f"checkpoint {short(path)} does not fit {arch}")
    return _finish(model, open_clip.get_tokenizer(arch), spec, arch, str(path.resolve()), model_cfg,
                   _preprocess(model=model))


def check_spec(spec: str) -> None:
    """Every check of a model spec that loads nothing: a one-line error naming the bad value and what is
    valid (run before any Ray start-up, pretraining or fine-tuning)."""
    spec = spec.strip()
    if spec in EMBEDDED:
        return
    if spec.startswith("local-dir:") or (os.sep in spec and ":" not in spec):
        path = Path(spec.removeprefix("local-dir:")).expanduser()
        if not path.is_dir():
            what = "is a file, not a folder" if path.exists() else "does not exist"
            raise PaintRayError(f"model folder {short(path)} {what}; a model folder holds {CONFIG_NAME} + {WEIGHTS_NAME}")
        return
    if spec.startswith("hf-hub:"):
        return
    arch, sep, pretrained = spec.partition(":")
    if not sep or arch not in open_clip.list_models():
        valid = sorted(EMBEDDED) + ["ARCH:TAG", "ARCH:/path/to/checkpoint", "hf-hub:ORG/REPO", "local-dir:/path"]
        if not sep:
            raise PaintRayError(f"unknown model spec {short(spec)!r}{closest(spec, EMBEDDED)}; valid: {', '.join(valid)} "
                                f"(ARCH from open_clip.list_models())")
        raise PaintRayError(f"unknown open_clip architecture {short(arch)!r}{closest(arch, open_clip.list_models())} in "
                            f"model spec {short(spec)!r}; valid: an architecture from open_clip.list_models() (e.g. "
                            f"ViT-B-32, ViT-B-16, ViT-L-14) or an embedded model: {', '.join(sorted(EMBEDDED))}")
    if _is_path(pretrained):
        path = Path(pretrained).expanduser()
        if path.is_dir():
            raise PaintRayError(f"checkpoint {short(path)} is a directory; a checkpoint must be a file "
                                f"(.safetensors/.pt/.bin); for a model folder use local-dir:{short(path, 60)}")
        if not path.is_file():
            raise PaintRayError(f"checkpoint file {short(path)} does not exist (from model spec {short(spec)!r})")
        return
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        raise unknown(f"pretrained tag for {arch}", short(pretrained), tags or ["(none: give a checkpoint file)"])


def _is_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.endswith((".safetensors", ".pt", ".pth", ".bin"))


def load_model(spec: str, progress: bool = True, storage: str | None = None) -> LoadedModel:
    """Resolve a model spec (see module docstring) into a ready, eval-mode CLIP on the CPU (an embedded model
    from this node's cache or the study's `storage`, pretrained only when neither has it)."""
    spec = spec.strip()
    check_spec(spec)
    if spec in EMBEDDED:
        return _from_dir(ensure_embedded(spec, progress=progress, storage=storage), spec, arch=spec,
                         pretrained="paint_ray-world")
    if spec.startswith("local-dir:") or (os.sep in spec and ":" not in spec):
        return _from_dir(Path(spec.removeprefix("local-dir:")).expanduser().resolve(), spec)
    if spec.startswith("hf-hub:"):
        return _from_hub(spec)
    arch, _, pretrained = spec.partition(":")
    if _is_path(pretrained):
        return _from_checkpoint(spec, arch, Path(pretrained).expanduser())
    return _from_tag(spec, arch, pretrained)


def load_verified(spec: str, digest: str, where: str = "this node", storage: str | None = None) -> LoadedModel:
    """The model `spec` names, checked to be the one with weights `digest` (what the study loaded): a node whose
    checkpoint differs says so in one line instead of computing on other weights."""
    loaded = load_model(spec, progress=False, storage=storage)
    if loaded.digest != digest:
        raise PaintRayError(f"model {short(spec)!r} on {where} has weights {loaded.digest}, not the {digest} the "
                            f"study loaded; give every node the same checkpoint")
    return loaded


def _torch_load(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PaintRayError(f"checkpoint {short(path)} is corrupt or truncated ({type(e).__name__}); "
                            f"delete it or give a valid file") from e
    if not isinstance(state, dict):
        raise PaintRayError(f"checkpoint {short(path)} holds a {type(state).__name__}, not a state dict")
    return state


def model_names() -> list[str]:
    return sorted(EMBEDDED)
