"""Backbone registry: builds an encoder tower from its :class:`~atr_demo.config.BackboneConfig`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from atr_demo.config import BackboneConfig
from atr_demo.errors import CheckpointError, ConfigError


def _aisfx(cfg: BackboneConfig, pretrained: bool) -> nn.Module:
    from atr_demo.backbones.aisfx import AisfxAudioBackbone, load_pretrained_weights

    module = AisfxAudioBackbone(pooling=cfg.pooling)
    if pretrained:
        load_pretrained_weights(module.cnn)
    return module


def _hf_audio(cfg: BackboneConfig, pretrained: bool) -> nn.Module:
    from atr_demo.backbones.hf_audio import HFAudioBackbone

    return HFAudioBackbone(str(cfg.name), revision=cfg.revision, pretrained=pretrained)


def _tiny_audio(cfg: BackboneConfig, pretrained: bool) -> nn.Module:
    from atr_demo.backbones.hf_audio import TinyAudioBackbone

    return TinyAudioBackbone(dim=cfg.dim)


def _hf_text(cfg: BackboneConfig, pretrained: bool) -> nn.Module:
    from atr_demo.backbones.text import HFTextBackbone

    return HFTextBackbone(str(cfg.name), revision=cfg.revision, max_length=cfg.max_length, pretrained=pretrained)


def _tiny_text(cfg: BackboneConfig, pretrained: bool) -> nn.Module:
    from atr_demo.backbones.text import HashingTextBackbone

    return HashingTextBackbone(dim=cfg.dim)


#: kind → builder(config, pretrained) for every supported tower.
BACKBONES: dict[str, Callable[[BackboneConfig, bool], nn.Module]] = {
    "aisfx": _aisfx,
    "hf_audio": _hf_audio,
    "tiny_audio": _tiny_audio,
    "hf_text": _hf_text,
    "tiny_text": _tiny_text,
}


def build_backbone(cfg: BackboneConfig, pretrained: bool = True, root: str | Path | None = None) -> nn.Module:
    """Build the tower ``cfg`` describes; ``pretrained`` loads its pretrained weights.

    With ``pretrained=False`` a stored-weights tower gets random weights (a checkpoint supplies
    them); an external (``hf_*``) tower whose weights are not stored still loads its pretrained
    weights, since nothing else will.

    A trained ``hf_*`` tower saved self-contained (``cfg.files``: the checkpoint sub-folder with
    its transformers config and tokenizer / feature extractor) is built from ``root / cfg.files``
    when ``root`` (the checkpoint folder) is given: no access to its source model is needed.
    """
    if cfg.kind not in BACKBONES:
        raise ConfigError(f"unknown backbone kind {cfg.kind!r}; choose one of {sorted(BACKBONES)}")
    if cfg.files is not None and root is not None:
        folder = Path(root) / cfg.files
        if not folder.is_dir():
            raise CheckpointError(
                f"the checkpoint's {cfg.kind} tower is stored in {folder}, which is missing: "
                "copy the whole checkpoint folder"
            )
        local = BackboneConfig.from_dict({**cfg.to_dict(), "name": str(folder), "revision": None, "files": None})
        return BACKBONES[cfg.kind](local, pretrained=False)
    return BACKBONES[cfg.kind](cfg, pretrained or not cfg.stores_weights)
