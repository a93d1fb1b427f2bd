"""The training configuration: a YAML or JSON file mapped onto :class:`TrainConfig`.

Unknown keys raise :class:`~atr_demo.errors.ConfigError` naming them. ``--set key=value``
overrides any field, dotted keys reach into the model config (``--set model.eps=0.03``,
``--set model.audio.trainable=true``); values are parsed as YAML scalars.

Example (YAML)::

    data: corpus/manifest.jsonl
    model: aisfx-minilm          # or a ModelConfig mapping
    loss: mltm
    metric: mahalanobis
    eps: 0.05
    batch_size: 128
    epochs: 30
    out: runs/mltm-maha
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from atr_demo.config import ModelConfig, dataclass_from_dict
from atr_demo.errors import ConfigError
from atr_demo.model import BUILTIN_MODELS
from atr_demo.zeroshot import ESC50_CLASSES

LOSSES = ("mltm", "mltm_partial", "infonce", "triplet", "softlabel", "kcl", "kcl_mltm", "cacl", "cacl_mltm")
#: Losses that train on captions in several languages (``languages`` must name at least two).
MULTILINGUAL_LOSSES = ("kcl", "kcl_mltm", "cacl", "cacl_mltm")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
DEVICES = ("cpu", "cuda", "auto")
BATCHING = ("group", "ids", "none")


@dataclass
class TrainConfig:
    """Everything a training run needs.

    Attributes:
        data: dataset path(s) (see :func:`training.datasets.load_dataset`); clips of all of them
            are pooled, their ``split`` decides train / validation.
        data_format: force a format for every path (``None``: detect).
        model: a built-in model name (``tiny``, ``aisfx-minilm``) or a ModelConfig mapping;
            ``loss``, ``metric``, ``eps`` and ``mass`` below are copied into it.
        loss: ``mltm`` | ``mltm_partial`` | ``infonce`` | ``triplet`` | ``softlabel`` (soft
            targets from caption–caption similarity) | ``kcl`` | ``cacl`` (multilingual,
            InfoNCE terms) | ``kcl_mltm`` | ``cacl_mltm`` (multilingual, m-LTM KL terms).
        mass: transported mass s of ``mltm_partial``.
        target_temperature: temperature of the ``softlabel`` targets (softmax of the
            text-backbone cosine similarity of the batch's captions over this temperature).
        languages: caption languages of multilingual data (manifest ``caption_<lang>``
            columns; ``captions`` counts as the first language, normally ``en``). The first is
            the anchor (CACL's co-anchor). Multilingual losses train on all of them; other losses
            train on the first language only (the monolingual baseline). Validation ranks the
            captions of every language; clips lacking a language are dropped with a warning.
        metric: ``euclidean`` | ``mahalanobis`` (PSD-projected after every step).
        eps: entropic regularisation ε of the m-LTM plan.
        margin: margin of the triplet loss.
        batch_size: pairs per batch.
        batching: ``group`` (at most one clip per recording group / caption per batch),
            ``ids`` (pass group ids to the loss), ``none``.
        optimizer: ``adam`` | ``adamw`` | ``sgd`` (momentum 0.9); lr, weight_decay.
        schedule: ``constant`` | ``cosine`` (to 0 at the end), after ``warmup_steps`` linear warm-up.
        epochs, seed.
        device: ``cpu`` | ``cuda`` | ``auto``; amp: bf16/fp16 autocast on a GPU only.
        use_cached_features: train heads + metric on cached frozen backbone features
            (``features_cache``); otherwise run the backbones each step (fine-tuning where trainable).
        mixtures: two-clip mixtures added to the training set (per epoch when not cached;
            a fixed pool drawn with ``mixture_seed`` from the whole training split when cached,
            so that runs with other seeds or package filters reuse the cached mixture features).
        mixture_seed: seed of the cached mixture pool (``seed`` varies heads and batch order only).
        noise_fraction: fraction of training pairs whose captions are shuffled (noise experiments;
            with cached mixtures, the pool counts as training pairs).
        cv_folds, cv_fold: with ``cv_folds`` ≥ 3, ignore the data's splits and use fold
            ``cv_fold`` of a cross-validation by recording group as test, the next fold as
            validation, the rest as train (:func:`training.datasets.cv_split`); 0 = off.
        exclude_classes: ESC-50 classes held out of training: train and validation clips (and
            mixtures) whose captions name one (:mod:`atr_demo.leakage` synonyms) or that are
            labelled with one are dropped, so zero-shot on them is class-disjoint (leakage control).
        only_packages, exclude_packages: keep only / drop the corpus clips of these source
            packages (every split; a mixture needs both sources kept) — leave-one-package-out.
        best_metric: validation key that selects ``out/best`` (``t2a_mAP@10``, ``a2t_R@1``, …).
        out: output folder (``last/``, ``best/``, ``log.jsonl``).
    """

    data: list[str] = field(default_factory=list)
    data_format: str | None = None
    model: Any = "aisfx-minilm"
    loss: str = "mltm"
    mass: float = 0.95
    target_temperature: float = 0.05
    languages: list[str] = field(default_factory=list)
    metric: str = "euclidean"
    eps: float = 0.05
    margin: float = 0.2
    batch_size: int = 128
    batching: str = "group"
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    epochs: int = 20
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    use_cached_features: bool = True
    features_cache: str | None = None
    feature_batch_size: int = 16
    mixtures: int = 0
    mixture_seed: int = 0
    noise_fraction: float = 0.0
    cv_folds: int = 0
    cv_fold: int = 0
    exclude_classes: list[str] = field(default_factory=list)
    only_packages: list[str] = field(default_factory=list)
    exclude_packages: list[str] = field(default_factory=list)
    max_duration_s: float = 30.0
    best_metric: str = "t2a_mAP@10"
    out: str = "runs/default"
    progress: bool = True

    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` for the first invalid value; return ``self``."""
        if isinstance(self.data, str):
            self.data = [self.data]
        for key in ("only_packages", "exclude_packages", "languages", "exclude_classes"):
            value = getattr(self, key)
            if isinstance(value, str):
                setattr(self, key, [value])
            elif not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{key} must be a list of names, got {value!r}")
        unknown_classes = sorted(set(self.exclude_classes) - set(ESC50_CLASSES))
        checks = [
            (bool(self.data), "data: give at least one dataset path"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"),
            (self.metric in ("euclidean", "mahalanobis"), f"metric must be euclidean|mahalanobis, got {self.metric!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.device in DEVICES, f"device must be one of {DEVICES}, got {self.device!r}"),
            (self.batching in BATCHING, f"batching must be one of {BATCHING}, got {self.batching!r}"),
            (self.batch_size >= 2, f"batch_size must be at least 2, got {self.batch_size}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.eps > 0, f"eps must be positive, got {self.eps}"),
            (0 < self.mass <= 1, f"mass must be in (0, 1], got {self.mass}"),
            (0 <= self.noise_fraction <= 1, f"noise_fraction must be in [0, 1], got {self.noise_fraction}"),
            (self.mixtures >= 0, f"mixtures must be >= 0, got {self.mixtures}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.target_temperature > 0, f"target_temperature must be positive, got {self.target_temperature}"),
            (self.loss not in MULTILINGUAL_LOSSES or len(self.languages) >= 2,
             f"loss {self.loss!r} is multilingual: set languages to at least two caption languages, "
             f"e.g. languages: [en, fr, de] (manifest columns caption_fr, caption_de)"),
            (len(set(self.languages)) == len(self.languages), f"languages has duplicates: {self.languages}"),
            (not unknown_classes, f"exclude_classes: not ESC-50 classes: {', '.join(unknown_classes)}"),
            (self.cv_folds == 0 or (self.cv_folds >= 3 and 0 <= self.cv_fold < self.cv_folds),
             f"cv_folds must be 0 (off) or >= 3 with 0 <= cv_fold < cv_folds, got {self.cv_folds} / {self.cv_fold}"),
            (not self.languages or self.mixtures == 0,
             "mixtures compose English captions only: set mixtures: 0 for multilingual data (languages)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.model_config()  # validates the model part
        return self

    def model_config(self) -> ModelConfig:
        """The ModelConfig of the run, with loss / metric / ε / s of this config copied in."""
        if isinstance(self.model, str):
            if self.model not in BUILTIN_MODELS:
                raise ConfigError(f"model: unknown built-in {self.model!r}; use one of {sorted(BUILTIN_MODELS)} or a mapping")
            config = BUILTIN_MODELS[self.model]()
        elif isinstance(self.model, dict):
            _check_model_keys(self.model)
            config = ModelConfig.from_dict(self.model)
        elif isinstance(self.model, ModelConfig):
            config = ModelConfig.from_dict(self.model.to_dict())
        else:
            raise ConfigError(f"model must be a built-in name or a mapping, got {type(self.model).__name__}")
        config.loss = self.loss
        config.metric = self.metric
        config.eps = self.eps
        config.mass = self.mass if self.loss == "mltm_partial" else 1.0
        return config.validate()

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if isinstance(self.model, ModelConfig):
            data["model"] = self.model.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        config = dataclass_from_dict(cls, data, what="training config")
        _check_types(config)
        return config.validate()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def _check_model_keys(data: dict[str, Any]) -> None:
    """Name unknown keys of a model mapping with their full dotted path (``model.audio.dimm``)."""
    from atr_demo.config import BackboneConfig

    top = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = [f"model.{k}" for k in data if k not in top]
    tower_keys = {f.name for f in dataclasses.fields(BackboneConfig)}
    for tower in ("audio", "text"):
        if isinstance(data.get(tower), dict):
            unknown += [f"model.{tower}.{k}" for k in data[tower] if k not in tower_keys]
    if unknown:
        raise ConfigError(f"unknown training config key(s): {', '.join(sorted(unknown))}")


def _check_types(config: TrainConfig) -> None:
    """Reject values whose type does not match the field (``epochs: "ten"``), naming the key."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        expected = {"int": int, "float": (int, float), "bool": bool, "str": str}.get(str(f.type).split(" |")[0])
        if expected is None or value is None:
            continue
        if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{f.name} must be an integer, got {value!r}")
        if expected == (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{f.name} must be a number, got {value!r}")
        if expected is bool and not isinstance(value, bool):
            raise ConfigError(f"{f.name} must be true or false, got {value!r}")
        if expected is str and not isinstance(value, str):
            raise ConfigError(f"{f.name} must be a string, got {value!r}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``) or JSON file → dict; relative data paths stay as written."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training config {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (dotted keys, YAML scalar values) to a config dict (copied).

    ``model.<key>`` turns a built-in model name into its ModelConfig mapping first.
    """
    data = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r} ({exc})") from exc
        parts = key.strip().split(".")
        if parts[0] == "model" and len(parts) > 1:
            model = data.get("model", TrainConfig.model)
            if isinstance(model, str):
                if model not in BUILTIN_MODELS:
                    raise ConfigError(f"model: unknown built-in {model!r}")
                data["model"] = BUILTIN_MODELS[model]().to_dict()
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                if part in node:
                    raise ConfigError(f"--set {key}: {part} is not a mapping")
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return data


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a config file (or start from defaults when ``path`` is None) and apply overrides."""
    data = read_config_file(path) if path else {}
    return TrainConfig.from_dict(apply_overrides(data, overrides or []))
