"""The model configuration: one pydantic model tree serialised as ``config.json`` beside the weights.

:class:`ConfigModel` is the base of every configuration of the project (this model config, the
front-end config of :mod:`atr_demo.audio`, the training config of ``training.config``): unknown
keys are rejected (``extra="forbid"``), values are checked strictly (no ``"10"`` for an int, no
``1`` for a bool; an int is accepted for a float), choices are ``Literal`` types, and assignments
are validated too. Every failure is raised as one :class:`~atr_demo.errors.ConfigError` whose
message names the config, the key, what is wrong and the valid keys or values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from atr_demo.errors import ConfigError

AudioKind = Literal["aisfx", "hf_audio", "tiny_audio"]
TextKind = Literal["hf_text", "tiny_text"]
AUDIO_KINDS: tuple[str, ...] = get_args(AudioKind)
TEXT_KINDS: tuple[str, ...] = get_args(TextKind)
BackboneKind = Literal[AudioKind, TextKind]
#: Backbones whose weights come from a hub id; their weights are stored in a checkpoint only
#: when they are trained (otherwise the checkpoint pins the id and revision).
EXTERNAL_KINDS = ("hf_audio", "hf_text")
Metric = Literal["euclidean", "mahalanobis"]
Scoring = Literal["cosine", "metric", "transport"]
METRICS: tuple[str, ...] = get_args(Metric)
SCORINGS: tuple[str, ...] = get_args(Scoring)

CONFIG_VERSION = 1

_MAX_SHOWN = 80


def _shown(value: Any) -> str:
    """``repr(value)``, shortened to about 80 characters."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _model_at(cls: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The config class reached from ``cls`` along the field names of ``loc`` (None if none is)."""
    for part in loc:
        field = cls.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        cls = annotation
    return cls


def config_error(exc: ValidationError, cls: type[BaseModel], what: str, prefix: str = "") -> ConfigError:
    """One :class:`ConfigError` for every problem pydantic found, e.g.
    ``training config key 'lossx' is unknown; valid keys: amp, batch_size, ...``.

    Args:
        exc: the validation error of ``cls``.
        what: the config (and file) named in the message: ``model config``, ``training config x.yaml``.
        prefix: dotted path of ``cls`` inside an enclosing config (``model.``), put before every key.
    """
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = prefix + ".".join(str(part) for part in loc)
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if error["type"] == "extra_forbidden":
            owner = _model_at(cls, loc[:-1])
            valid = f"; valid keys: {', '.join(owner.model_fields)}" if owner is not None else ""
            problems.append(f"{what} key '{key}' is unknown{valid}")
        elif error["type"] == "missing":
            problems.append(f"{what} key '{key}' is missing: it has no default, give it")
        elif not loc:
            problems.append(f"{what}: {message}")
        elif error["type"] in ("value_error", "assertion_error"):  # our validators' messages show the value
            problems.append(f"{what} key '{key}': {message}")
        else:
            problems.append(f"{what} key '{key}': {message[:1].lower()}{message[1:]}, got {_shown(error['input'])}")
    return ConfigError("; ".join(problems))


class ConfigModel(BaseModel):
    """Base of the configuration models: strict, closed, validated on assignment, errors as
    :class:`ConfigError` (also from the constructor and from attribute assignment).

    An assignment is checked against the whole config (cross-field rules included) and a rejected
    one leaves the config unchanged. To change fields that depend on each other, build a new config:
    ``type(c).from_dict({**c.to_dict(), ...})`` (``model_copy(update=...)`` would skip validation).
    """

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    #: What the error messages call this config.
    config_name: ClassVar[str] = "config"

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, type(self), self.config_name) from exc

    # Nested configs are validated by pydantic without calling this constructor (as for
    # BaseModel's own); otherwise a nested error would surface as ConfigError without its path.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        # pydantic has already stored the value when a model validator rejects it: restore the old state
        fields, fields_set = self.__dict__.copy(), set(self.__pydantic_fields_set__)
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            object.__setattr__(self, "__dict__", fields)
            object.__setattr__(self, "__pydantic_fields_set__", fields_set)
            raise config_error(exc, type(self), self.config_name) from exc

    @classmethod
    def from_dict(cls, data: Any, what: str | None = None, prefix: str = "") -> Self:
        """Build from a mapping (missing keys take their defaults).

        Args:
            what: the config named in error messages (default: the class's ``config_name``).
            prefix: dotted path of this config inside an enclosing one, for the messages.

        Raises:
            ConfigError: ``data`` is not a mapping, or a key is unknown or its value invalid.
        """
        what = what or cls.config_name
        if not isinstance(data, dict):
            where = f"{what} key '{prefix.rstrip('.')}'" if prefix else what
            raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data, context={"what": what})  # validators of nested configs name it too
        except ValidationError as exc:
            raise config_error(exc, cls, what, prefix) from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields, nested configs as dicts (JSON-serialisable)."""
        return self.model_dump()


class BackboneConfig(ConfigModel):
    """One encoder tower.

    Attributes:
        kind: ``aisfx`` | ``hf_audio`` | ``tiny_audio`` for audio; ``hf_text`` | ``tiny_text``
            for text.
        name: hub id or local directory for the ``hf_*`` kinds.
        revision: hub revision pinned for the ``hf_*`` kinds.
        trainable: whether training updates the backbone (its weights are then stored).
        dim: output width of the tiny kinds (ignored by the others).
        max_length: token limit of text backbones.
        pooling: ``mean`` | ``max`` | ``meanmax`` (both, concatenated: 1024-d) over the aiSFX
            blocks of a clip.
        files: checkpoint sub-folder (``audio_backbone`` / ``text_backbone``) holding a trained
            ``hf_*`` tower's transformers config and tokenizer or feature extractor, written by
            ``save_pretrained``: the tower then loads from the checkpoint alone (``name`` and
            ``revision`` record where it came from).
        source_digest: ``sha256:…`` over the files of the local folder a trained ``hf_*`` tower
            started from (a local folder has no hub revision to pin).

    ``files`` and ``source_digest`` are left out of the serialised config when unset, so the
    ``config.json`` of a checkpoint without them reads and writes as before.
    """

    config_name: ClassVar[str] = "backbone config"

    kind: BackboneKind
    name: str | None = None
    revision: str | None = None
    trainable: bool = False
    dim: int = Field(default=32, gt=0)
    max_length: int = Field(default=64, gt=0)
    pooling: Literal["mean", "max", "meanmax"] = "mean"
    files: str | None = None
    source_digest: str | None = None

    @model_validator(mode="after")
    def _files_of_a_trained_hub_tower(self) -> Self:
        if self.files is not None and not (self.trainable and self.kind in EXTERNAL_KINDS):
            raise ValueError(f"files is only for a trainable {' or '.join(EXTERNAL_KINDS)} tower, got kind "
                             f"{self.kind!r} with trainable={self.trainable}")
        if self.files is not None and (Path(self.files).is_absolute() or ".." in Path(self.files).parts):
            raise ValueError(f"files must be a sub-folder of the checkpoint, got {self.files!r}")
        return self

    @model_serializer(mode="wrap")
    def _omit_unset_pins(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in ("files", "source_digest"):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    @property
    def stores_weights(self) -> bool:
        """True when a checkpoint must carry this tower's weights."""
        return self.trainable or self.kind not in EXTERNAL_KINDS


