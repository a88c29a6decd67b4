"""Fine-tuning in plain torch: the image encoder only, against a frozen zero-shot head (PAINT step 3).

AdamW, linear warm-up + cosine stepped per iteration (torch's schedulers), gradient-norm clipping,
optional label smoothing, seeded; fp32, TF32 or bf16 autocast (devices.train_precision). Two data recipes:
the embedded one (batches drawn with replacement, a random shift of the prepared image) and the reference
one (a seeded shuffle per epoch, RandomResizedCrop of the full-view image: augment.py, caches/train.py).

The loop keeps the host out of the GPU's way: every random draw of a step (indices, shifts, crop boxes) is
made on a CPU generator when its batch is prepared, one step ahead; on CUDA that batch is gathered into
pinned memory and copied on a side stream while the current step computes; the loss stays on the device
and is read only when asked (`last_loss`). A `Finetuner` saves and restores its whole state through the CPU
(`save` / `restore`), so a retried Ray Tune trial resumes on any device where its checkpoint left off.
"""
from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import PreparedSplit, image_size_of
from ..devices import TRAIN_PRECISIONS, eval_precision, resolve, train_precision
from ..models.checkpoints import load_tensors, save_tensors
from ..models.heads import predictions
from ..models.normalize import random_shift, to_model_input
from ..models.pretrain import cosine_with_warmup
from ..tasks.answer_groups import Groups, as_groups, cross_entropy
from .augment import CropBatch


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
    precision: str = "fp32"     # "fp32" (the reference's), "tf32" (TF32 matmuls on CUDA) or "bf16" (autocast)
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

        from ..errors import PaintRayError

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
                                    ("precision", "--finetune-precision", TRAIN_PRECISIONS), ("mix", "mix", MIXES)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise fail(f"{flag} {show(value)} is not valid; give one of: {', '.join(choices)}")
        if self.steps <= self.warmup_steps:
            raise fail(f"--steps {self.steps} is at or below the warm-up of {self.warmup_steps} steps: the learning "
                       f"rate would never leave the warm-up; give --steps above {self.warmup_steps} or a smaller "
                       f"--warmup-steps")


AUGMENTS = ("shift", "rrc")
ORDERS = ("replacement", "epochs")
MIXES = ("size", "balanced")
FIRST_VALUES = {"augment": "shift", "order": "replacement", "precision": "fp32", "epochs": 0.0}


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s shuffle: derived, not drawn, so a resumed run needs only its step."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{epoch}".encode(), digest_size=8).digest(), "big") >> 1


