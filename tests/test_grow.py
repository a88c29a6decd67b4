"""Depth growth (toy-l is toy-m grown deeper): the grown model starts as the same function, and learns."""
from __future__ import annotations

import json
import shutil

import open_clip
import pytest
import torch

from paint_ray.errors import PaintRayError
from paint_ray.models import registry
from paint_ray.models.grow import grow_depth
from paint_ray.models.pretrain import PretrainRecipe


def _models(small: str, large: str):
    torch.manual_seed(0)
    return open_clip.create_model(small).eval(), open_clip.create_model(large).eval()


def test_grown_model_computes_the_same_features_and_new_blocks_train():
    small, large = _models("toy-m", "toy-l")
    grow_depth(small, large)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(small.encode_image(x), large.encode_image(x))
    new = large.visual.transformer.resblocks[-1]
    assert new.mlp.c_proj.weight.abs().sum() == 0 and new.attn.out_proj.bias.abs().sum() == 0
    # the zeroed projections get gradients, so the added blocks start learning at once
    large.train()
    large.encode_image(x).pow(2).sum().backward()
    assert new.mlp.c_proj.weight.grad.abs().sum() > 0 and new.attn.out_proj.weight.grad.abs().sum() > 0


def test_grow_refuses_shallower_or_wider_targets():
    small, large = _models("toy-m", "toy-l")
    with pytest.raises(PaintRayError, match="cannot grow 6 image blocks into 4"):
        grow_depth(large, small)
    other = open_clip.create_model("toy-s")
    with pytest.raises(PaintRayError, match="differ beyond image-encoder depth"):
        grow_depth(other, large)


def test_embedded_toy_l_is_keyed_by_the_toy_m_it_grows_from(monkeypatch):
    assert registry.EMBEDDED["toy-l"].grow_from == "toy-m"
    before = registry.embedded_dir("toy-l")
    monkeypatch.setitem(registry.EMBEDDED, "toy-m", PretrainRecipe(steps=7))
    assert registry.embedded_dir("toy-l") != before     # a retrained toy-m means a new toy-l


def test_grown_embedded_model_starts_from_its_cached_parent(tiny, tmp_path, monkeypatch):
    """A toy-xs grown one block deeper through the registry; lr 0 keeps it equal to toy-xs."""
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(registry.CONFIG_DIR / "toy-xs.json", configs / "toy-xs.json")
    cfg = json.loads((configs / "toy-xs.json").read_text())
    cfg["vision_cfg"]["layers"] += 1
    (configs / "toy-xs-deep.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(configs)
    monkeypatch.setattr(registry, "CONFIG_DIR", configs)
    monkeypatch.setitem(registry.EMBEDDED, "toy-xs-deep",
                        PretrainRecipe(steps=2, batch_size=8, lr=0.0, corpus_size=64, grow_from="toy-xs"))
    deep = registry.load_model("toy-xs-deep", progress=False).model.eval()
    assert len(deep.visual.transformer.resblocks) == len(tiny.model.visual.transformer.resblocks) + 1
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(deep.encode_image(x), tiny.model.encode_image(x), atol=1e-6)
