"""Depth growth: a deeper image tower that starts as exactly the function of a trained shallower one.

The embedded toy-l is toy-m grown from 4 to 6 image-encoder blocks and then pretrained further on fresh
captions, so it costs toy-m plus a few minutes instead of a from-scratch run that would not fit the
first-run budget on 2 cores.
Each new block is a copy of the last trained block whose two residual output projections (attention
out_proj, MLP c_proj) are zeroed: the block adds nothing until training moves them (progressive stacking).
"""
from __future__ import annotations

import open_clip
import torch

from ..errors import PaintRayError


def grow_depth(small: open_clip.CLIP, large: open_clip.CLIP) -> open_clip.CLIP:
    """Copy `small` into `large` (same widths, more image blocks); returns `large`, now equal to `small`."""
    src, dst = small.visual.transformer.resblocks, large.visual.transformer.resblocks
    if len(dst) < len(src):
        raise PaintRayError(f"cannot grow {len(src)} image blocks into {len(dst)}")
    state, target = small.state_dict(), large.state_dict()
    added = set(target) - set(state)
    differ = sorted(k for k in state if k not in target or state[k].shape != target[k].shape)
    differ += sorted(k for k in added if not k.startswith("visual.transformer.resblocks."))
    if differ:
        raise PaintRayError(f"models differ beyond image-encoder depth, e.g. {differ[0]}; "
                            f"only the number of image blocks may grow")
    large.load_state_dict(state, strict=False)
    with torch.no_grad():
        for block in list(dst)[len(src):]:
            block.load_state_dict(src[-1].state_dict())
            for proj in (block.attn.out_proj, block.mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
    return large
