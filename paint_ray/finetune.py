"""Fine-tuning in plain torch: the image encoder only, against a frozen zero-shot head (PAINT step 3).

AdamW, linear warm-up + cosine stepped per iteration (torch's schedulers), gradient-norm clipping,
optional label smoothing, fp32 (bf16 autocast as an option), seeded. Two data recipes: the embedded one
(batches drawn with replacement, a random shift of the prepared image) and the reference one (a seeded
shuffle per epoch, RandomResizedCrop of the full-view image on the device: augment.py, train_cache.py).
A `Finetuner` can save and restore its whole state, so a Ray Tune trial that is retried resumes where its
last checkpoint left it.
"""
from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from .answer_groups import Groups, as_groups, cross_entropy, restrict
from .data import PreparedSplit
from .models.normalize import to_model_input
from .models.pretrain import cosine_with_warmup
from .precision import inference_autocast


@dataclass(frozen=True)
class FinetuneConfig:
    lr: float = 3e-4
    steps: int = 200
    batch_size: int = 64
    weight_decay: float = 0.1
    warmup_steps: int = 20
    label_smoothing: float = 0.0
    grad_clip: float = 1.0
    augment_shift: int = 3      # random translation in pixels (~10% of a 32 px image)
    seed: int = 0
    augment: str = "shift"      # "shift" (augment_shift on the prepared image) or "rrc" (the reference's crop)
    order: str = "replacement"  # "replacement" (indices drawn with replacement) or "epochs" (a shuffle per epoch)
    precision: str = "fp32"     # "fp32" (the reference) or "bf16" (autocast)
    epochs: float = 0.0         # the epochs `steps` was resolved from (recipe.resolve); 0: steps given directly
    mix: str = "size"           # several tasks (joint): each task's share of a batch, by its size or "balanced"

    def as_dict(self) -> dict:
        """The recipe as plain data, as it enters the fine-tuning job's key.

        A recipe with augment, order, precision and epochs all at their first values gives exactly the dict it
        gave before those fields existed, so θ1 keys of such recipes (the embedded presets') are unchanged.
        'rrc' ignores augment_shift, which is therefore recorded as 0.
        """
        d = asdict(self)
        if d["mix"] == "size":     # absent when at its default, so recipes from before it keep their keys
            del d["mix"]
        if all(d[k] == v for k, v in FIRST_VALUES.items()):
            for k in FIRST_VALUES:
                del d[k]
        elif self.augment == "rrc":
            d["augment_shift"] = 0
        return d

    def validate(self, where: str = "") -> None:
        """A one-line PaintRayError naming the first bad setting (as its CLI flag), its value and what is valid.

        `where` (e.g. a study config's path) prefixes the message. nan and ±inf are rejected: nan compares
        false to everything, so every bound is checked after math.isfinite.
        """
        import math
        import numbers

        from .errors import PaintRayError

        def fail(message: str) -> PaintRayError:
            return PaintRayError(f"{where}: {message}" if where else message)

        def show(value) -> str:
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                text = str(int(value))
            elif isinstance(value, numbers.Real) and not isinstance(value, bool):
                text = repr(float(value))
            else:
                text = repr(value)
            return text if len(text) <= 80 else text[:79] + "…"

        # field, flag, integer?, valid(value), what is valid
        rules = [
            ("batch_size", "--batch-size", True, lambda v: v >= 1, "an integer of at least 1 (images per step)"),
            ("steps", "--steps", True, lambda v: v >= 1, "an integer of at least 1"),
            ("lr", "--lr", False, lambda v: v > 0, "a finite number above 0"),
            ("warmup_steps", "--warmup-steps", True, lambda v: v >= 0, "an integer of at least 0"),
            ("weight_decay", "--weight-decay", False, lambda v: v >= 0, "a finite number of at least 0"),
            ("label_smoothing", "--label-smoothing", False, lambda v: 0 <= v < 1,
             "a number in [0, 1): 0 turns smoothing off, 1 would erase the labels"),
            ("grad_clip", "--grad-clip", False, lambda v: v > 0, "a finite number above 0 (the gradient-norm cap)"),
            ("augment_shift", "--augment-shift", True, lambda v: v >= 0,
             "an integer of at least 0 (pixels of random shift; 0 turns it off)"),
            ("seed", "--seed", True, lambda v: 0 <= v < 2 ** 64, "an integer from 0 to 2**64 - 1"),
            ("epochs", "epochs", False, lambda v: v >= 0, "a finite number of at least 0 (0: train --steps steps)"),
        ]
        for name, flag, integer, valid, what in rules:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
                kind = "a whole number" if integer else "a number"
                raise fail(f"{flag} {show(value)} is not {kind}; give {what}")
            if not integer and not math.isfinite(float(value)):
                raise fail(f"{flag} {show(value)} is not finite; give {what}")
            if not valid(value):
                raise fail(f"{flag} {show(value)} is out of range; give {what}")
        for name, flag, choices in (("augment", "--augment", AUGMENTS), ("order", "--order", ORDERS),
                                    ("precision", "--finetune-precision", PRECISIONS), ("mix", "mix", MIXES)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise fail(f"{flag} {show(value)} is not valid; give one of: {', '.join(choices)}")
        if self.steps <= self.warmup_steps:
            raise fail(f"--steps {self.steps} is at or below the warm-up of {self.warmup_steps} steps: the learning "
                       f"rate would never leave the warm-up; give --steps above {self.warmup_steps} or a smaller "
                       f"--warmup-steps")


AUGMENTS = ("shift", "rrc")
ORDERS = ("replacement", "epochs")
PRECISIONS = ("fp32", "bf16")
MIXES = ("size", "balanced")
FIRST_VALUES = {"augment": "shift", "order": "replacement", "precision": "fp32", "epochs": 0.0}


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s shuffle: derived, not drawn, so a resumed run needs only its step."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{epoch}".encode(), digest_size=8).digest(), "big") >> 1


