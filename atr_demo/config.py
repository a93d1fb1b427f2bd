"""The model configuration: one dataclass tree serialised as ``config.json`` beside the weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atr_demo.errors import ConfigError

AUDIO_KINDS = ("aisfx", "hf_audio", "tiny_audio")
TEXT_KINDS = ("hf_text", "tiny_text")
#: Backbones whose weights come from a hub id; their weights are stored in a checkpoint only
#: when they are trained (otherwise the checkpoint pins the id and revision).
EXTERNAL_KINDS = ("hf_audio", "hf_text")
METRICS = ("euclidean", "mahalanobis")
SCORINGS = ("cosine", "metric", "transport")

CONFIG_VERSION = 1


@dataclass
class BackboneConfig:
    """One encoder tower.

    Attributes:
        kind: ``aisfx`` | ``hf_audio`` | ``tiny_audio`` for audio; ``hf_text`` | ``tiny_text``
            for text.
        name: hub id or local directory for the ``hf_*`` kinds.
        revision: hub revision pinned for the ``hf_*`` kinds.
        trainable: whether training updates the backbone (its weights are then stored).
        dim: output width of the tiny kinds (ignored by the others).
        max_length: token limit of text backbones.
        pooling: ``mean`` | ``max`` over the aiSFX blocks of a clip.
    """

    kind: str
    name: str | None = None
    revision: str | None = None
    trainable: bool = False
    dim: int = 32
    max_length: int = 64
    pooling: str = "mean"

    @property
    def stores_weights(self) -> bool:
        """True when a checkpoint must carry this tower's weights."""
        return self.trainable or self.kind not in EXTERNAL_KINDS


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model before its weights are loaded.

    Attributes:
        audio, text: the two towers.
        embed_dim: width of the joint space.
        head: ``linear`` | ``mlp`` projection heads.
        text_head: the text tower's head when it differs from ``head``: ``linear`` | ``mlp`` |
            ``identity`` (the text embedding space is locked: the joint space *is* the text
            backbone's space, ``embed_dim`` must equal its width, and only the audio side
            learns — LiT-style "locked text" tuning); ``None`` uses ``head``.
        head_dropout: dropout inside the ``mlp`` head (training only).
        metric: ``euclidean`` (M = I) or ``mahalanobis`` (learned PSD M).
        eig_floor: smallest eigenvalue M is projected to after each step.
        eps: entropic regularisation ε of the transport plan (training and scoring).
        mass: transported mass s of partial OT (1.0 = balanced).
        loss: training loss name (see :mod:`atr_demo.losses`), recorded for the model card.
        scoring: default scoring mode at retrieval time.
        max_duration_s: longest audio accepted at inference.
        prompt_templates: zero-shot prompt templates (``{}`` is replaced by the label).
        name: a human-readable model name.
    """

    audio: BackboneConfig = field(default_factory=lambda: BackboneConfig(kind="aisfx"))
    text: BackboneConfig = field(
        default_factory=lambda: BackboneConfig(kind="hf_text", name="sentence-transformers/all-MiniLM-L6-v2")
    )
    embed_dim: int = 256
    head: str = "linear"
    head_dropout: float = 0.0
    text_head: str | None = None
    metric: str = "euclidean"
    eig_floor: float = 1e-4
    eps: float = 0.05
    mass: float = 1.0
    loss: str = "mltm"
    scoring: str = "cosine"
    max_duration_s: float = 600.0
    prompt_templates: list[str] = field(default_factory=lambda: ["the sound of {}"])
    name: str = "atr-demo"
    version: int = CONFIG_VERSION

    def validate(self) -> ModelConfig:
        """Raise :class:`ConfigError` naming the first invalid value; return ``self``."""
        checks: list[tuple[bool, str]] = [
            (self.audio.kind in AUDIO_KINDS, f"audio.kind must be one of {AUDIO_KINDS}, got {self.audio.kind!r}"),
            (self.text.kind in TEXT_KINDS, f"text.kind must be one of {TEXT_KINDS}, got {self.text.kind!r}"),
            (self.audio.kind != "hf_audio" or bool(self.audio.name), "audio.name is required for hf_audio"),
            (self.text.kind != "hf_text" or bool(self.text.name), "text.name is required for hf_text"),
            (self.metric in METRICS, f"metric must be one of {METRICS}, got {self.metric!r}"),
            (self.scoring in SCORINGS, f"scoring must be one of {SCORINGS}, got {self.scoring!r}"),
            (self.head in ("linear", "mlp"), f"head must be 'linear' or 'mlp', got {self.head!r}"),
            (self.text_head in (None, "linear", "mlp", "identity"),
             f"text_head must be linear, mlp, identity or null, got {self.text_head!r}"),
            (self.embed_dim > 0, f"embed_dim must be positive, got {self.embed_dim}"),
            (self.eps > 0, f"eps must be positive, got {self.eps}"),
            (0 < self.mass <= 1, f"mass must be in (0, 1], got {self.mass}"),
            (self.max_duration_s > 0, f"max_duration_s must be positive, got {self.max_duration_s}"),
            (self.audio.pooling in ("mean", "max"), f"audio.pooling must be mean|max, got {self.audio.pooling!r}"),
            (all("{}" in t for t in self.prompt_templates) and bool(self.prompt_templates),
             "prompt_templates must be non-empty and each must contain '{}'"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict, raising :class:`ConfigError` for unknown or missing keys."""
        if not isinstance(data, dict):
            raise ConfigError(f"a model config must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        towers = {}
        for tower in ("audio", "text"):
            if tower in data:
                towers[tower] = dataclass_from_dict(BackboneConfig, data.pop(tower), f"{tower}.")
        config = dataclass_from_dict(cls, data, "")
        for tower, value in towers.items():
            setattr(config, tower, value)
        if config.version > CONFIG_VERSION:
            raise ConfigError(
                f"config version {config.version} is newer than this atr-demo understands "
                f"({CONFIG_VERSION}): upgrade atr-demo"
            )
        return config.validate()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        """Read a ``config.json``; a missing or malformed file raises :class:`ConfigError`."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no config file at {path}: a checkpoint folder needs config.json")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc}): fix or regenerate it") from exc
        return cls.from_dict(data)


def dataclass_from_dict(cls: type, data: Any, prefix: str = "", what: str = "config") -> Any:
    """``cls(**data)``, raising :class:`ConfigError` that names unknown keys (with ``prefix``)
    and lists the valid ones, or says why the values do not fit."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or what} must be a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown {what} key(s): {', '.join(prefix + k for k in unknown)}; "
            f"valid keys: {', '.join(sorted(names))}"
        )
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"bad {prefix.rstrip('.') or what} values: {exc}") from exc
