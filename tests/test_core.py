"""Heads, interpolation, fine-tuning and checkpoints on a real (tiny, self-pretrained) open_clip model."""
import copy

import open_clip
import pytest
import torch

from paint_ray.caches.eval import prepare_task
from paint_ray.errors import PaintRayError
from paint_ray.evaluation.evaluator import ZERO_SHOT, Cell, Evaluator
from paint_ray.training.finetune import Finetuner, FinetuneConfig, visual_state
from paint_ray.models.heads import zero_shot_head
from paint_ray.weights.interpolate import interpolate_
from paint_ray.models.checkpoints import WEIGHTS_NAME, load_tensors, save_model_dir
from paint_ray.models.registry import load_model
from paint_ray.tasks import get_task


def test_head_is_scaled_mean_of_normalised_prompt_embeddings(tiny):
    task = get_task("colors")
    head = zero_shot_head(tiny.model, tiny.tokenizer, task)
    assert head.shape == (len(task.classnames), tiny.model.text_projection.shape[1])
    scale = tiny.model.logit_scale.exp().item()
    with torch.no_grad():
        emb = tiny.model.encode_text(tiny.tokenizer(task.prompts(task.classnames[2]))).float()
    emb = emb / emb.norm(dim=-1, keepdim=True)
    expected = emb.mean(0) / emb.mean(0).norm() * scale
    assert torch.allclose(head[2], expected, atol=1e-5)
    assert torch.allclose(head.norm(dim=-1), torch.full((len(task.classnames),), scale), rtol=1e-5)


def test_interpolation_exact_at_ends_and_linear_between():
    torch.manual_seed(0)
    theta0 = [torch.randn(5, 3), torch.randn(7)]
    theta1 = [torch.randn(5, 3), torch.randn(7)]
    live = [torch.empty(5, 3), torch.empty(7)]
    interpolate_(live, theta0, theta1, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(live, theta0))
    interpolate_(live, theta0, theta1, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(live, theta1))
    for alpha in (0.1, 0.5, 0.73):
        interpolate_(live, theta0, theta1, alpha)
        assert all(torch.allclose(a, (1 - alpha) * t0 + alpha * t1, atol=1e-6)
                   for a, t0, t1 in zip(live, theta0, theta1))


def _finetune(tiny, steps=30, task="colors"):
    t = get_task(task)
    head = zero_shot_head(tiny.model, tiny.tokenizer, t)
    visual = copy.deepcopy(tiny.model.visual)
    cfg = FinetuneConfig(lr=3e-3, steps=steps, batch_size=64, warmup_steps=3)
    train = prepare_task(t, "train", 32)
    return Finetuner(visual, head, train, cfg), head, train


@pytest.mark.slow
def test_finetuning_lowers_patch_loss_and_keeps_head_frozen(tiny):
    tuner, head, train = _finetune(tiny)
    head_before = head.clone()
    gen = torch.Generator().manual_seed(123)
    idx = torch.randint(len(train), (256,), generator=gen)
    from paint_ray.models.normalize import to_model_input

    def loss():
        tuner.visual.eval()
        with torch.no_grad():
            x = to_model_input(train.images[idx], tuner.visual)
            return float(tuner.loss(x, [("", slice(0, 256))], train.labels[idx]))
    before = loss()
    tuner.run()
    assert tuner.step == 30
    assert loss() < before - 0.05
    assert torch.equal(head, head_before)
    # only the image encoder is optimised: the text tower is not even in the optimizer
    optimised = {id(p) for g in tuner.opt.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in tuner.visual.parameters()}


def test_finetuner_resumes_from_state_identically(tiny):
    a, _, _ = _finetune(tiny, steps=12)
    a.run()
    b, _, _ = _finetune(tiny, steps=12)
    b.run(until=5)
    state = copy.deepcopy(b.state_dict())
    c, _, _ = _finetune(tiny, steps=12)
    c.load_state_dict(state)
    c.run()
    for (k, va), vc in zip(a.visual.state_dict().items(), c.visual.state_dict().values()):
        assert torch.allclose(va, vc, atol=1e-6), k


def test_evaluator_reuses_alpha0_and_matches_direct_model(tiny):
    tuner, head, _ = _finetune(tiny, steps=10)
    tuner.run()
    theta1 = visual_state(tuner.visual)
    ev = Evaluator(tiny.model.visual)
    ev.add_weights("a", theta1)
    ev.add_weights("b", theta1)
    ev.add_head("colors", head)
    ev.add_split("colors", "val", prepare_task(get_task("colors"), "val", 32))
    rows = ev.evaluate([Cell(w, al, "colors", "val") for w in ("a", "b") for al in (0.0, 0.5, 1.0)])
    by = {(r["weights"], r["alpha"]): r["accuracy"] for r in rows}
    assert by[("a", 0.0)] == by[("b", 0.0)] and by[("a", 1.0)] == by[("b", 1.0)]
    # α=0 evaluated once for both θ1s: memo holds one zero-shot cell, and a, b at 0.5 and 1.0
    assert sum(1 for c in ev.memo if c.alpha == 0.0) == 1 and Cell(ZERO_SHOT, 0.0, "colors", "val") in ev.memo
    from paint_ray.training.finetune import accuracy
    data = prepare_task(get_task("colors"), "val", 32)
    assert by[("a", 1.0)] == pytest.approx(accuracy(tuner.visual, head, data))
    assert by[("a", 0.0)] == pytest.approx(accuracy(tiny.model.visual, head, data))
    # the live model is θ0 again after α=0, bit for bit
    ev.set_model("a", 0.7)
    ev.set_model(ZERO_SHOT, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(ev.live, ev.theta0))


def test_model_folder_round_trip_loads_in_plain_open_clip(tiny, tmp_path):
    path = save_model_dir(tiny.model, tiny.model_cfg, tmp_path / "m")
    plain = open_clip.create_model(f"local-dir:{path}")
    for (k, a), b in zip(tiny.model.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), k
    again = load_model(f"local-dir:{path}")
    assert torch.equal(again.model.visual.conv1.weight, tiny.model.visual.conv1.weight)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint_is_one_line_error(tiny, tmp_path, damage):
    path = save_model_dir(tiny.model, tiny.model_cfg, tmp_path / "m")
    weights = path / WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 10)
    with pytest.raises(PaintRayError) as e:
        load_tensors(weights)
    assert "corrupt or truncated" in str(e.value) and str(weights) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(PaintRayError):
        load_model(f"local-dir:{path}")


def test_embedded_model_is_cached_not_retrained(tiny, home):
    from paint_ray.models.registry import embedded_dir
    folder = embedded_dir("toy-xs")
    mtime = (folder / WEIGHTS_NAME).stat().st_mtime_ns
    again = load_model("toy-xs", progress=False)
    assert (folder / WEIGHTS_NAME).stat().st_mtime_ns == mtime
    assert str(folder).startswith(str(home))
    assert torch.equal(again.model.visual.conv1.weight, tiny.model.visual.conv1.weight)