def visual_state(visual: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every floating-point tensor of the image encoder, detached copies on the CPU (θ as data)."""
    return {k: v.detach().cpu().clone() for k, v in visual.state_dict().items() if v.is_floating_point()}


def batch_logits(visual: torch.nn.Module, head: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Logits of a normalised batch: L2-normalised image features times the (scaled) head."""
    features = visual(x)
    features = features / features.norm(dim=-1, keepdim=True)
    return features.float() @ head.T


class Finetuner:
    """Owns one fine-tuning run: model, optimizer, schedule, data order. `run` advances it."""

    def __init__(self, visual: torch.nn.Module, head: torch.Tensor | dict[str, torch.Tensor],
                 train: PreparedSplit | dict[str, PreparedSplit], cfg: FinetuneConfig,
                 device: torch.device | str = "cpu", groups: Groups | dict[str, Groups] = None):
        self.device = torch.device(device)
        self.visual = visual.to(self.device).train()
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.heads = {k: h.to(self.device) for k, h in (head if isinstance(head, dict) else {"": head}).items()}
        # answer groups of multiple-choice tasks (VQA), shaped like `head`: one per task, None for ordinary ones
        by_task = groups if isinstance(groups, dict) else {"": groups} if groups is not None else {}
        self.groups = {k: as_groups(g, len(self.heads[k]), self.device) for k, g in by_task.items()}
        self.train = train if isinstance(train, dict) else {"": train}
        params = [p for p in self.visual.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = cosine_with_warmup(self.opt, cfg.warmup_steps, cfg.steps)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.last_loss = float("nan")
        self._perm: tuple[int, torch.Tensor] | None = None    # (epoch, its shuffle), rebuilt from the step

    def _drawn(self) -> list[tuple[str, torch.Tensor]]:
        """Order 'replacement': each task's share of the batch in proportion to its size (mix 'size') or equal
        (mix 'balanced'), indices drawn with replacement."""
        names = list(self.train)
        n, b = len(names), self.cfg.batch_size
        if n > 1 and self.cfg.mix == "balanced":
            counts = torch.tensor([b // n + (i < b % n) for i in range(n)])
        elif n > 1:
            sizes = torch.tensor([len(self.train[k]) for k in names], dtype=torch.float)
            counts = torch.bincount(torch.multinomial(sizes, b, True, generator=self.gen), minlength=n)
        else:
            counts = torch.tensor([b])
        return [(name, torch.randint(len(self.train[name]), (k,), generator=self.gen))
                for name, k in zip(names, counts.tolist()) if k > 0]

    def _shuffled(self) -> list[tuple[str, torch.Tensor]]:
        """Order 'epochs': step s takes the next batch of a seeded permutation of all tasks' examples (their
        union); an epoch is ceil(N / batch) steps, its last batch partial, as a shuffling DataLoader gives them."""
        names = list(self.train)
        bounds = [0]
        for name in names:
            bounds.append(bounds[-1] + len(self.train[name]))
        per_epoch = math.ceil(bounds[-1] / self.cfg.batch_size)
        epoch, k = divmod(self.step, per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(epoch_seed(self.cfg.seed, epoch))
            self._perm = (epoch, torch.randperm(bounds[-1], generator=gen))
        batch = self._perm[1][k * self.cfg.batch_size:(k + 1) * self.cfg.batch_size]
        out = []
        for name, lo, hi in zip(names, bounds, bounds[1:]):
            mine = batch[(batch >= lo) & (batch < hi)] - lo
            if len(mine):
                out.append((name, mine))
        return out

    def _batch(self) -> tuple[torch.Tensor, list[tuple[str, slice]], torch.Tensor]:
        """A batch mixing the tasks in proportion to their sizes; returns inputs, per-task slices, labels."""
        picks = self._shuffled() if self.cfg.order == "epochs" else self._drawn()
        routes, start = [], 0
        for name, idx in picks:
            routes.append((name, slice(start, start + len(idx))))
            start += len(idx)
        y = torch.cat([self.train[name].labels[idx] for name, idx in picks]).to(self.device)
        if self.cfg.augment == "rrc":
            from .augment import random_resized_crops
            from .data import image_size_of
            images = [im for name, idx in picks for im in _images(self.train[name], idx)]
            x = to_model_input(random_resized_crops(images, image_size_of(self.visual), self.gen, self.device),
                               self.visual)
        else:
            x = torch.cat([self.train[name].images[idx] for name, idx in picks]).to(self.device)
            x = to_model_input(x, self.visual, self.cfg.augment_shift, self.gen)
        return x, routes, y

    def loss(self, x: torch.Tensor, routes: list[tuple[str, slice]], y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy where every example is scored by its own task's frozen head."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"):
            features = self.visual(x)
        features = features.float()
        features = features / features.norm(dim=-1, keepdim=True)
        total = features.new_zeros(())
        for name, sl in routes:
            logits = features[sl] @ self.heads[name].T
            total = total + cross_entropy(logits, y[sl], self.groups.get(name), self.cfg.label_smoothing, "sum")
        return total / len(y)

    def run(self, until: int | None = None, every: int = 0,
            callback: Callable[["Finetuner"], None] | None = None, progress: bool = False,
            desc: str = "fine-tuning") -> "Finetuner":
        """Train up to step `until` (default: all steps), calling `callback` every `every` steps."""
        until = self.cfg.steps if until is None else min(until, self.cfg.steps)
        self.visual.train()
        bar = tqdm(total=until, initial=self.step, desc=desc, disable=not progress, leave=False)
        while self.step < until:
            x, routes, y = self._batch()
            loss = self.loss(x, routes, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.visual.parameters(), self.cfg.grad_clip)
            self.opt.step()
            self.sched.step()
            self.step += 1
            self.last_loss = float(loss.detach())
            bar.update(1)
            if self.step % 25 == 0:
                bar.set_postfix(loss=f"{self.last_loss:.3f}")
            if callback and every and (self.step % every == 0 or self.step == until):
                callback(self)
        bar.close()
        self.visual.eval()
        return self

    def state_dict(self) -> dict:
        return {"visual": self.visual.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "gen": self.gen.get_state(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.visual.load_state_dict(state["visual"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.gen.set_state(state["gen"])
        self.step = int(state["step"])


def _images(split, idx: torch.Tensor) -> list[torch.Tensor]:
    """uint8 3 x H x W images of a prepared split (one size) or a full-view split (each its own size)."""
    return split.images(idx) if callable(split.images) else list(split.images[idx])


@torch.inference_mode()
def accuracy(visual: torch.nn.Module, head: torch.Tensor, split: PreparedSplit, device: torch.device | str = "cpu",
             batch_size: int = 512, groups: Groups = None) -> float:
    """Top-1 accuracy of `visual` with `head` on a prepared split (within each label's answer group if grouped)."""
    device = torch.device(device)
    visual.eval()
    correct = 0
    for start in range(0, len(split), batch_size):
        x = to_model_input(split.images[start:start + batch_size].to(device), visual)
        with inference_autocast(device):
            logits = batch_logits(visual, head.to(device), x)
        labels = split.labels[start:start + batch_size]
        logits = restrict(logits, labels, as_groups(groups))
        correct += int((logits.argmax(-1).cpu() == labels).sum())
    return correct / max(1, len(split))


def finetune(visual: torch.nn.Module, head, train, cfg: FinetuneConfig, device: torch.device | str = "cpu",
             progress: bool = True, desc: str = "fine-tuning") -> dict:
    """Fine-tune `visual` in place; returns {'seconds', 'final_loss', 'steps'}."""
    start = time.time()
    tuner = Finetuner(visual, head, train, cfg, device).run(progress=progress, desc=desc)
    return {"seconds": time.time() - start, "final_loss": tuner.last_loss, "steps": tuner.step}
