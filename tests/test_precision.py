"""Evaluation precision: bf16 where the device has it natively, fp32 otherwise, and the override."""
from __future__ import annotations

import pytest
import torch

from paint_ray.errors import PaintRayError
from paint_ray.devices import cpu_has_native_bf16, eval_precision, inference_autocast


def test_cpu_precision_follows_the_cpu(monkeypatch):
    monkeypatch.delenv("PAINT_RAY_EVAL_PRECISION", raising=False)
    assert eval_precision("cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert eval_precision("cuda") == "bf16"


@pytest.mark.parametrize("chosen", ["fp32", "bf16"])
def test_override_sets_the_dtype_of_the_forward(monkeypatch, chosen):
    monkeypatch.setenv("PAINT_RAY_EVAL_PRECISION", chosen)
    layer = torch.nn.Linear(8, 8)
    with torch.inference_mode(), inference_autocast("cpu"):
        out = layer(torch.randn(2, 8))
    assert out.dtype == (torch.bfloat16 if chosen == "bf16" else torch.float32)


def test_bad_override_is_one_line_naming_the_value(monkeypatch):
    monkeypatch.setenv("PAINT_RAY_EVAL_PRECISION", "fp8")
    with pytest.raises(PaintRayError) as e:
        eval_precision("cpu")
    assert "'fp8'" in str(e.value) and "bf16, fp32" in str(e.value) and "\n" not in str(e.value)
