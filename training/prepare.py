"""The data of a training run, as every command sees it: load ``config.data``, keep the clips with
every caption language, apply the cross-validation split and the package and class filters, build
the cached mixture pool and inject caption noise.

This module sits below :mod:`training.train`, :mod:`training.features` and
:mod:`training.experiments`, so that the feature cache, training and the experiments read the same
clips and the same captions (:func:`clip_captions`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from atr_demo.errors import ConfigError

from training.augment import inject_caption_noise, make_mixtures
from training.config import TrainConfig
from training.datasets import (
    Clip,
    cv_split,
    drop_classes,
    filter_packages,
    label_captions,
    language_captions,
    load_dataset,
    split_clips,
)

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """The clips of a run: training (after noise), a fixed mixture pool, validation and test."""

    train: list[Clip]
    validation: list[Clip]
    test: list[Clip]
    mixture_pool: list[Clip] = field(default_factory=list)
    noisy: list[int] = field(default_factory=list)


def load_clips(config: TrainConfig) -> list[Clip]:
    """Every clip of ``config.data`` as a run uses it (:func:`select_clips` applied), all splits."""
    clips: list[Clip] = []
    for spec in config.data:
        clips += load_dataset(spec, config.data_format, wavcaps_blacklist=config.wavcaps_blacklist,
                              check_audio=config.check_audio)
    return select_clips(clips, config)


def prepare_data(config: TrainConfig) -> PreparedData:
    """Load ``config.data``, apply the package filter, build the mixture pool, inject caption noise.

    The cached mixture pool is drawn with ``mixture_seed`` from the *whole* (unfiltered, clean)
    training split, then filtered like the clips (both sources must be kept), so that every run
    reuses the same cached mixture features. Caption noise shuffles exactly
    ``round(noise_fraction · n)`` of the n training pairs (clips + pool) with ``seed``.
    """
    clips = load_clips(config)
    all_train = split_clips(clips, "train")
    kept = filter_packages(clips, config.only_packages, config.exclude_packages)
    if len(kept) < len(clips):
        logger.info("package filter: %d of %d clips kept", len(kept), len(clips))
    train = split_clips(kept, "train")
    if not train:
        raise ConfigError(f"no training clips in {config.data}")
    pool: list[Clip] = []
    if config.use_cached_features and config.mixtures:
        pool = filter_packages(make_mixtures(all_train, config.mixtures, seed=config.mixture_seed),
                               config.only_packages, config.exclude_packages)
    validation = split_clips(kept, "validation")
    if config.exclude_classes:
        sizes = (len(train), len(pool), len(validation))
        train, pool, validation = (drop_classes(part, config.exclude_classes) for part in (train, pool, validation))
        logger.info("exclude_classes: kept %d/%d training clips, %d/%d mixtures, %d/%d validation clips",
                    len(train), sizes[0], len(pool), sizes[1], len(validation), sizes[2])
        if not train:
            raise ConfigError(f"exclude_classes {config.exclude_classes} leaves no training clip")
    noisy: list[int] = []
    if config.noise_fraction > 0:
        shuffled, noisy = inject_caption_noise(train + pool, config.noise_fraction, config.seed)
        train, pool = shuffled[: len(train)], shuffled[len(train) :]
    return PreparedData(train=train, validation=validation, test=split_clips(kept, "test"),
                        mixture_pool=pool, noisy=noisy)


def select_clips(clips: Sequence[Clip], config: TrainConfig) -> list[Clip]:
    """The clips a run uses: those with every caption language, then the cross-validation split."""
    out = with_languages(clips, config.languages) if config.languages else list(clips)
    return cv_split(out, config.cv_folds, config.cv_fold) if config.cv_folds else out


def with_languages(clips: Sequence[Clip], languages: Sequence[str]) -> list[Clip]:
    """The clips that have captions in every one of ``languages`` (the others are logged)."""
    kept = [c for c in clips if all(language_captions(c, lang) for lang in languages)]
    if not kept:
        raise ConfigError(f"no clip has captions in all of {list(languages)}: "
                          "check the manifest's caption_<lang> columns")
    if len(kept) < len(clips):
        missing = {lang: sum(1 for c in clips if not language_captions(c, lang)) for lang in languages}
        logger.warning("languages %s: %d of %d clips kept (clips lacking each language: %s)", list(languages),
                       len(kept), len(clips), ", ".join(f"{k} {v}" for k, v in missing.items() if v))
    return kept


def clip_captions(clip: Clip, languages: Sequence[str]) -> list[str]:
    """Every caption of a clip: ``clip.captions``, or those of all ``languages`` in order."""
    if not languages:
        return list(clip.captions)
    return [t for lang in languages for t in language_captions(clip, lang)]


def caption_texts(clips: Sequence[Clip], languages: Sequence[str], with_labels: bool = False) -> list[str]:
    """The distinct captions of ``clips`` (:func:`clip_captions`, every language; with
    ``with_labels`` also their :func:`label_captions`), sorted: the texts whose backbone features a
    run reads."""
    texts = {t for c in clips for t in clip_captions(c, languages)}
    if with_labels:
        texts |= {t for c in clips for t in label_captions(c)}
    return sorted(texts)
