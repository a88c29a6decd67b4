"""The θ1s an evaluator host holds, on its device while they fit its budget, least recently used out first.

A weight set is its θ1 (and, for a sequential set, the start point its α = 0 is). Forming θα needs them on
the device only for the moment of the lerp, so a host that receives many θ1s (ImageNet is evaluated under
every θ1 of a study) keeps only as many on the device as its budget leaves room for. One that must make
room moves the least recently used one out:

- on CUDA, into pinned host memory while the host tier has room (copied back with one DMA on next use),
  else dropped to its file in the node's cache (read again on next use);
- on the CPU, where host memory is the device, dropped to its file.

A set with no file behind it (handed in as tensors) is never dropped, only moved to the host tier.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models.checkpoints import load_tensors
from .memory import tensor_bytes

Tensors = list[torch.Tensor]


@dataclass
class Held:
    """One weight set: where its tensors are now (device, host or only its files), and its size."""
    names: Sequence[str]
    dtypes: Sequence[torch.dtype]
    device: tuple[Tensors, Tensors | None] | None = None
    host: tuple[Tensors, Tensors | None] | None = None
    files: tuple[Path, Path | None] | None = None
    nbytes: int = 0
    meta: dict = field(default_factory=dict)


class WeightCache:
    """θ1s by (model, key). `room()` says how many bytes weights may take on the device right now (the host's
    budget less its θ0s, live models, heads and resident data); `host_room` caps the pinned host tier."""

    def __init__(self, device: torch.device, room: Callable[[], int], host_room: int = 0):
        self.device, self.room, self.host_room = device, room, host_room
        self.held: OrderedDict[tuple[str, str], Held] = OrderedDict()    # least recently used first
        self.moves = {"to_host": 0, "dropped": 0, "from_host": 0, "from_file": 0}

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self.held

    def keys(self, model: str) -> list[str]:
        return sorted(k for m, k in self.held if m == model)

    def meta(self, model: str, key: str) -> dict:
        return self.held[(model, key)].meta

    def on_device(self, model: str, key: str) -> bool:
        return self.held[(model, key)].device is not None

    def device_bytes(self) -> int:
        return sum(h.nbytes for h in self.held.values() if h.device is not None)

    def host_bytes(self) -> int:
        return sum(h.nbytes for h in self.held.values() if h.host is not None and h.device is None)

    def put(self, model: str, key: str, names: Sequence[str], dtypes: Sequence[torch.dtype],
            theta1: dict[str, torch.Tensor], start: dict[str, torch.Tensor] | None = None,
            files: tuple[Path, Path | None] | None = None, meta: dict | None = None) -> None:
        """Hold a weight set (CPU tensors by name, in `names` order and `dtypes`); `files` are where it can be
        read again. It goes to the device now if it fits, else it waits on the host or in its files."""
        host = (self._ordered(theta1, names, dtypes), None if start is None else self._ordered(start, names, dtypes))
        entry = Held(names, dtypes, files=files, meta=dict(meta or {}),
                     nbytes=tensor_bytes(host[0]) + (tensor_bytes(host[1]) if host[1] is not None else 0))
        self.held.pop((model, key), None)
        self.held[(model, key)] = entry
        if self.device.type == "cpu":
            entry.device = host
            self._make_room(keep=(model, key))
        else:
            entry.host = host
            if files is not None:      # read again from the files when needed; nothing pinned yet
                entry.host = None

    def get(self, model: str, key: str) -> tuple[Tensors, Tensors | None]:
        """The set's (θ1, start) on the device, made room for; now the most recently used."""
        entry = self.held[(model, key)]
        self.held.move_to_end((model, key))
        if entry.device is None:
            if entry.host is not None:
                theta1, start = entry.host
                self.moves["from_host"] += 1
            else:
                theta1 = self._ordered(load_tensors(entry.files[0]), entry.names, entry.dtypes)
                start = None if entry.files[1] is None else \
                    self._ordered(load_tensors(entry.files[1]), entry.names, entry.dtypes)
                self.moves["from_file"] += 1
            entry.device = (_to(theta1, self.device), None if start is None else _to(start, self.device))
            if self.device.type != "cpu":
                entry.host = entry.host if entry.host is not None and entry.files is None else None
            self._make_room(keep=(model, key))
        return entry.device

    def drop(self, model: str, key: str) -> None:
        self.held.pop((model, key), None)

    def _make_room(self, keep: tuple[str, str]) -> None:
        """Evict least recently used sets from the device until the device tier fits `room()`."""
        for k in list(self.held):
            if self.device_bytes() <= self.room():
                return
            entry = self.held[k]
            if k == keep or entry.device is None:
                continue
            if self.device.type == "cuda" and (entry.files is None or self.host_bytes() + entry.nbytes <= self.host_room):
                entry.host = tuple(None if ts is None else [t.to("cpu").pin_memory() for t in ts] for ts in entry.device)
                self.moves["to_host"] += 1
            elif entry.files is None:
                continue                   # nothing to read it back from: it stays where it is
            else:
                self.moves["dropped"] += 1
            entry.device = None

    @staticmethod
    def _ordered(state: dict[str, torch.Tensor], names: Sequence[str], dtypes: Sequence[torch.dtype]) -> Tensors:
        missing = [n for n in names if n not in state]
        if missing:
            raise KeyError(f"weights lack {len(missing)} image-encoder tensors, e.g. {missing[0]}")
        return [state[n].to(dtype=d) for n, d in zip(names, dtypes)]


def _to(tensors: Tensors, device: torch.device) -> Tensors:
    if device.type == "cpu":
        return tensors
    return [t.to(device, non_blocking=t.is_pinned()) for t in tensors]
