"""Parameter groups, layer-wise decay, the schedule and gradient clipping (training.optim)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from atr_demo.config import ModelConfig
from atr_demo.errors import ConfigError
from atr_demo.losses import InfoNCELoss
from atr_demo.model import create_model, tiny_config

from training.optim import (
    GroupSettings,
    build_param_groups,
    clip_gradients,
    count_layers,
    layer_index,
    lr_at,
    make_optimizer,
    set_learning_rates,
)


def _model():
    cfg = ModelConfig.from_dict({**tiny_config().to_dict(), "head": "mlp", "metric": "mahalanobis"})
    return create_model(cfg, seed=0)


def test_every_trainable_parameter_is_in_exactly_one_group_with_its_settings() -> None:
    model, loss = _model(), InfoNCELoss()
    groups = build_param_groups(model, loss, lr=1e-3, weight_decay=0.1,
                                groups={"audio_backbone": GroupSettings(lr=1e-5, weight_decay=0.01),
                                        "metric": GroupSettings(weight_decay=0.0)})
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad] + [loss.logit_scale]
    assert sorted(ids) == sorted(id(p) for p in trainable) and len(ids) == len(set(ids))
    by_name = {g["name"]: g for g in groups}
    assert by_name["audio_backbone"]["lr"] == 1e-5 and by_name["audio_backbone"]["weight_decay"] == 0.01
    assert by_name["audio_backbone/no_decay"]["weight_decay"] == 0.0  # conv biases
    assert by_name["heads"]["lr"] == 1e-3 and by_name["heads"]["weight_decay"] == 0.1
    assert by_name["heads/no_decay"]["weight_decay"] == 0.0
    assert by_name["metric"]["weight_decay"] == 0.0 and by_name["metric"]["params"] == [model.metric.M]
    assert by_name["loss/no_decay"]["params"] == [loss.logit_scale]
    names = [g["name"].split("/")[0] for g in groups]
    assert names == sorted(names, key=["audio_backbone", "text_backbone", "heads", "metric", "loss"].index)
    # every bias is in a no-decay group
    biases = {id(p) for n, p in model.named_parameters() if n.endswith(".bias")}
    assert biases <= {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    with pytest.raises(ConfigError, match="unknown group"):
        build_param_groups(model, None, 1e-3, 0.0, groups={"backbone": GroupSettings()})


def test_frozen_parameters_are_left_out_and_decay_of_biases_can_be_kept() -> None:
    model = _model()
    model.audio_backbone.requires_grad_(False)
    groups = build_param_groups(model, None, lr=1e-3, weight_decay=0.1, decay_bias_and_norm=True)
    assert all(not g["name"].startswith("audio_backbone") for g in groups)
    assert all(g["weight_decay"] == 0.1 for g in groups)


def test_layer_wise_decay() -> None:
    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embeddings = nn.Embedding(10, 4)
            self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
            self.pooler = nn.Linear(4, 4)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text_backbone = Backbone()
            self.text_head = nn.Linear(4, 2)

    model = Model()
    assert count_layers(n for n, _ in model.text_backbone.named_parameters()) == 3
    assert layer_index("layers.2.weight", 3) == 3 and layer_index("embeddings.weight", 3) == 0
    assert layer_index("pooler.weight", 3) == 4
    groups = build_param_groups(model, None, lr=1.0, weight_decay=0.0, layer_decay=0.5)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["text_backbone/layer0"] == 0.5 ** 4 and lrs["text_backbone/layer3"] == 0.5
    assert lrs["text_backbone/layer4"] == 1.0 and lrs["heads"] == 1.0  # heads are not decayed


def test_schedule_warmup_then_cosine_per_group() -> None:
    assert lr_at(1.0, 0, 100, warmup_steps=10) == pytest.approx(0.1)
    assert lr_at(1.0, 9, 100, warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(1.0, 10, 100, warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(1.0, 55, 100, warmup_steps=10) == pytest.approx(0.5)
    assert lr_at(1.0, 100, 100, warmup_steps=10) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(2.0, 50, 100, schedule="constant") == 2.0
    # the former expression, to the last bit
    assert lr_at(3e-3, 7, 40) == 3e-3 * 0.5 * (1.0 + math.cos(math.pi * (7 / 40)))
    model = _model()
    groups = build_param_groups(model, None, lr=1e-3, weight_decay=0.0, groups={"heads": GroupSettings(lr=1e-2)})
    opt = make_optimizer("adamw", groups)
    lrs = set_learning_rates(opt, 0, 100, warmup_steps=4, schedule="cosine")
    assert lrs["heads"] == pytest.approx(1e-2 / 4) and lrs["metric"] == pytest.approx(1e-3 / 4)


def test_gradient_clipping_returns_the_norm_before_clipping() -> None:
    params = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(4))]
    params[0].grad = torch.tensor([3.0, 0.0, 0.0])
    params[1].grad = torch.tensor([0.0, 4.0, 0.0, 0.0])
    assert clip_gradients(params, 0.0) == pytest.approx(5.0)
    assert clip_gradients(params, 1.0) == pytest.approx(5.0)
    total = torch.linalg.vector_norm(torch.cat([p.grad for p in params]))
    assert float(total) == pytest.approx(1.0, rel=1e-5)


def test_fine_tuning_config_keys() -> None:
    from training.config import TrainConfig, load_train_config

    with pytest.raises(ConfigError, match=r"model\.audio\.trainable is true but use_cached_features is true .* "
                                          r"set use_cached_features: false"):
        load_train_config(None, ["data=x", "model=aisfx-minilm", "model.audio.trainable=true"])
    cfg = load_train_config(None, ["data=x", "model=aisfx-minilm", "model.audio.trainable=true",
                                   "use_cached_features=false", "param_groups.audio_backbone.lr=0.00001",
                                   "layer_decay=0.8", "grad_clip=1.0", "amp=fp16"])
    assert cfg.param_groups["audio_backbone"].lr == 1e-5 and cfg.amp_mode == "fp16" and cfg.grad_clip == 1.0
    assert TrainConfig.from_dict({"data": "x", "amp": True}).amp_mode == "bf16"
    for bad, message in ((["param_groups.backbone.lr=1"], "param_groups"), (["layer_decay=1.5"], "layer_decay"),
                         (["dist_backend=mpi"], "'auto', 'nccl' or 'gloo'"), (["amp=fp8"], "use none, bf16 or fp16")):
        with pytest.raises(ConfigError, match=message):
            load_train_config(None, ["data=x", *bad])
