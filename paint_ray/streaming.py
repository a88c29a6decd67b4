"""Eval batches from wherever a split lives: resident on the device, or streamed from host memory.

A resident split is sliced in place. A split kept on the host (a memory-mapped eval-cache entry) streams:
on CUDA each batch is copied into pinned memory and sent on a side stream while the previous batch
computes (one batch ahead); on the CPU a batch is a view of the memory map, read as it is normalised.
Either way every batch holds the same rows, so results do not depend on residency.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch


def batches(images: torch.Tensor, labels: torch.Tensor, device: torch.device,
            batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images, labels) on `device`, `batch_size` rows at a time, in order."""
    n = len(labels)
    if images.device == device or device.type != "cuda":
        for a in range(0, n, batch_size):
            yield images[a:a + batch_size], labels[a:a + batch_size].to(device)
        return
    yield from _cuda_stream(images, labels, device, batch_size)


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
