"""Eval batches from wherever a split lives: resident on the device, or streamed from host memory.

Where the data is, is asked of the tensor, never by comparing device objects (`cuda` is not `cuda:0`):

- already on the target device's kind of memory (`on_device`): sliced in place, nothing copied;
- on the host, target a GPU: each batch is copied into pinned memory and sent on a side stream while the
  previous batch computes (one batch ahead);
- on the host, target the CPU: a batch is a view of the memory map, read as it is normalised;
- any other target (the meta device placement tests use): copied batch by batch.

Every batch holds the same rows whatever the branch, so results do not depend on residency.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch


def on_device(images: torch.Tensor, device: torch.device) -> bool:
    """Whether `images` already live in the memory `device` computes from (host memory for the CPU)."""
    return images.device.type == device.type


def branch(images: torch.Tensor, device: torch.device) -> str:
    """'resident', 'stream' (host to GPU, pinned, one batch ahead), 'host' (CPU views) or 'copy'."""
    if on_device(images, device):
        return "resident" if device.type != "cpu" else "host"
    return "stream" if device.type == "cuda" and images.device.type == "cpu" else "copy"


def batches(images: torch.Tensor, labels: torch.Tensor, device: torch.device,
            batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images, labels) on `device`, `batch_size` rows at a time, in order."""
    n = len(labels)
    how = branch(images, device)
    if how == "stream":
        yield from _cuda_stream(images, labels, device, batch_size)
        return
    for a in range(0, n, batch_size):
        x = images[a:a + batch_size]
        yield (x if how in ("resident", "host") else x.to(device)), labels[a:a + batch_size].to(device)


def _cuda_stream(images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                 batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    side = torch.cuda.Stream(device)

    def issue(a: int) -> tuple[torch.Tensor, torch.Tensor, torch.cuda.Event]:
        host = images[a:a + batch_size].pin_memory()          # the host read happens here, off the GPU's path
        with torch.cuda.stream(side):
            x = host.to(device, non_blocking=True)            # the caching host allocator keeps `host` alive
            y = labels[a:a + batch_size].to(device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(side)
        return x, y, done

    n = len(labels)
    ahead = issue(0) if n else None
    for a in range(0, n, batch_size):
        x, y, done = ahead
        current = torch.cuda.current_stream(device)
        current.wait_event(done)
        x.record_stream(current)
        y.record_stream(current)
        yield x, y
        if a + batch_size < n:          # issued after the consumer queued this batch's compute: they overlap
            ahead = issue(a + batch_size)
