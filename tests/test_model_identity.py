"""Models built once, as loaded, and identified by content.

Real open_clip and real files throughout: hub models come from a Hugging Face cache the tests write and
read offline, exactly where open_clip's own download would have put them.
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file

from conftest import hub_snapshot
from paint_ray.errors import PaintRayError
from paint_ray.models.build import build_clip, build_visual
from paint_ray.models.checkpoints import CONFIG_NAME, save_tensors
from paint_ray.models.registry import CONFIG_DIR, embedded_dir, load_model


def visual_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.visual.state_dict().items() if v.is_floating_point()}


def activations(module: torch.nn.Module) -> tuple[int, int]:
    mods = list(module.modules())
    return sum(isinstance(m, QuickGELU) for m in mods), sum(isinstance(m, torch.nn.GELU) for m in mods)


def one_line_error(spec: str) -> str:
    with pytest.raises(PaintRayError) as e:
        load_model(spec, progress=False)
    message = str(e.value)
    assert message and "\n" not in message
    return message


# ---- hf-hub: the hub's own config, end to end -------------------------------------------------------------

def test_hf_hub_model_is_built_from_the_hub_config_and_rebuilds_identically(tiny, offline_hub):
    repo = "paint-ray-test/toy-xs-quickgelu"
    model_cfg = json.loads((CONFIG_DIR / "toy-xs.json").read_text())
    model_cfg["quick_gelu"] = True                      # the hub config, not the toy-xs default, decides this
    preprocess_cfg = {"mean": [0.5, 0.25, 0.125], "std": [0.2, 0.3, 0.4], "interpolation": "bilinear"}
    snapshot = hub_snapshot(offline_hub, repo)
    (snapshot / CONFIG_NAME).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}))
    state = tiny.model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "open_clip_model.safetensors"))

    loaded = load_model(f"hf-hub:{repo}", progress=False)
    assert loaded.model_cfg == model_cfg
    assert loaded.preprocess_cfg["mean"] == preprocess_cfg["mean"]
    assert loaded.preprocess_cfg["interpolation"] == "bilinear"
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())
    assert activations(loaded.model) == (3, 0)          # 2 image blocks + 1 text block, all QuickGELU
    assert activations(tiny.model) == (0, 3)
    assert loaded.digest != tiny.digest                 # same bytes, other function: other identity

    visual = build_visual(loaded.model_cfg, loaded.preprocess_cfg, visual_state(loaded.model))
    assert activations(visual) == (2, 0)
    assert visual.preprocess_cfg["mean"] == preprocess_cfg["mean"]
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ours, rebuilt, gelu = loaded.model.encode_image(x), visual(x), tiny.model.encode_image(x)
        reference = open_clip.create_model(f"hf-hub:{repo}").eval().encode_image(x)
    assert torch.equal(ours, rebuilt)
    assert torch.equal(ours, reference)                 # what open_clip itself builds from that hub entry
    assert not torch.allclose(ours, gelu)               # the activation is really different


def test_hf_hub_entry_without_weights_is_one_line(offline_hub):
    repo = "paint-ray-test/config-only"
    snapshot = hub_snapshot(offline_hub, repo)
    (snapshot / CONFIG_NAME).write_text(json.dumps({"model_cfg": json.loads((CONFIG_DIR / "toy-xs.json").read_text())}))
    assert "not available offline" in one_line_error(f"hf-hub:{repo}")
    assert "not available offline" in one_line_error("hf-hub:paint-ray-test/absent")


# ---- ARCH:TAG whose pretrained config says quick_gelu --------------------------------------------------------

@pytest.mark.slow
def test_openai_tag_runs_quickgelu_in_the_loaded_model_and_the_rebuilt_tower(offline_hub):
    pretrained_cfg = open_clip.get_pretrained_cfg("ViT-B-32", "openai")
    assert pretrained_cfg["quick_gelu"] and not open_clip.get_model_config("ViT-B-32").get("quick_gelu")
    repo, filename = pretrained_cfg["hf_hub"].rstrip("/"), "open_clip_model.safetensors"
    torch.manual_seed(0)
    state = {k: v.half() for k, v in open_clip.create_model("ViT-B-32").state_dict().items()}   # as released
    save_file(state, str(hub_snapshot(offline_hub, repo) / filename))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model("ViT-B-32:openai", progress=False)
    assert not [w for w in caught if "QuickGELU mismatch" in str(w.message)]
    assert loaded.model_cfg["quick_gelu"] is True and loaded.pretrained == "openai"
    assert activations(loaded.model) == (24, 0)         # 12 image + 12 text blocks
    visual = build_visual(loaded.model_cfg, loaded.preprocess_cfg, visual_state(loaded.model))
    assert activations(visual) == (12, 0)

    reference = open_clip.create_model("ViT-B-32-quickgelu").eval()
    reference.load_state_dict(state)
    gelu = open_clip.create_model("ViT-B-32").eval()
    gelu.load_state_dict(state)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = reference.encode_image(x)
        assert torch.equal(loaded.model.encode_image(x), expected)
        assert torch.equal(visual(x), expected)
        assert not torch.allclose(gelu.encode_image(x), expected, atol=1e-4)


# ---- identity is content -------------------------------------------------------------------------------------

def test_digest_is_of_the_weights_not_of_the_path(tiny, tmp_path):
    first = tmp_path / "a" / "weights.safetensors"
    save_tensors(tiny.model.state_dict(), first)
    second = tmp_path / "b" / "copy.safetensors"
    second.parent.mkdir()
    shutil.copyfile(first, second)
    a, b = load_model(f"toy-xs:{first}", progress=False), load_model(f"toy-xs:{second}", progress=False)
    assert a.pretrained != b.pretrained
    assert a.digest == b.digest == tiny.digest and len(a.digest) == 16
    assert a.key == b.key == tiny.key == f"toy-xs-{tiny.digest[:10]}"
    assert a.visual_digest == tiny.visual_digest

    folder = tmp_path / "elsewhere"
    shutil.copytree(embedded_dir("toy-xs"), folder)      # the embedded model's own folder, moved
    assert load_model(f"local-dir:{folder}", progress=False).digest == tiny.digest


def test_checkpoint_overwritten_in_place_gets_a_new_digest_and_its_new_weights(tiny, tmp_path):
    path = tmp_path / "weights.safetensors"
    save_tensors(tiny.model.state_dict(), path)
    before = load_model(f"toy-xs:{path}", progress=False)
    other = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    other["visual.proj"][0, 0] += 1.0                   # one number of 100k
    staging = tmp_path / "staging.safetensors"
    save_tensors(other, staging)
    inode = path.stat().st_ino
    path.write_bytes(staging.read_bytes())              # same file, same path, same size
    assert path.stat().st_ino == inode and path.stat().st_size == staging.stat().st_size
    after = load_model(f"toy-xs:{path}", progress=False)
    assert after.digest != before.digest and after.key != before.key
    assert after.visual_digest != before.visual_digest
    assert torch.equal(after.model.visual.proj, other["visual.proj"])
    assert not torch.equal(after.model.visual.proj, before.model.visual.proj)


# ---- build_visual loads strictly --------------------------------------------------------------------------------

def test_build_visual_names_a_missing_or_unexpected_tensor(tiny):
    state = {k: v.numpy() for k, v in visual_state(tiny.model).items()}      # as the object store holds it
    visual = build_visual(tiny.model_cfg, tiny.preprocess_cfg, state)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(visual(x), tiny.model.visual(x))
    missing = {k: v for k, v in state.items() if k != "proj"}
    with pytest.raises(PaintRayError, match="missing tensor 'proj'"):
        build_visual(tiny.model_cfg, tiny.preprocess_cfg, missing)
    with pytest.raises(PaintRayError, match="unexpected tensor 'bogus.weight'"):
        build_visual(tiny.model_cfg, tiny.preprocess_cfg, {**state, "bogus.weight": torch.zeros(1)})
    with pytest.raises(PaintRayError, match="'proj' has shape"):
        build_visual(tiny.model_cfg, tiny.preprocess_cfg, {**state, "proj": torch.zeros(3, 3)})


def test_build_clip_rebuilds_the_architecture_of_the_loaded_model(tiny):
    rebuilt = build_clip(tiny.model_cfg)
    assert type(rebuilt) is type(tiny.model)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
           {k: v.shape for k, v in tiny.model.state_dict().items()}


# ---- one-line errors ------------------------------------------------------------------------------------------

def _model_dir(tiny, path: Path, config) -> Path:
    shutil.copytree(embedded_dir("toy-xs"), path)
    target = path / CONFIG_NAME
    target.unlink()
    if config is None:
        target.mkdir()
    else:
        target.write_text(json.dumps(config))
    return path


def test_bad_local_dir_configs_are_one_line_naming_the_folder(tiny, tmp_path):
    good = json.loads((embedded_dir("toy-xs") / CONFIG_NAME).read_text())
    unbuildable = {**good, "model_cfg": {**good["model_cfg"],
                                         "vision_cfg": {**good["model_cfg"]["vision_cfg"], "widht": 3}}}
    cases = {
        "config-is-a-dir": (None, "is a directory"),
        "no-model-cfg": ({"preprocess_cfg": good["preprocess_cfg"]}, "has no 'model_cfg'"),
        "unbuildable": (unbuildable, "open_clip cannot build"),
        "not-a-config": ({"model_cfg": [1, 2, 3]}, "not an open_clip model config"),
        "no-vision": ({"model_cfg": {"embed_dim": 32, "text_cfg": {}}}, "has no 'vision_cfg'"),
    }
    for name, (config, expected) in cases.items():
        folder = _model_dir(tiny, tmp_path / name, config)
        message = one_line_error(f"local-dir:{folder}")
        assert expected in message and name in message, message
    assert "widht" in one_line_error(f"local-dir:{tmp_path / 'unbuildable'}")


def test_checkpoint_spec_naming_a_directory_is_one_line(tmp_path):
    folder = tmp_path / "ckpt-dir"
    folder.mkdir()
    message = one_line_error(f"ViT-B-32:{folder}")
    assert "ckpt-dir" in message and "is a directory" in message and "must be a file" in message
    assert "does not exist" not in message


def test_long_bad_values_are_echoed_shortened(tmp_path):
    folder = tmp_path / ("x" * 200) / "checkpoints"
    folder.mkdir(parents=True)
    message = one_line_error(f"ViT-B-32:{folder}")
    assert "is a directory" in message and "checkpoints" in message
    assert "x" * 81 not in message and len(message) < 400
    message = one_line_error(f"local-dir:{tmp_path / ('y' * 200)}")
    assert "does not exist" in message and "y" * 81 not in message


def test_a_model_loaded_by_spec_elsewhere_is_checked_against_the_studys_digest(tiny):
    """What an evaluator or a trial does with a spec from the driver: the same weights load, other weights
    under the same spec are one line naming both digests and where."""
    from paint_ray.errors import PaintRayError
    from paint_ray.models.registry import load_verified
    assert load_verified(tiny.spec, tiny.digest).digest == tiny.digest
    with pytest.raises(PaintRayError) as e:
        load_verified(tiny.spec, "0" * 16, "node abc")
    message = str(e.value)
    assert "\n" not in message and tiny.digest in message and "0" * 16 in message and "node abc" in message
