"""One run of an experiment suite: train a (setting, seed), evaluate it on cached features, store
``<run_dir>/result.json``; a run whose result exists *with the same config* is loaded instead."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from atr_demo.fileio import atomic_write_text
from atr_demo.model import ATRModel, load_model
from atr_demo.zeroshot import ESC50_CLASSES, LabelSet, embed_labels

from training.analysis.leakage import classes_in_captions
from training.analysis.structure import owner_means, structure_report
from training.config import TrainConfig, apply_overrides
from training.datasets import Clip, filter_packages, split_clips
from training.evaluate import evaluate_embeddings, evaluate_languages, first_captions, probe_report, zeroshot_leakage
from training.experiments.hubness import VERSION as VARIANTS_VERSION
from training.experiments.hubness import embed, evaluate_variants
from training.experiments.metrics import flatten_result
from training.experiments.settings import Setting
from training.features import audio_features, text_features
from training.prepare import PreparedData, clip_captions, load_clips, prepare_data
from training.train import train

logger = logging.getLogger(__name__)

EVAL_MODES = ("cosine", "transport")
STRUCTURE_KS = (1, 5, 10, 20)


def run_config(base: dict[str, Any], setting: Setting, seed: int, out: Path,
               overrides: Sequence[str] = ()) -> TrainConfig:
    """The training config of one run: base ← CLI overrides ← setting ← seed and output folder."""
    data = apply_overrides(base, list(overrides))
    items = [f"{k}={json.dumps(v)}" for k, v in setting.overrides.items()]
    data = apply_overrides(data, items + [f"seed={seed}", f"out={json.dumps(str(out))}", "progress=false"])
    return TrainConfig.from_dict(data)


def eval_clips(config: TrainConfig, setting: Setting) -> list[Clip]:
    """The clips a setting is evaluated on: the run's clips as training sees them
    (:func:`training.prepare.load_clips`), of the setting's split, of all packages unless ``eval_packages``."""
    clips = load_clips(config)
    if setting.eval_split != "all":
        clips = split_clips(clips, setting.eval_split)
    if setting.eval_packages:
        clips = filter_packages(clips, only=setting.eval_packages)
    else:
        clips = filter_packages(clips, config.only_packages, config.exclude_packages)
    return clips


