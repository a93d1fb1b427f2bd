"""The one training-loss registry (atr_demo.losses.TRAINING_LOSSES) and float32 losses under autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from atr_demo.errors import ConfigError
from atr_demo.losses import TRAINING_LOSSES, MLTMLoss, PartialMLTMLoss, build_training_loss
from atr_demo.metric import MahalanobisMetric

from training.config import LOSSES, MULTILINGUAL_LOSSES, TrainConfig

SETTINGS = {"eps": 0.1, "mass": 0.9, "margin": 0.2, "target_temperature": 0.05}


def test_config_choices_and_validation_come_from_the_registry() -> None:
    assert LOSSES == tuple(TRAINING_LOSSES)
    assert MULTILINGUAL_LOSSES == tuple(n for n, s in TRAINING_LOSSES.items() if s.multilingual)
    for name, spec in TRAINING_LOSSES.items():
        loss = build_training_loss(name, SETTINGS)
        assert isinstance(loss, torch.nn.Module)
        assert set(spec.settings) <= set(TrainConfig.model_fields)  # every declared setting is a config key
        if spec.min_languages:
            with pytest.raises(ConfigError, match="multilingual"):
                TrainConfig.from_dict({"data": "x", "loss": name})
    a = F.normalize(torch.randn(6, 16), dim=-1).requires_grad_()
    metric = MahalanobisMetric(16)
    for name, spec in TRAINING_LOSSES.items():  # uses_metric says whether M gets a gradient
        if spec.multilingual:
            continue
        metric.zero_grad(set_to_none=True)
        build_training_loss(name, SETTINGS)(a, torch.roll(a, 1, 0).detach(), metric).backward()
        assert (metric.M.grad is not None) == spec.uses_metric, name
    with pytest.raises(ConfigError, match="needs the setting"):
        build_training_loss("mltm", {})
    with pytest.raises(ConfigError, match="unknown loss 'nope'"):
        build_training_loss("nope", SETTINGS)


@pytest.mark.parametrize("cls", [MLTMLoss, PartialMLTMLoss])
def test_ot_losses_run_in_float32_under_autocast(cls: type) -> None:
    gen = torch.Generator().manual_seed(0)
    audio = F.normalize(torch.randn(8, 16, generator=gen), dim=-1)
    text = F.normalize(audio + 0.3 * torch.randn(8, 16, generator=gen), dim=-1)
    metric = MahalanobisMetric(16)
    loss_fn = cls(eps=0.1)
    a16, t16 = audio.bfloat16().requires_grad_(), text.bfloat16().requires_grad_()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = loss_fn(a16, t16, metric)
    assert loss.dtype == torch.float32
    reference = loss_fn(a16.detach().float(), t16.detach().float(), metric)
    assert torch.equal(loss.detach(), reference.detach())  # no bf16 step inside the loss
    loss.backward()
    assert a16.grad is not None and a16.grad.dtype == torch.bfloat16 and torch.isfinite(a16.grad.float()).all()
