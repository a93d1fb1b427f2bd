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

import json
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, get_args

import yaml
from pydantic import Field, ValidationInfo, field_validator, model_validator

from atr_demo.config import ConfigModel, Metric, ModelConfig
from atr_demo.errors import ConfigError
from atr_demo.losses import TRAINING_LOSSES
from atr_demo.model import BUILTIN_MODELS
from atr_demo.zeroshot import ESC50_CLASSES

from training.datasets import FORMATS
from training.sampling import data_weights

#: The loss names, from the one registry :data:`atr_demo.losses.TRAINING_LOSSES`.
Loss = Literal[tuple(TRAINING_LOSSES)]  # type: ignore[valid-type]
LOSSES: tuple[str, ...] = get_args(Loss)
#: Losses that train on captions in several languages (``languages`` must name at least two).
MULTILINGUAL_LOSSES = tuple(name for name, spec in TRAINING_LOSSES.items() if spec.min_languages >= 2)
Amp = Literal["none", "bf16", "fp16"]
DistBackend = Literal["auto", "nccl", "gloo"]
#: Optimiser parameter groups (:data:`training.optim.GROUPS`).
ParamGroupName = Literal["audio_backbone", "text_backbone", "heads", "metric", "loss"]
Optimizer = Literal["adam", "adamw", "sgd"]
Schedule = Literal["constant", "cosine"]
Device = Literal["cpu", "cuda", "auto"]
Batching = Literal["group", "ids", "none"]
CaptionsPerEpoch = Literal["one", "all"]
TrainCrop = Literal["head", "random"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
DEVICES: tuple[str, ...] = get_args(Device)
BATCHING: tuple[str, ...] = get_args(Batching)
#: Fields that may be written as one name instead of a list of names (``data: corpus/``).
_NAME_LISTS = ("data", "languages", "exclude_classes", "only_packages", "exclude_packages", "wavcaps_blacklist")


class ParamGroupConfig(ConfigModel):
    """Learning rate and weight decay of one parameter group (unset: the run's ``lr`` / ``weight_decay``)."""

    config_name: ClassVar[str] = "param_groups entry"

    lr: float | None = Field(default=None, gt=0)
    weight_decay: float | None = Field(default=None, ge=0)


class TrainConfig(ConfigModel):
    """Everything a training run needs (a :class:`~atr_demo.config.ConfigModel`: unknown keys,
    wrong types and out-of-range values raise :class:`ConfigError` naming the key).

    Attributes:
        data: dataset path(s) (see :func:`training.datasets.load_dataset`); clips of all of them
            are pooled, their ``split`` decides train / validation. One path may be given as a string.
            Each entry is ``[FORMAT:]PATH[@WEIGHT]`` or a mapping ``{path, format, weight}`` (stored
            as that string); weights (all datasets or none) set the share of each epoch's training
            items drawn from each dataset (:mod:`training.sampling`).
        wavcaps_blacklist: WavCaps exclusion lists (JSON files or folders) used instead of the
            release's ``json_files/blacklist/`` (:mod:`training.formats.wavcaps`).
        check_audio: probe the audio headers of AudioCaps / Clotho / WavCaps at load time: ``eval``
            (validation/test clips; an unreadable one stops the run), ``all`` (training clips too:
            skipped and reported), ``off``.
        data_format: force a format for every path (one of :data:`training.datasets.FORMATS`;
            ``None``: detect).
        model: a built-in model name (``tiny``, ``aisfx-minilm``), a ModelConfig mapping (kept as
            written; validated as a ModelConfig) or a ModelConfig; ``loss``, ``metric``, ``eps``
            and ``mass`` below are copied into it by :meth:`run_model_config`.
        loss: ``mltm`` | ``mltm_partial`` | ``infonce`` | ``triplet`` | ``softlabel`` (soft
            targets from caption–caption similarity) | ``kcl`` | ``cacl`` (multilingual,
            InfoNCE terms) | ``kcl_mltm`` | ``cacl_mltm`` (multilingual, m-LTM KL terms).
        mass: transported mass s ∈ (0, 1] of ``mltm_partial``.
        target_temperature: temperature (> 0) of the ``softlabel`` targets (softmax of the
            text-backbone cosine similarity of the batch's captions over this temperature).
        languages: caption languages of multilingual data (manifest ``caption_<lang>``
            columns; ``captions`` counts as the first language, normally ``en``). The first is
            the anchor (CACL's co-anchor). Multilingual losses train on all of them; other losses
            train on the first language only (the monolingual baseline). Validation ranks the
            captions of every language; clips lacking a language are dropped with a warning.
        metric: ``euclidean`` | ``mahalanobis`` (PSD-projected after every step).
        eps: entropic regularisation ε > 0 of the m-LTM plan.
        margin: margin of the triplet loss.
        batch_size: pairs per batch (at least 2).
        batching: ``group`` (at most one clip per recording group / caption per batch),
            ``ids`` (pass group ids to the loss), ``none``.
        optimizer: ``adam`` | ``adamw`` | ``sgd`` (momentum 0.9); lr > 0, weight_decay >= 0.
        schedule: ``constant`` | ``cosine`` (to 0 at the end), after ``warmup_steps`` linear warm-up.
        epochs (at least 1), seed.
        device: ``cpu`` | ``cuda`` | ``auto``.
        amp: ``none`` | ``bf16`` | ``fp16`` autocast of the backbones and heads on a GPU (fp16 with a
            GradScaler); the losses and OT solvers always run in float32. ``true``/``false`` read as
            ``bf16``/``none``.
        compile: ``torch.compile`` the backbones.
        param_groups: per group (``audio_backbone``, ``text_backbone``, ``heads``, ``metric``,
            ``loss``) ``{lr, weight_decay}``; unset values use ``lr`` / ``weight_decay``. Biases and
            norms get no weight decay unless ``decay_bias_and_norm``.
        layer_decay: layer-wise learning-rate decay γ ∈ (0, 1] of the backbones (1: off).
        grad_clip: clip the global gradient norm to this value (0: off).
        grad_cache_chunk: embed the batch this many items at a time (gradient cache,
            :mod:`training.gradcache`; 0: off): one plan over the whole batch at one chunk's memory.
        dist_backend: ``auto`` (NCCL on CUDA, gloo on CPU) | ``nccl`` | ``gloo`` under torchrun;
            ``batch_size`` is then the global batch (divisible by the world size).
        dist_timeout_s: seconds a collective waits for the other ranks (a dead rank fails the run).
        log_every_steps: write a step record (loss, learning rates, OT marginal error and
            iterations, samples/s) every N steps to ``log.jsonl`` (0: epoch records only).
        tensorboard: also write the step and epoch records as TensorBoard scalars (``out/tb``).
        checkpoint_every_steps: also write ``last/`` every N steps (with the position in the
            epoch, so ``--resume`` continues mid-epoch; 0: once per epoch).
        use_cached_features: train heads + metric on cached frozen backbone features
            (``features_cache``); otherwise run the backbones each step (fine-tuning where trainable).
        captions_per_epoch: ``one`` (one caption per clip per epoch, drawn with the seed) | ``all``
            (every caption is a training pair each epoch: Clotho's 5 captions are 5 pairs).
        num_workers, persistent_workers, prefetch_factor, pin_memory: the DataLoader that decodes
            raw audio (:mod:`training.pipeline`; 0 workers: in the main process; pinned memory and
            non-blocking copies on CUDA only). Results do not depend on them.
        train_crop: ``head`` (the first ``max_duration_s`` seconds of a clip) | ``random`` (a random
            ``max_duration_s`` window of a longer clip, seeded by (seed, epoch, pair)); raw audio only.
        mixup_alpha: waveform mixup within a batch with λ = max(u, 1 − u), u ~ Beta(α, α), caption
            of the dominant clip (0: off); raw audio only.
        spec_augment, spec_masks, spec_freq_width, spec_time_width: SpecAugment on the log-mel
            front-end's output during training: ``spec_masks`` frequency masks of up to
            ``spec_freq_width`` mel bands and as many time masks of up to ``spec_time_width``
            frames; raw audio and a log-mel backbone (aisfx, tiny_audio) only.
        mixtures: two-clip mixtures added to the training set (per epoch when not cached;
            a fixed pool drawn with ``mixture_seed`` from the whole training split when cached,
            so that runs with other seeds or package filters reuse the cached mixture features).
        mixture_seed: seed of the cached mixture pool (``seed`` varies heads and batch order only).
        finetune_blocks: train the top N conv blocks of the aiSFX CNN (with the heads) on cached
            activations of the blocks below them (:mod:`training.block_cache`; 0: off). Needs
            ``use_cached_features`` (the text side and the block cache are cached) and an aisfx tower.
        block_crop, block_masks, block_mask_width, block_channel_dropout: augmentation of the
            cached block activations while fine-tuning: ``block_crop`` random 100-frame blocks per
            clip and step (0: all), ``block_masks`` time and as many mel masks of up to
            ``block_mask_width`` map positions, and channel dropout (:mod:`training.block_cache`).
        init_from: a saved model folder (``out/best`` of another run) whose weights start this run
            (warm start, e.g. linear probe then fine-tune); the optimiser starts fresh.
        label_captions: probability in [0, 1] that a training pair of a clip with an ESC-50 label
            takes one of its class's sound descriptions (:func:`training.datasets.label_captions`) as
            its caption instead of one of the clip's own (keyword-to-caption augmentation, as in
            LAION-CLAP; 0: off). Zero-shot on those classes is then supervised, not zero-shot.
        noise_fraction: fraction in [0, 1] of training pairs whose captions are shuffled (noise
            experiments; with cached mixtures, the pool counts as training pairs).
        cv_folds, cv_fold: with ``cv_folds`` ≥ 3, ignore the data's splits and use fold
            ``cv_fold`` of a cross-validation by recording group as test, the next fold as
            validation, the rest as train (:func:`training.datasets.cv_split`); 0 = off.
        exclude_classes: ESC-50 classes held out of training: train and validation clips (and
            mixtures) whose captions name one (:mod:`training.analysis.leakage` synonyms) or that are
            labelled with one are dropped, so zero-shot on them is class-disjoint (leakage control).
        only_packages, exclude_packages: keep only / drop the corpus clips of these source
            packages (every split; a mixture needs both sources kept) — leave-one-package-out.
        max_duration_s: longest clip (s) used for training.
        best_metric: validation key that selects ``out/best`` (``t2a_mAP@10``, ``a2t_R@1``, …).
        out: output folder (``last/``, ``best/``, ``log.jsonl``).
        progress: show progress bars.
    """

    config_name: ClassVar[str] = "training config"

    data: list[str] = Field(default_factory=list, validate_default=True)
    data_format: str | None = None
    wavcaps_blacklist: list[str] = Field(default_factory=list)
    check_audio: Literal["eval", "all", "off"] = "eval"
    model: str | dict[str, Any] | ModelConfig = Field(default="aisfx-minilm", union_mode="left_to_right")
    loss: Loss = "mltm"
    mass: float = Field(default=0.95, gt=0, le=1)
    target_temperature: float = Field(default=0.05, gt=0)
    languages: list[str] = Field(default_factory=list)
    metric: Metric = "euclidean"
    eps: float = Field(default=0.05, gt=0)
    margin: float = 0.2
    batch_size: int = Field(default=128, ge=2)
    batching: Batching = "group"
    optimizer: Optimizer = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Schedule = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    epochs: int = Field(default=20, ge=1)
    seed: int = 0
    device: Device = "auto"
    amp: Amp | bool = "none"
    compile: bool = False
    param_groups: dict[ParamGroupName, ParamGroupConfig] = Field(default_factory=dict)
    layer_decay: float = Field(default=1.0, gt=0, le=1)
    decay_bias_and_norm: bool = False
    grad_clip: float = Field(default=0.0, ge=0)
    grad_cache_chunk: int = Field(default=0, ge=0)
    dist_backend: DistBackend = "auto"
    dist_timeout_s: float = Field(default=600.0, gt=0)
    log_every_steps: int = Field(default=0, ge=0)
    tensorboard: bool = False
    checkpoint_every_steps: int = Field(default=0, ge=0)
    use_cached_features: bool = True
    features_cache: str | None = None
    feature_batch_size: int = Field(default=16, gt=0)
    captions_per_epoch: CaptionsPerEpoch = "one"
    num_workers: int = Field(default=0, ge=0)
    persistent_workers: bool = True
    prefetch_factor: int = Field(default=2, ge=1)
    pin_memory: bool = True
    train_crop: TrainCrop = "head"
    mixup_alpha: float = Field(default=0.0, ge=0)
    spec_augment: bool = False
    spec_masks: int = Field(default=2, ge=1)
    spec_freq_width: int = Field(default=12, ge=1)
    spec_time_width: int = Field(default=20, ge=1)
    mixtures: int = Field(default=0, ge=0)
    mixture_seed: int = 0
    finetune_blocks: int = Field(default=0, ge=0, le=3)
    block_crop: int = Field(default=1, ge=0)
    block_masks: int = Field(default=0, ge=0)
    block_mask_width: int = Field(default=2, ge=1)
    block_channel_dropout: float = Field(default=0.0, ge=0, lt=1)
    init_from: str | None = None
    label_captions: float = Field(default=0.0, ge=0, le=1)
    noise_fraction: float = Field(default=0.0, ge=0, le=1)
    cv_folds: int = 0
    cv_fold: int = 0
    exclude_classes: list[str] = Field(default_factory=list)
    only_packages: list[str] = Field(default_factory=list)
    exclude_packages: list[str] = Field(default_factory=list)
    max_duration_s: float = Field(default=30.0, gt=0)
    best_metric: str = "t2a_mAP@10"
    out: str = "runs/default"
    progress: bool = True

    @field_validator(*_NAME_LISTS, mode="before")
    @classmethod
    def _one_name_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("data", mode="before")
    @classmethod
    def _data_entries(cls, value: Any) -> Any:
        """``{path, format, weight}`` mappings → ``format:path@weight`` strings."""
        entries = [value] if isinstance(value, (str, dict)) else value
        if not isinstance(entries, list):
            return value
        out = []
        for entry in entries:
            if isinstance(entry, dict):
                unknown = sorted(set(entry) - {"path", "format", "weight"})
                if unknown or "path" not in entry:
                    raise ValueError("a data mapping has the keys path (required), format, weight; "
                                     f"got {sorted(entry)}")
                text = f"{entry['format']}:{entry['path']}" if entry.get("format") else str(entry["path"])
                entry = f"{text}@{entry['weight']}" if entry.get("weight") is not None else text
            out.append(entry)
        return out

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_choice(cls, value: Any) -> Any:
        if isinstance(value, bool) or value in get_args(Amp):
            return value
        raise ValueError(f"use none, bf16 or fp16 (true/false: bf16/none), got {value!r}")

    @field_validator("data")
    @classmethod
    def _some_data(cls, data: list[str]) -> list[str]:
        if not data:
            raise ValueError("give at least one dataset path")
        try:
            data_weights(data)  # every entry parses; weights on all datasets or none
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return data

    @field_validator("data_format")
    @classmethod
    def _known_format(cls, fmt: str | None) -> str | None:
        if fmt is not None and fmt not in FORMATS:
            raise ValueError(f"unknown dataset format {fmt!r}; use one of {', '.join(FORMATS)} or null (detect)")
        return fmt

    @field_validator("model", mode="before")
    @classmethod
    def _known_model(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            if value not in BUILTIN_MODELS:
                builtins = ", ".join(sorted(BUILTIN_MODELS))
                raise ValueError(f"unknown built-in {value!r}; use one of {builtins} or a mapping")
        elif isinstance(value, dict):
            what = (info.context or {}).get("what", cls.config_name)
            ModelConfig.from_dict(value, what=what, prefix="model.")  # raises ConfigError naming model.<key>
        elif not isinstance(value, ModelConfig):
            raise ValueError(f"must be a built-in model name or a mapping, got {type(value).__name__}")
        return value

    @field_validator("languages")
    @classmethod
    def _distinct_languages(cls, languages: list[str]) -> list[str]:
        if len(set(languages)) != len(languages):
            raise ValueError(f"languages has duplicates: {languages}")
        return languages

    @field_validator("exclude_classes")
    @classmethod
    def _esc50_classes(cls, classes: list[str]) -> list[str]:
        unknown = sorted(set(classes) - set(ESC50_CLASSES))
        if unknown:
            raise ValueError(f"not ESC-50 classes: {', '.join(unknown)}")
        return classes

    @model_validator(mode="after")
    def _settings_fit_together(self) -> Self:
        needed = TRAINING_LOSSES[self.loss].min_languages
        if needed and len(self.languages) < needed:
            raise ValueError(
                f"loss {self.loss!r} is multilingual: set languages to at least two caption languages, "
                f"e.g. languages: [en, fr, de] (manifest columns caption_fr, caption_de)"
            )
        if self.cv_folds != 0 and not (self.cv_folds >= 3 and 0 <= self.cv_fold < self.cv_folds):
            raise ValueError(f"cv_folds must be 0 (off) or >= 3 with 0 <= cv_fold < cv_folds, "
                             f"got {self.cv_folds} / {self.cv_fold}")
        if self.use_cached_features and isinstance(self.model, (dict, ModelConfig)):
            model = self.model.to_dict() if isinstance(self.model, ModelConfig) else self.model
            for tower in ("audio", "text"):
                spec = model.get(tower)
                # the tiny test towers are trainable by construction (built-in `tiny`): frozen silently
                if isinstance(spec, dict) and spec.get("trainable") is True \
                        and not str(spec.get("kind", "")).startswith("tiny_"):
                    raise ValueError(
                        f"model.{tower}.trainable is true but use_cached_features is true (cached features "
                        f"come from frozen backbones): set use_cached_features: false to fine-tune the "
                        f"{tower} backbone, or model.{tower}.trainable: false to train the heads on the cache")
        raw_only = [name for name, on in (("train_crop: random", self.train_crop == "random"),
                                          ("mixup_alpha > 0", self.mixup_alpha > 0),
                                          ("spec_augment", self.spec_augment)) if on]
        if self.use_cached_features and raw_only:
            raise ValueError(f"{', '.join(raw_only)} augment(s) the audio, which cached features cannot: "
                             "set use_cached_features: false")
        if self.finetune_blocks and not self.use_cached_features:
            raise ValueError("finetune_blocks trains on cached block activations: set use_cached_features: true "
                             "(or finetune_blocks: 0 and model.audio.trainable: true to fine-tune on raw audio)")
        if self.languages and self.mixtures:
            raise ValueError("mixtures compose English captions only: "
                             "set mixtures: 0 for multilingual data (languages)")
        return self

    @property
    def amp_mode(self) -> str:
        """``amp`` as ``none`` | ``bf16`` | ``fp16`` (the former ``amp: true`` meant bf16 autocast)."""
        if isinstance(self.amp, bool):
            return "bf16" if self.amp else "none"
        return self.amp

    def changed_keys(self, saved: dict[str, Any]) -> list[str]:
        """Keys whose value differs from the config ``saved`` (a ``to_dict()`` written earlier), sorted.

        A key ``saved`` lacks (it was written before the key existed) counts as that key's default.
        """
        defaults = {k: f.default for k, f in type(self).model_fields.items() if not f.is_required()}
        return sorted(k for k, v in self.to_dict().items() if saved.get(k, defaults.get(k)) != v)

    def run_model_config(self) -> ModelConfig:
        """The ModelConfig of the run, with loss / metric / ε / s of this config copied in."""
        if isinstance(self.model, str):
            config = BUILTIN_MODELS[self.model]()
        elif isinstance(self.model, ModelConfig):
            config = ModelConfig.from_dict(self.model.to_dict())
        else:
            config = ModelConfig.from_dict(self.model, what=self.config_name, prefix="model.")
        config.loss = self.loss
        config.metric = self.metric
        config.eps = self.eps
        config.mass = self.mass if self.loss == "mltm_partial" else 1.0
        return config

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


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
            model = data.get("model", TrainConfig.model_fields["model"].default)
            if isinstance(model, str):
                if model not in BUILTIN_MODELS:
                    raise ConfigError(f"--set {key}: model {model!r} is not a built-in model "
                                      f"({', '.join(sorted(BUILTIN_MODELS))}); give a mapping or a built-in name")
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
    what = f"training config {path}" if path else TrainConfig.config_name
    return TrainConfig.from_dict(apply_overrides(data, overrides or []), what=what)