def cached_label_set(model: ATRModel, cache: str | None) -> LabelSet:
    """ESC-50 prompt-ensemble label embeddings (:func:`atr_demo.zeroshot.embed_labels`), with
    the text-backbone features read from / written to the feature cache."""

    def embed(prompts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            feats = text_features(model, prompts, cache, progress=False).to(model.device)
            return model.project_text(feats).float().cpu()

    return embed_labels(model, list(ESC50_CLASSES), model.config.prompt_templates, True, embed=embed)


def evaluate_cached(model: ATRModel, clips: Sequence[Clip], config: TrainConfig, modes: Sequence[str] = EVAL_MODES,
                    seen: set[str] | None = None) -> dict[str, Any]:
    """:func:`training.evaluate.evaluate_clips` on cached backbone features (no audio decoding
    when the cache holds the clips); clips whose audio cannot be decoded are left out.

    Adds ``structure`` (:func:`training.analysis.structure.structure_report` of each clip's audio
    embedding vs the mean of its caption embeddings), ``leakage`` (zero-shot accuracy split
    into the ESC-50 classes in ``seen`` and the others, per mode) when ``seen`` is given, and
    ``multilingual`` (:func:`training.evaluate.evaluate_languages`) when the run has languages.
    """
    model.eval()
    embedded = embed(model, config, clips)
    clips, audio, text = embedded.clips, embedded.audio, embedded.text

    def embed_text(texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return model.project_text(text_features(model, texts, config.features_cache, progress=False)
                                      .to(model.device)).float().cpu()

    label_set = cached_label_set(model, config.features_cache) if any(c.esc50 in ESC50_CLASSES for c in clips) else None
    result = evaluate_embeddings(model, clips, audio, text, label_set, modes)
    per_clip = owner_means(text, embedded.owner, len(clips))
    if len(clips) > min(STRUCTURE_KS):
        result["structure"] = structure_report(audio, per_clip, STRUCTURE_KS, ("cosine", "metric"), model.metric)
    if seen is not None and label_set is not None:
        result["leakage"] = zeroshot_leakage(model, clips, audio, label_set, seen, modes)
    if config.languages:
        text_by_lang = {lang: embed_text(first_captions(clips, lang)) for lang in config.languages}
        result["multilingual"] = evaluate_languages(model, audio, text_by_lang, modes)
    return result


def training_captions(data: PreparedData, languages: Sequence[str]) -> list[str]:
    """Every caption the run trained on: its training clips' and its mixtures' (all languages)."""
    return [t for c in data.train + data.mixture_pool for t in clip_captions(c, languages)]


def probe_baseline(model: ATRModel, config: TrainConfig, data: PreparedData, test_clips: Sequence[Clip],
                   seen: set[str]) -> dict[str, Any] | None:
    """:func:`training.evaluate.probe_report` on the cached audio-backbone features of the run's
    ESC-50-labelled training clips and of the labelled test clips."""
    parts = []
    for clips in (data.train, test_clips):
        part = [c for c in clips if c.esc50 in ESC50_CLASSES]
        feats, ok = audio_features(model, part, config.features_cache, config.feature_batch_size,
                                   config.max_duration_s, progress=False)
        parts.append((feats.float().cpu(), [str(part[i].esc50) for i in ok]))
    return probe_report(parts[0][0], parts[0][1], parts[1][0], parts[1][1], seen, seed=config.seed)


def load_result(config: TrainConfig, run_dir: Path) -> dict[str, Any] | None:
    """The stored result of a run if it exists and was made with ``config``; else ``None``."""
    result_path = run_dir / "result.json"
    if not result_path.is_file():
        return None
    record = json.loads(result_path.read_text(encoding="utf-8"))
    stored = record.get("config") or {}
    # a key added to TrainConfig since the result was stored counts as its default (as --resume does)
    if set(stored) - set(config.to_dict()) or config.changed_keys(stored):
        logger.info("%s: config changed since the stored result", run_dir)
        return None
    record["skipped"] = True
    return record


def refresh_variants(record: dict[str, Any], config: TrainConfig, setting: Setting, run_dir: Path) -> dict[str, Any]:
    """A stored run whose scoring-time variants are of another :data:`~training.experiments.hubness.VERSION`
    (or missing) is re-evaluated from its ``best`` checkpoint, without retraining; else returned as is."""
    best = run_dir / "train" / "best"
    if record["result"].get("variants", {}).get("version") == VARIANTS_VERSION or not best.is_dir():
        return record
    began = time.time()
    model = load_model(str(best))
    record["result"]["variants"] = evaluate_variants(model, config, prepare_data(config), eval_clips(config, setting))
    record["metrics"] = flatten_result(record["result"])
    record["variants_seconds"] = round(time.time() - began, 2)
    atomic_write_text(run_dir / "result.json", json.dumps({k: v for k, v in record.items() if k != "skipped"},
                                                           indent=2) + "\n")
    return record


def run_one(base: dict[str, Any], setting: Setting, seed: int, run_dir: Path, overrides: Sequence[str] = (),
            keep_checkpoints: bool = False, collect: bool = False) -> dict[str, Any] | None:
    """Train and evaluate one (setting, seed), or load its result when it already exists.

    With ``collect`` nothing is trained: a missing result gives ``None``.
    """
    if setting.init_from:  # warm start from the same seed's run of another setting (it ran first)
        start = run_dir.parent.parent / setting.init_from / run_dir.name / "train" / "best"
        setting = dataclasses.replace(setting, overrides={**setting.overrides, "init_from": str(start)})
    config = run_config(base, setting, seed, run_dir / "train", overrides)
    record = load_result(config, run_dir)
    if record is not None and setting.variants and not collect:
        return refresh_variants(record, config, setting, run_dir)
    if record is not None or collect:
        return record
    result_path = run_dir / "result.json"
    began = time.time()
    out = train(config)
    train_s = time.time() - began
    best_info = json.loads((out / "best" / "metrics.json").read_text(encoding="utf-8"))
    model = load_model(str(out / "best"))
    began = time.time()
    data = prepare_data(config)
    seen_terms = classes_in_captions(training_captions(data, config.languages))
    seen = set(seen_terms)
    test_clips = eval_clips(config, setting)
    result = evaluate_cached(model, test_clips, config, seen=seen)
    result["probe"] = probe_baseline(model, config, data, test_clips, seen)
    if setting.variants:
        result["variants"] = evaluate_variants(model, config, data, test_clips)
    result["seen_classes"] = seen_terms
    eval_s = time.time() - began
    record = {
        "setting": setting.name, "label": setting.label, "group": setting.group, "family": setting.family,
        "seed": seed, "overrides": setting.overrides, "eval_split": setting.eval_split,
        "eval_packages": setting.eval_packages, "config": config.to_dict(),
        "best_epoch": best_info.get("epoch"), "val": best_info.get("val", {}),
        "val_score": best_info.get(config.best_metric), "train_seconds": round(train_s, 2),
        "eval_seconds": round(eval_s, 2), "result": result, "metrics": flatten_result(result),
    }
    if not keep_checkpoints:
        shutil.rmtree(out / "last", ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(result_path, json.dumps(record, indent=2) + "\n")
    return record