def visual_state(visual: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every floating-point tensor of the image encoder, detached copies on the CPU (θ as data)."""
    return {k: v.detach().cpu().clone() for k, v in visual.state_dict().items() if v.is_floating_point()}


class Batch:
    """One step's batch as prepared on the host: what the step reads, on its way to the device.

    `gen_state` is the generator state before the batch's draws: a checkpoint taken while this batch is
    prepared ahead saves it, so a resumed run draws this batch again."""

    def __init__(self, gen_state: torch.Tensor, routes: list[tuple[str, slice]], labels: torch.Tensor,
                 images: torch.Tensor | CropBatch, offsets: torch.Tensor | None):
        self.gen_state, self.routes = gen_state, routes
        self.labels, self.images, self.offsets = labels, images, offsets
        self.ready: torch.cuda.Event | None = None

    def to(self, device: torch.device, stream=None) -> "Batch":
        """Copy to `device`: on CUDA from pinned memory on `stream`, recording when it is there."""
        if device.type != "cuda":
            self.labels = self.labels.to(device)
            self.images = self.images.to(device)
            return self
        with torch.cuda.stream(stream):
            self.labels = self.labels.pin_memory().to(device, non_blocking=True)
            self.images = self.images.pin_memory().to(device, non_blocking=True) if torch.is_tensor(self.images) \
                else self.images.to(device, non_blocking=True)
            self.ready = torch.cuda.Event()
            self.ready.record(stream)
        return self

    def wait(self) -> None:
        """Make the current stream wait for the copy (and keep its memory alive for the current stream)."""
        if self.ready is not None:
            current = torch.cuda.current_stream()
            current.wait_event(self.ready)
            for t in (self.labels, *((self.images,) if torch.is_tensor(self.images) else
                                     (self.images.pixels, self.images.wy, self.images.wx))):
                t.record_stream(current)


class Finetuner:
    """Owns one fine-tuning run: model, optimizer, schedule, data order. `run` advances it."""

    def __init__(self, visual: torch.nn.Module, head: torch.Tensor | dict[str, torch.Tensor],
                 train: PreparedSplit | dict[str, PreparedSplit], cfg: FinetuneConfig,
                 device: torch.device | str = "cpu", groups: Groups | dict[str, Groups] = None):
        self.device = resolve(device)
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
        self._loss: torch.Tensor | None = None                # on the device; read only when asked
        self._perm: tuple[int, torch.Tensor] | None = None    # (epoch, its shuffle), rebuilt from the step
        self._ahead: Batch | None = None                      # the next step's batch, prepared one step ahead
        self._side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    @property
    def last_loss(self) -> float:
        """The last step's loss (a host sync: read it every so often, not every step)."""
        return float("nan") if self._loss is None else float(self._loss)

    # ---- data: every draw on the CPU generator, in step order ----------------------------------------
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

    def _shuffled(self, step: int) -> list[tuple[str, torch.Tensor]]:
        """Order 'epochs': step s takes the next batch of a seeded permutation of all tasks' examples (their
        union); an epoch is ceil(N / batch) steps, its last batch partial, as a shuffling DataLoader gives them."""
        names = list(self.train)
        bounds = [0]
        for name in names:
            bounds.append(bounds[-1] + len(self.train[name]))
        per_epoch = math.ceil(bounds[-1] / self.cfg.batch_size)
        epoch, k = divmod(step, per_epoch)
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

    def _prepare(self, step: int) -> Batch:
        """Step `step`'s batch on the host: indices, the shift offsets or crop boxes, the gathered uint8 pixels."""
        gen_state = self.gen.get_state()
        picks = self._shuffled(step) if self.cfg.order == "epochs" else self._drawn()
        routes, start = [], 0
        for name, idx in picks:
            routes.append((name, slice(start, start + len(idx))))
            start += len(idx)
        labels = torch.cat([self.train[name].labels[idx] for name, idx in picks])
        offsets = None
        if self.cfg.augment == "rrc":
            images = CropBatch([im for name, idx in picks for im in _images(self.train[name], idx)],
                               image_size_of(self.visual), self.gen)
        else:
            images = torch.cat([self.train[name].images[idx] for name, idx in picks])
            if self.cfg.augment_shift > 0:
                offsets = torch.randint(0, 2 * self.cfg.augment_shift + 1, (len(images), 2), generator=self.gen)
        return Batch(gen_state, routes, labels, images, offsets).to(self.device, self._side)

    def _next(self) -> Batch:
        """This step's batch; on CUDA the next one is prepared and copied while this one computes."""
        batch = self._ahead if self._ahead is not None else self._prepare(self.step)
        self._ahead = None
        if self._side is not None and self.step + 1 < self.cfg.steps:
            self._ahead = self._prepare(self.step + 1)
        batch.wait()
        return batch

    def _input(self, batch: Batch) -> torch.Tensor:
        if isinstance(batch.images, CropBatch):
            return to_model_input(batch.images.resample(), self.visual)
        x = batch.images if batch.offsets is None else random_shift(batch.images, self.cfg.augment_shift,
                                                                    offsets=batch.offsets)
        return to_model_input(x, self.visual)

    # ---- the step -------------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, routes: list[tuple[str, slice]], y: torch.Tensor, autocast=None) -> torch.Tensor:
        """Cross-entropy where every example is scored by its own task's frozen head (the head matmul in fp32)."""
        with (autocast() if autocast else torch.autocast(self.device.type, enabled=False)):
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
        with train_precision(self.device, self.cfg.precision) as autocast:
            while self.step < until:
                batch = self._next()
                loss = self.loss(self._input(batch), batch.routes, batch.labels, autocast)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.visual.parameters(), self.cfg.grad_clip)
                self.opt.step()
                self.sched.step()
                self.step += 1
                self._loss = loss.detach()
                bar.update(1)
                if progress and self.step % 25 == 0:          # the one host read of the loss, every 25 steps
                    bar.set_postfix(loss=f"{self.last_loss:.3f}")
                if callback and every and (self.step % every == 0 or self.step == until):
                    callback(self)
        bar.close()
        self._ahead = None if self.step >= self.cfg.steps else self._ahead
        self.visual.eval()
        return self

    # ---- state: through the CPU, so a checkpoint resumes on any device ---------------------------------
    def state_dict(self) -> dict:
        """The whole run: weights, optimizer, schedule, generator (as of the next batch not yet taken), step."""
        gen = self._ahead.gen_state if self._ahead is not None else self.gen.get_state()
        return {"visual": self.visual.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "gen": gen.clone(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from any device: weights and optimizer state move to this run's device, the
        generator state (a CPU byte tensor) stays on the CPU generator."""
        self.visual.load_state_dict(state["visual"])
        self.opt.load_state_dict(state["opt"])       # torch casts the moments to each parameter's device
        self.sched.load_state_dict(state["sched"])
        self.gen.set_state(state["gen"].to("cpu"))
        self.step = int(state["step"])
        self._ahead = None

    def save(self, folder: str | Path, trainer: bool = True) -> None:
        """visual.safetensors (+ trainer.pt: optimizer, schedule, generator, step) into `folder`."""
        state = self.state_dict()
        save_tensors(state.pop("visual"), Path(folder) / "visual.safetensors")
        if trainer:
            torch.save(state, Path(folder) / "trainer.pt")

    def restore(self, folder: str | Path) -> bool:
        """Resume from `save`'s folder (loaded to the CPU first); False when it holds no trainer state."""
        folder = Path(folder)
        if not (folder / "trainer.pt").is_file():
            return False
        state = torch.load(folder / "trainer.pt", map_location="cpu", weights_only=True)
        state["visual"] = load_tensors(folder / "visual.safetensors", "cpu")
        self.load_state_dict(state)
        return True


def _images(split, idx: torch.Tensor) -> list[torch.Tensor]:
    """uint8 3 x H x W images of a prepared split (one size) or a full-view split (each its own size)."""
    return split.images(idx) if callable(split.images) else list(split.images[idx])


@torch.inference_mode()
def accuracy(visual: torch.nn.Module, head: torch.Tensor, split: PreparedSplit, device: torch.device | str = "cpu",
             batch_size: int = 512, groups: Groups = None) -> float:
    """Top-1 accuracy of `visual` with `head` on a prepared split (within each label's answer group if grouped),
    at the device's eval precision; counts stay on the device until the end (one host read)."""
    device = resolve(device)
    visual.eval()
    head, groups = head.to(device), as_groups(groups, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for start in range(0, len(split), batch_size):
        x = to_model_input(split.images[start:start + batch_size].to(device, non_blocking=True), visual)
        labels = split.labels[start:start + batch_size].to(device, non_blocking=True)
        correct += (predictions(visual, head, x, labels, groups, eval_precision(device)) == labels).sum()
    return int(correct) / max(1, len(split))


def finetune(visual: torch.nn.Module, head, train, cfg: FinetuneConfig, device: torch.device | str = "cpu",
             progress: bool = True, desc: str = "fine-tuning") -> dict:
    """Fine-tune `visual` in place; returns {'seconds', 'final_loss', 'steps'}."""
    start = time.time()
    tuner = Finetuner(visual, head, train, cfg, device).run(progress=progress, desc=desc)
    return {"seconds": time.time() - start, "final_loss": tuner.last_loss, "steps": tuner.step}
