"""Contrastive pretraining of the embedded toy CLIPs on the generated world (open_clip's ClipLoss).

The token embedding stays at its random initialisation: the grammar uses ~60 of its 49,408 rows, and
training it would cost as much per step as the whole image tower for nothing the text transformer on top
cannot learn. open_clip still loads the checkpoint as a standard model.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import open_clip
import torch
from tqdm.auto import tqdm

from ..world.corpus import generate_corpus
from .normalize import to_model_input


@dataclass(frozen=True)
class PretrainRecipe:
    steps: int = 1200
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.1
    corpus_size: int = 60_000
    seed: int = 0
    grow_from: str = ""      # an embedded model to start from (models/grow.py), else random init

    def as_dict(self) -> dict:
        d = asdict(self)
        if not d["grow_from"]:   # keeps from-scratch recipes' cache keys as they were before growth existed
            del d["grow_from"]
        return d


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up then cosine decay, stepped per iteration (torch's own schedulers chained)."""
    warmup = max(1, warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup)),
    ], milestones=[warmup])


def _tokenize_unique(tokenizer, captions: list[str]) -> torch.Tensor:
    unique, inverse = np.unique(np.asarray(captions), return_inverse=True)
    return tokenizer(list(unique))[torch.from_numpy(inverse)]


@lru_cache(maxsize=1)
def _corpus(size: int, seed: int, progress: bool):
    """The generated corpus, kept for the next model a study pretrains from the same seed (toy-s, toy-m)."""
    return generate_corpus(size, seed=seed, progress=progress)


def pretrain(model: open_clip.CLIP, tokenizer, recipe: PretrainRecipe, device: torch.device | str = "cpu",
             progress: bool = True, desc: str = "pretraining") -> dict:
    """Train `model` in place on the generated corpus; returns a summary (final loss, seconds)."""
    torch.manual_seed(recipe.seed)
    corpus = _corpus(recipe.corpus_size, recipe.seed, progress)
    images = torch.from_numpy(corpus.images).permute(0, 3, 1, 2).contiguous()
    tokens = _tokenize_unique(tokenizer, corpus.captions)
    model.to(device).train()
    model.token_embedding.requires_grad_(False)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=recipe.lr)
    sched = cosine_with_warmup(opt, int(recipe.warmup_fraction * recipe.steps), recipe.steps)
    loss_fn = open_clip.ClipLoss()
    gen = torch.Generator().manual_seed(recipe.seed)
    start, loss = time.time(), float("nan")
    bar = tqdm(range(recipe.steps), desc=desc, disable=not progress)
    for step in bar:
        idx = torch.randint(len(images), (recipe.batch_size,), generator=gen)
        x = to_model_input(images[idx].to(device), model.visual, augment_shift=2, generator=gen)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda"):
            img_f, txt_f, scale = model(x, tokens[idx].to(device))
            loss_t = loss_fn(img_f, txt_f, scale)
        opt.zero_grad(set_to_none=True)
        loss_t.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():  # CLIP clamps the temperature at 100
            model.logit_scale.clamp_(0, math.log(100))
        loss = float(loss_t.detach())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
    model.eval()
    return {"final_loss": loss, "seconds": time.time() - start, "logit_scale": float(model.logit_scale.exp().detach())}
