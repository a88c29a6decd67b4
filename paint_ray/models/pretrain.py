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
import torch.nn.functional as F
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
    # In-batch positives (see clip_loss): "" each image with its own caption only (CLIP), "caption" also
    # every item with an equal caption
    positives: str = ""

    def __post_init__(self) -> None:
        if self.positives not in ("", "caption"):
            raise ValueError(f"positives={self.positives!r}: expected '' or 'caption'")

    def as_dict(self) -> dict:
        d = asdict(self)
        for optional in ("grow_from", "positives"):   # unset: the cache key stays as before the option existed
            if not d[optional]:
                del d[optional]
        return d


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up then cosine decay, stepped per iteration (torch's own schedulers chained)."""
    warmup = max(1, warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup)),
    ], milestones=[warmup])


def _tokenize_unique(tokenizer, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens per caption, and each caption's id (equal captions, equal ids)."""
    unique, inverse = np.unique(np.asarray(captions), return_inverse=True)
    ids = torch.from_numpy(inverse)
    return tokenizer(list(unique))[ids], ids


_CLIP_LOSS = open_clip.ClipLoss()


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
              caption_ids: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric contrastive loss; with `caption_ids`, items with equal captions are positives.

    A grammar of a few thousand captions repeats them: in a batch of 256 from the embedded corpus, about half
    the items share their caption with another item, and plain CLIP loss (open_clip's ClipLoss, used without
    ids) pushes those images away from their own caption's text. With ids, each row's target is spread evenly
    over the items with its caption (a multi-positive InfoNCE, as in SupCon); the target is symmetric, so it
    serves both directions.
    """
    if caption_ids is None:
        return _CLIP_LOSS(image_features, text_features, logit_scale)
    # in fp32 under a GPU's bf16 autocast too: a bf16 target would round 1/3 to 0.334
    logits = (logit_scale * image_features @ text_features.T).float()
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


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
    tokens, caption_ids = _tokenize_unique(tokenizer, corpus.captions)
    model.to(device).train()
    model.token_embedding.requires_grad_(False)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=recipe.lr)
    sched = cosine_with_warmup(opt, int(recipe.warmup_fraction * recipe.steps), recipe.steps)
    ids = caption_ids if recipe.positives == "caption" else None
    gen = torch.Generator().manual_seed(recipe.seed)
    start, loss = time.time(), float("nan")
    bar = tqdm(range(recipe.steps), desc=desc, disable=not progress)
    for step in bar:
        idx = torch.randint(len(images), (recipe.batch_size,), generator=gen)
        x = to_model_input(images[idx].to(device), model.visual, augment_shift=2, generator=gen)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):   # ask the tensor
            img_f, txt_f, scale = model(x, tokens[idx].to(device))
            loss_t = clip_loss(img_f, txt_f, scale, None if ids is None else ids[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss_t.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():  # CLIP clamps the temperature at 100
            model.logit_scale.clamp_(0, math.log(100))
        if step % 20 == 0 or step == recipe.steps - 1:    # reading the loss syncs a GPU: not every step
            loss = float(loss_t.detach())
            bar.set_postfix(loss=f"{loss:.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
    model.eval()
    return {"final_loss": loss, "seconds": time.time() - start, "logit_scale": float(model.logit_scale.exp().detach())}