class ModelConfig(ConfigModel):
    """Everything needed to rebuild a model before its weights are loaded.

    Attributes:
        audio, text: the two towers.
        embed_dim: width of the joint space.
        head: ``linear`` | ``mlp`` projection heads.
        text_head: the text tower's head when it differs from ``head``: ``linear`` | ``mlp`` |
            ``identity`` (the text embedding space is locked: the joint space *is* the text
            backbone's space, ``embed_dim`` must equal its width, and only the audio side
            learns — LiT-style "locked text" tuning); ``None`` uses ``head``.
        head_dropout: dropout inside the ``mlp`` head (training only), in [0, 1).
        metric: ``euclidean`` (M = I) or ``mahalanobis`` (learned PSD M).
        eig_floor: smallest eigenvalue M is projected to after each step.
        eps: entropic regularisation ε > 0 of the transport plan (training and scoring).
        mass: transported mass s ∈ (0, 1] of partial OT (1.0 = balanced).
        loss: training loss name (see ``training.config.LOSSES``), recorded for the model card;
            free text so that a checkpoint trained with another loss still loads.
        scoring: default scoring mode at retrieval time: ``cosine`` | ``metric`` | ``transport``.
        max_duration_s: longest audio accepted at inference.
        prompt_templates: zero-shot prompt templates (``{}`` is replaced by the label).
        name: a human-readable model name.
        version: config format version (a newer one than :data:`CONFIG_VERSION` is refused).
    """

    config_name: ClassVar[str] = "model config"

    audio: BackboneConfig = Field(default_factory=lambda: BackboneConfig(kind="aisfx"))
    text: BackboneConfig = Field(
        default_factory=lambda: BackboneConfig(kind="hf_text", name="sentence-transformers/all-MiniLM-L6-v2")
    )
    embed_dim: int = Field(default=256, gt=0)
    head: Literal["linear", "mlp"] = "linear"
    head_dropout: float = Field(default=0.0, ge=0, lt=1)
    text_head: Literal["linear", "mlp", "identity"] | None = None
    metric: Metric = "euclidean"
    eig_floor: float = Field(default=1e-4, ge=0)
    eps: float = Field(default=0.05, gt=0)
    mass: float = Field(default=1.0, gt=0, le=1)
    loss: str = "mltm"
    scoring: Scoring = "cosine"
    max_duration_s: float = Field(default=600.0, gt=0)
    prompt_templates: list[str] = Field(default_factory=lambda: ["the sound of {}"])
    name: str = "atr-demo"
    version: int = CONFIG_VERSION

    @field_validator("prompt_templates")
    @classmethod
    def _templates_have_placeholder(cls, templates: list[str]) -> list[str]:
        if not templates or not all("{}" in t for t in templates):
            raise ValueError(f"give at least one template, each with '{{}}' for the label; got {templates!r}")
        return templates

    @field_validator("version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        if version > CONFIG_VERSION:
            raise ValueError(f"{version} is newer than this atr-demo understands ({CONFIG_VERSION}): upgrade atr-demo")
        return version

    @model_validator(mode="after")
    def _towers_fit(self) -> Self:
        for tower, kinds in (("audio", AUDIO_KINDS), ("text", TEXT_KINDS)):
            backbone: BackboneConfig = getattr(self, tower)
            if backbone.kind not in kinds:
                raise ValueError(f"{tower}.kind must be one of {', '.join(kinds)}, got {backbone.kind!r}")
            if backbone.kind in EXTERNAL_KINDS and not backbone.name:
                raise ValueError(f"{tower}.name is required for {backbone.kind}: give a hub id or a local folder")
        return self

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
        return cls.from_dict(data, what=f"model config {path}")
