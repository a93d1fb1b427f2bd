"""Gradient cache: the chunked gradient equals the full-batch gradient (tiny model, m-LTM)."""

from __future__ import annotations

import pytest
import torch

from atr_demo.config import ModelConfig
from atr_demo.losses import MLTMLoss, SoftLabelContrastiveLoss
from atr_demo.model import create_model, tiny_config

from training.gradcache import cached_backward, chunk_bounds


def _setup(dropout: float = 0.1):
    cfg = ModelConfig.from_dict({**tiny_config().to_dict(), "head": "mlp", "head_dropout": dropout,
                                 "metric": "mahalanobis"})
    model = create_model(cfg, seed=3).train()
    gen = torch.Generator().manual_seed(0)
    waves = [torch.randn(4000 + 300 * i, generator=gen) * 0.1 for i in range(10)]
    texts = [f"caption number {i} of a sound" for i in range(10)]
    return model, waves, texts


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_chunk_bounds() -> None:
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_bounds(3, 8) == [(0, 3)]
    with pytest.raises(ValueError):
        chunk_bounds(3, 0)


@pytest.mark.parametrize("chunk", [1, 3, 4, 10])
def test_chunked_gradient_equals_full_batch_gradient(chunk: int) -> None:
    model, waves, texts = _setup(dropout=0.0)
    loss_fn = MLTMLoss(eps=0.1)

    def embed(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        return model.encode_audio(waves[start:stop]), model.encode_text(texts[start:stop])

    def loss_of(parts):
        return loss_fn(parts[0], parts[1], model.metric)

    full = loss_of(embed(0, len(texts)))
    full.backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)

    loss = cached_backward(embed, len(texts), chunk, loss_of)
    got = _grads(model)
    assert not loss.requires_grad and torch.allclose(loss, full.detach(), atol=1e-6)
    assert set(got) == set(expected) and {"metric.M", "audio_backbone.net.0.weight", "audio_head.0.weight"} <= set(got)
    for name in expected:
        assert expected[name].abs().max() > 0 or name.startswith("text_backbone")
        assert torch.allclose(got[name], expected[name], atol=1e-6, rtol=1e-4), name


def test_dropout_masks_are_replayed() -> None:
    """With dropout, each chunk's second pass sees the masks of its first pass: the gradient equals
    that of the same chunk-wise forward kept with its graph (the memory-hungry equivalent)."""
    model, waves, texts = _setup(dropout=0.3)
    loss_fn = MLTMLoss(eps=0.1)

    def embed(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        return model.encode_audio(waves[start:stop]), model.encode_text(texts[start:stop])

    def loss_of(parts):
        return loss_fn(parts[0], parts[1], model.metric)

    torch.manual_seed(5)
    parts = [embed(s, e) for s, e in chunk_bounds(10, 4)]
    reference = loss_of([torch.cat([p[k] for p in parts]) for k in range(2)])
    reference.backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    loss = cached_backward(embed, 10, 4, loss_of)
    after = torch.rand(1)
    torch.manual_seed(5)
    [embed(s, e) for s, e in chunk_bounds(10, 4)]
    assert torch.equal(after, torch.rand(1))  # the random stream continues as after one forward
    assert torch.allclose(loss, reference.detach(), atol=1e-6)
    for name, grad in _grads(model).items():
        assert torch.allclose(grad, expected[name], atol=1e-6, rtol=1e-4), name


def test_chunked_gradient_without_dropout_and_soft_labels() -> None:
    """Without dropout the loss values agree for any chunking, and extra loss inputs work."""
    model, waves, texts = _setup(dropout=0.0)
    loss_fn = SoftLabelContrastiveLoss()

    def embed(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        return model.encode_audio(waves[start:stop]), model.encode_text(texts[start:stop])

    def loss_of(parts):
        return loss_fn(parts[0], parts[1], model.metric)

    full = loss_of(embed(0, 10))
    full.backward()
    expected = {**_grads(model), "logit_scale": loss_fn.logit_scale.grad.clone()}
    model.zero_grad(set_to_none=True)
    loss_fn.zero_grad(set_to_none=True)
    loss = cached_backward(embed, 10, 4, loss_of)
    got = {**_grads(model), "logit_scale": loss_fn.logit_scale.grad.clone()}
    assert torch.allclose(loss, full.detach(), atol=1e-6)
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-5, rtol=1e-4), name
