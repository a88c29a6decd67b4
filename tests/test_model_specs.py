"""Real open_clip checkpoints through load_model: a local safetensors file, the hub cache offline, and errors."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import open_clip
import pytest
import torch

from paint_ray.errors import PaintRayError
from paint_ray.models.checkpoints import save_tensors
from paint_ray.models.registry import load_model

# open_clip's hub repository for ViT-B-32:laion2b_s34b_b79k, and the file it looks for first.
LAION_REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
HUB_FILE = "open_clip_model.safetensors"


@pytest.fixture(scope="module")
def vit_b32(tmp_path_factory) -> tuple[dict[str, torch.Tensor], Path]:
    """A random-init open_clip ViT-B-32 and its weights saved as a safetensors checkpoint file."""
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path_factory.mktemp("ckpt") / "w.safetensors"
    save_tensors(model.state_dict(), path)
    return model.state_dict(), path


def assert_identical(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def one_line_error(spec: str) -> str:
    with pytest.raises(PaintRayError) as e:
        load_model(spec, progress=False)
    assert str(e.value) and "\n" not in str(e.value)
    return str(e.value)


def test_local_safetensors_checkpoint_loads_bit_identical(vit_b32, offline_hub):
    state, path = vit_b32
    loaded = load_model(f"ViT-B-32:{path}", progress=False)
    assert_identical(loaded.model, state)
    assert loaded.arch == "ViT-B-32" and loaded.pretrained == str(path.resolve())
    assert not loaded.model.training
    assert not any(offline_hub.iterdir())                    # the hub was never touched


def test_pretrained_tag_loads_from_the_hub_cache_offline(vit_b32, offline_hub):
    """ARCH:TAG with the weights in the local hub cache (blob + snapshot link + refs/main), as a download leaves it."""
    state, path = vit_b32
    repo = offline_hub / f"models--{LAION_REPO.replace('/', '--')}"
    commit = hashlib.sha1(b"paint_ray test snapshot").hexdigest()
    blob = repo / "blobs" / hashlib.sha256(b"weights").hexdigest()
    blob.parent.mkdir(parents=True)
    os.link(path, blob)                                       # no second copy of 600 MB
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / HUB_FILE).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    loaded = load_model("ViT-B-32:laion2b_s34b_b79k", progress=False)
    assert_identical(loaded.model, state)
    assert loaded.pretrained == "laion2b_s34b_b79k"


def test_unknown_tag_is_one_line_naming_valid_tags(offline_hub):
    message = one_line_error("ViT-B-32:nosuchtag")
    assert "nosuchtag" in message and "openai" in message


def test_known_tag_without_weights_offline_is_one_line(offline_hub):
    message = one_line_error("ViT-B-32:openai")
    assert "not available offline" in message and "ViT-B-32:/path/to/weights.safetensors" in message


def test_corrupt_and_truncated_checkpoints_are_one_line(vit_b32, tmp_path, offline_hub):
    _, path = vit_b32
    data = path.read_bytes()
    for name, content in [("head.safetensors", data[:4096]), ("half.safetensors", data[:len(data) // 2]),
                          ("garbage.safetensors", b"\x00" * 64), ("garbage.pt", b"not a pickle" * 8)]:
        (tmp_path / name).write_bytes(content)
        message = one_line_error(f"ViT-B-32:{tmp_path / name}")
        assert "corrupt or truncated" in message and name in message
    assert "does not exist" in one_line_error(f"ViT-B-32:{tmp_path / 'absent.safetensors'}")


def test_checkpoint_of_another_architecture_is_one_line(tmp_path, offline_hub):
    save_tensors({"visual.conv1.weight": torch.zeros(3, 3)}, tmp_path / "other.safetensors")
    assert "does not fit ViT-B-32" in one_line_error(f"ViT-B-32:{tmp_path / 'other.safetensors'}")


def test_cli_patch_with_unknown_tag_exits_2_with_one_line(tmp_path, offline_hub, capsys):
    from conftest import one_line_error, run_main

    from paint_ray.cli import main
    code, out, err = run_main(main, ["patch", "--model", "ViT-B-32:nosuchtag", "--out", str(tmp_path / "out")],
                              capsys)
    assert "nosuchtag" in one_line_error(code, err) and out == ""
    assert not (tmp_path / "out" / "results").exists()
