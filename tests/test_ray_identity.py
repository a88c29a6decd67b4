"""Models as loaded and studies by name, on a real local Ray: an hf-hub model in a Ray study end to end,
an OpenAI-tag tower rebuilt on an evaluator actor with QuickGELU, and two studies on one cluster that keep
their own evaluators."""
from __future__ import annotations

import json
import os
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from conftest import TINY, hub_snapshot, make_study_config

pytestmark = pytest.mark.slow


def _config(out, **kw):
    return make_study_config(out, **{"name": "ident", **kw})


def test_hf_hub_model_runs_a_ray_study_end_to_end_and_its_patched_model_loads(ray_local, tiny, tmp_path):
    from paint_ray import load_patched
    from paint_ray.models.checkpoints import CONFIG_NAME
    from paint_ray.models.registry import CONFIG_DIR
    from paint_ray.pipeline import run_study
    # the session's own HF cache (conftest): Tune trials in other processes read the same entry
    repo = "paint-ray-test/tiny-ray"
    hub = Path(os.environ["HF_HOME"]) / "hub"
    snapshot = hub_snapshot(hub, repo)
    model_cfg = json.loads((CONFIG_DIR / "toy-xs.json").read_text())
    model_cfg["quick_gelu"] = True
    (snapshot / CONFIG_NAME).write_text(json.dumps({"model_cfg": model_cfg}))
    save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()},
              str(snapshot / "open_clip_model.safetensors"))

    spec = f"hf-hub:{repo}"
    result = run_study(_config(tmp_path, models=[spec], mlflow=True))
    table = result.table()
    assert list(table.model) == [spec] and table[["patch_patched", "supported_patched"]].notna().all().all()
    pm = result.patched[0]
    bundle = load_patched(result.run_ids[f"{spec}/colors"], f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert bundle.alpha == pm.selection.alpha
    assert sum(isinstance(m, open_clip.transformer.QuickGELU) for m in bundle.model.visual.modules()) == 2
    from paint_ray.caches.eval import prepare_task
    from paint_ray.tasks import get_task
    data = prepare_task(get_task("colors"), "test", 32)
    acc = float((bundle.predict("colors", data.images) == data.labels).float().mean())
    assert acc == pytest.approx(pm.frontier.set_index("alpha").loc[pm.selection.alpha, "colors_test"])


def test_openai_tag_tower_rebuilt_on_an_actor_is_quickgelu(ray_local, offline_hub, tmp_path):
    """The actor loads ViT-B-32:openai by its spec from its node's hub cache (this test's offline one, given
    to the actor's process), checked against the driver's digest: its tower is the driver's, QuickGELU
    (test_model_identity shows that tower is open_clip's ViT-B-32-quickgelu and differs from plain GELU's)."""
    import ray

    from paint_ray.distributed.cluster import NAMESPACE
    from paint_ray.distributed.evaluators import EvaluatorActor
    from paint_ray.models.registry import load_model
    cfg = open_clip.get_pretrained_cfg("ViT-B-32", "openai")
    torch.manual_seed(0)
    state = {k: v.half() for k, v in open_clip.create_model("ViT-B-32").state_dict().items()}
    save_file(state, str(hub_snapshot(offline_hub, cfg["hf_hub"].rstrip("/")) / "open_clip_model.safetensors"))
    loaded = load_model("ViT-B-32:openai", progress=False)
    assert sum(isinstance(m, open_clip.transformer.QuickGELU) for m in loaded.model.visual.modules()) == 12
    hub_env = {k: os.environ[k] for k in ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    actor = EvaluatorActor.options(namespace=NAMESPACE, num_cpus=0,
                                   runtime_env={"env_vars": hub_env}).remote(threads=1)
    try:
        ray.get(actor.load_model.remote(loaded.digest, "ViT-B-32:openai"))   # verified by digest on the actor
        torch.manual_seed(1)
        x = torch.randn(2, 3, 224, 224)
        on_actor = torch.from_numpy(ray.get(actor.features.remote(loaded.digest, x.numpy())))
    finally:
        ray.kill(actor)                               # the one actor this test started, by its handle
    with torch.no_grad():
        assert torch.allclose(on_actor, loaded.model.encode_image(x), atol=1e-5)


def test_two_studies_keep_their_own_evaluators_and_live_reaches_each(ray_local, tiny, tmp_path):
    from paint_ray import live
    from paint_ray.distributed.evaluators import evaluator_names
    from paint_ray.errors import PaintRayError
    from paint_ray.pipeline import run_study, study_id
    a, b = _config(tmp_path / "a", evaluators=1), _config(tmp_path / "b", evaluators=1)
    assert study_id(a) != study_id(b)
    ra = run_study(a)
    names_a = evaluator_names(study_id(a))
    rb = run_study(b)
    assert evaluator_names(study_id(a)) == names_a            # b neither reused nor killed a's evaluators
    assert set(evaluator_names(study_id(b))).isdisjoint(names_a)
    listed = live.studies()                                   # one row per live evaluator, with its study
    assert {study_id(a), study_id(b)} <= set(listed["study"])
    assert set(listed.loc[listed["study"] == study_id(a), "evaluator"]) == set(names_a)
    for cfg, result in ((a, ra), (b, rb)):
        assert live.connect(study_id(cfg)) == study_id(cfg)
        inventories = live.evaluators()
        assert set(inventories) == set(evaluator_names(study_id(cfg)))
        rows = live.sweep(TINY, alphas=[0.25], tasks=["colors"], progress=False)
        assert set(rows.weights) == {result.patched[0].weights.key}
    with pytest.raises(PaintRayError) as e:
        live.connect("no-such-study")
    message = str(e.value)
    assert "\n" not in message and "'no-such-study'" in message and study_id(a) in message and study_id(b) in message
