"""``python -m training experiments --suite main|noise|eps|lopo|levers|tune [...]``: the README tables.

Each suite is a list of *settings* (config overrides on top of ``--base``); every setting is
trained once per seed (``train`` → ``out/best`` chosen on validation) and evaluated on cached
frozen-backbone features, in one process. Results:

* ``<runs>/<suite>/<setting>/seed<k>/result.json`` — one run (config, validation score, every
  metric); a run whose result exists *with the same config* is skipped (resumable).
* ``<out>/<suite>.json`` — every run's flat metrics, the aggregates (mean ± sample std over
  seeds, ddof=1) and the command; ``<out>/<suite>.md`` — the Markdown table(s), also printed.

Suites:

* ``main``: m-LTM (Euclidean, Mahalanobis), InfoNCE, triplet on the test split; cosine and
  transport scoring rows.
* ``noise``: 0/20/40/60 % shuffled training captions; m-LTM, m-LTM partial (mass s chosen per
  noise level on validation mAP@10 from ``PARTIAL_MASSES``), InfoNCE; test split.
* ``eps``: m-LTM with ε ∈ ``EPS_VALUES``; test split.
* ``lopo``: leave one package out (``LOPO_PACKAGES``): train and select on the other packages,
  evaluate on every clip of the held-out package (zero-shot on its ESC-50-labelled clips);
  m-LTM Euclidean / Mahalanobis and InfoNCE.
* ``levers``: the LOPO protocol for m-LTM variants (no mixtures, MLP heads, ε, prompt ensemble).
* ``tune``: base-config variants (lr, epochs, head, batch size) scored on the *validation* split.
* ``analysis``: m-LTM (Euclidean, Mahalanobis), InfoNCE, triplet and the soft-label contrastive
  loss on the test split, with three reports from the same runs: retrieval of the soft-label
  loss beside the others; the structure of the joint space (k-NN graph similarity of each
  clip's audio and caption embeddings, linear CKA) and whether it tracks retrieval and
  zero-shot accuracy (Spearman over runs); and the leakage report (zero-shot accuracy on ESC-50
  classes named in the training captions vs the others, beside a linear probe on the frozen
  audio-backbone features).
* ``multilingual``: the multilingual split (``build-multilingual``) in 5-fold cross-validation
  by recording group; English-only m-LTM / InfoNCE vs KCL, CACL and their m-LTM (OT) variants;
  per-language retrieval and the mean rank variance across languages.

Every run also records, besides retrieval and zero-shot: the structure report, the seen/unseen
zero-shot split with the classes found in its training captions, the linear-probe baseline on
its training split, and (with ``languages``) the per-language metrics.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atr_demo.errors import ATRError, ConfigError
from atr_demo.model import ATRModel, load_model
from atr_demo.zeroshot import ESC50_CLASSES, LabelSet, embed_labels

from training.analysis.leakage import classes_in_captions
from training.analysis.structure import owner_means, structure_report
from training.config import TrainConfig, apply_overrides, read_config_file
from training.datasets import Clip, filter_packages, load_dataset, split_clips
from training.evaluate import evaluate_embeddings, evaluate_languages, first_captions, probe_report, zeroshot_leakage
from training.features import audio_features, text_features
from training.prepare import PreparedData, clip_captions, prepare_data, select_clips
from training.train import train

logger = logging.getLogger(__name__)

LOPO_PACKAGES = ("0ad-data", "megaglest-data", "minetest-data", "wesnoth-1.16-data", "widelands-data",
                 "tuxpaint-stamps-default")
EPS_VALUES = (0.01, 0.03, 0.05, 0.1, 0.5)
NOISE_LEVELS = (0.0, 0.2, 0.4, 0.6)
PARTIAL_MASSES = (0.9, 0.8, 0.6)
ENSEMBLE_TEMPLATES = ["the sound of {}", "this is a sound of {}", "{}", "a recording of {}",
                      "a sound effect of {}", "{} can be heard"]
EVAL_MODES = ("cosine", "transport")
STRUCTURE_KS = (1, 5, 10, 20)
ML_FOLDS = 5

#: Methods compared in main / lopo: name → (row label, overrides).
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "mltm-euclidean": ("m-LTM (Euclidean)", {"loss": "mltm", "metric": "euclidean"}),
    "mltm-mahalanobis": ("m-LTM (Mahalanobis)", {"loss": "mltm", "metric": "mahalanobis"}),
    "infonce": ("InfoNCE", {"loss": "infonce", "metric": "euclidean"}),
    "triplet": ("triplet (VSE++)", {"loss": "triplet", "metric": "euclidean"}),
}


@dataclass
class Setting:
    """One row of a suite: config overrides and what to evaluate on.

    Attributes:
        name: unique id within the suite (folder name of its runs).
        label: row label in the tables.
        overrides: training-config values on top of the base config.
        group: row group (noise level, held-out package); ``""`` when none.
        eval_split: ``test`` | ``validation`` | ``all``.
        eval_packages: keep only these packages for evaluation (LOPO: the held-out one).
        family: settings of one family at one group are candidates of a validation choice
            (``mltm_partial`` masses); ``None`` for ordinary rows.
    """

    name: str
    label: str
    overrides: dict[str, Any]
    group: str = ""
    eval_split: str = "test"
    eval_packages: list[str] = field(default_factory=list)
    family: str | None = None


# -- suites ----------------------------------------------------------------------------------

def suite_main(packages: Sequence[str] = LOPO_PACKAGES) -> list[Setting]:
    return [Setting(name, label, dict(ov)) for name, (label, ov) in METHODS.items()]


def suite_eps(packages: Sequence[str] = LOPO_PACKAGES) -> list[Setting]:
    return [Setting(f"eps{eps:g}", f"m-LTM ε={eps:g}", {"loss": "mltm", "metric": "euclidean", "eps": eps})
            for eps in EPS_VALUES]


def suite_noise(packages: Sequence[str] = LOPO_PACKAGES) -> list[Setting]:
    out = []
    for f in NOISE_LEVELS:
        group = f"{round(f * 100)} %"
        base = {"noise_fraction": f, "metric": "euclidean"}
        out.append(Setting(f"noise{f:g}-mltm", "m-LTM", {**base, "loss": "mltm"}, group))
        for s in PARTIAL_MASSES:
            out.append(Setting(f"noise{f:g}-partial{s:g}", f"m-LTM partial (s={s:g})",
                               {**base, "loss": "mltm_partial", "mass": s}, group, family="m-LTM partial"))
        out.append(Setting(f"noise{f:g}-infonce", "InfoNCE", {**base, "loss": "infonce"}, group))
    return out


def _lopo(methods: dict[str, tuple[str, dict[str, Any]]], packages: Sequence[str]) -> list[Setting]:
    return [Setting(f"{pkg}-{name}", label, {**ov, "exclude_packages": [pkg]}, pkg, "all", [pkg])
            for pkg in packages for name, (label, ov) in methods.items()]


def suite_lopo(packages: Sequence[str] = LOPO_PACKAGES) -> list[Setting]:
    return _lopo({k: METHODS[k] for k in ("mltm-euclidean", "mltm-mahalanobis", "infonce")}, packages)


def suite_levers(packages: Sequence[str] = LOPO_PACKAGES) -> list[Setting]:
    mltm = {"loss": "mltm", "metric": "euclidean"}
    return _lopo({
        "mltm-nomix": ("m-LTM, no mixtures", {**mltm, "mixtures": 0}),
        "mltm-mlp": ("m-LTM, MLP heads", {**mltm, "model.head": "mlp", "model.head_dropout": 0.1}),
        "mltm-eps0.1": ("m-LTM, ε=0.1", {**mltm, "eps": 0.1}),
        "mltm-prompts": ("m-LTM, prompt ensemble", {**mltm, "model.prompt_templates": ENSEMBLE_TEMPLATES}),
        "mltm-eps0.1-prompts": ("m-LTM, ε=0.1 + prompt ensemble", {**mltm, "eps": 0.1,
                                                                   "model.prompt_templates": ENSEMBLE_TEMPLATES}),
        "infonce-prompts": ("InfoNCE, prompt ensemble", {"loss": "infonce", "metric": "euclidean",
                                                         "model.prompt_templates": ENSEMBLE_TEMPLATES}),
    }, packages)


#: The analysis suite: the main methods and the soft-label contrastive loss.
ANALYSIS_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    **METHODS,
    "softlabel0.05": ("soft-label contrastive (τ_q=0.05)", {"loss": "softlabel", "metric": "euclidean",
                                                            "target_temperature": 0.05}),
    "softlabel0.1": ("soft-label contrastive (τ_q=0.1)", {"loss": "softlabel", "metric": "euclidean",
                                                          "target_temperature": 0.1}),
}

#: The multilingual suite's methods (``languages`` comes from the base config,
#: ``configs/multilingual_base.yaml``).
ML_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "en-mltm": ("m-LTM, English captions only", {"loss": "mltm"}),
    "en-infonce": ("InfoNCE, English captions only", {"loss": "infonce"}),
    "kcl": ("KCL (InfoNCE terms)", {"loss": "kcl"}),
    "kcl-ot": ("KCL-OT (m-LTM terms)", {"loss": "kcl_mltm"}),
    "cacl": ("CACL (InfoNCE terms)", {"loss": "cacl"}),
    "cacl-ot": ("CACL-OT (m-LTM terms)", {"loss": "cacl_mltm"}),
}


#: Two complementary halves of ESC-50 for the class-disjoint zero-shot control.
HOLDOUT_HALVES: dict[str, list[str]] = {"A": list(ESC50_CLASSES[0::2]), "B": list(ESC50_CLASSES[1::2])}


def suite_analysis(packages: Sequence[str] = LOPO_PACKAGES) -> list[Setting]:
    out = [Setting(name, label, dict(ov)) for name, (label, ov) in ANALYSIS_METHODS.items()]
    for name in ("mltm-euclidean", "infonce"):
        label, ov = METHODS[name]
        out += [Setting(f"{name}-hold{half}", f"{label}, ESC-50 half {half} held out",
                        {**ov, "exclude_classes": classes})
                for half, classes in HOLDOUT_HALVES.items()]
    return out


def suite_multilingual(packages: Sequence[str] = LOPO_PACKAGES) -> list[Setting]:
    return [Setting(f"fold{f}-{name}", label, {**ov, "cv_folds": ML_FOLDS, "cv_fold": f}, f"fold {f}")
            for f in range(ML_FOLDS) for name, (label, ov) in ML_METHODS.items()]


def suite_tune(packages: Sequence[str] = LOPO_PACKAGES) -> list[Setting]:
    variants = {
        "base": {}, "lr3e-3": {"lr": 3e-3}, "lr3e-4": {"lr": 3e-4}, "epochs40": {"epochs": 40},
        "epochs10": {"epochs": 10}, "mlp": {"model.head": "mlp", "model.head_dropout": 0.1},
        "bs64": {"batch_size": 64}, "bs256": {"batch_size": 256}, "wd0.01": {"optimizer": "adamw", "weight_decay": 0.01},
    }
    return [Setting(f"tune-{k}", f"m-LTM {k}", {"loss": "mltm", "metric": "euclidean", **v}, eval_split="validation")
            for k, v in variants.items()]


SUITES: dict[str, Callable[[Sequence[str]], list[Setting]]] = {
    "main": suite_main, "noise": suite_noise, "eps": suite_eps, "lopo": suite_lopo, "levers": suite_levers,
    "tune": suite_tune, "analysis": suite_analysis, "multilingual": suite_multilingual,
}


# -- one run ---------------------------------------------------------------------------------

def run_config(base: dict[str, Any], setting: Setting, seed: int, out: Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """The training config of one run: base ← CLI overrides ← setting ← seed and output folder."""
    data = apply_overrides(base, list(overrides))
    items = [f"{k}={json.dumps(v)}" for k, v in setting.overrides.items()]
    data = apply_overrides(data, items + [f"seed={seed}", f"out={json.dumps(str(out))}", "progress=false"])
    return TrainConfig.from_dict(data)


def load_clips(config: TrainConfig) -> list[Clip]:
    """The run's clips as training sees them (language filter and cross-validation split applied)."""
    clips: list[Clip] = []
    for spec in config.data:
        clips += load_dataset(spec, config.data_format)
    return select_clips(clips, config)


def eval_clips(config: TrainConfig, setting: Setting) -> list[Clip]:
    """The clips a setting is evaluated on (all packages unless ``eval_packages``)."""
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
    feats, ok = audio_features(model, clips, config.features_cache, config.feature_batch_size,
                               config.max_duration_s, progress=False)
    clips = [clips[i] for i in ok]
    captions = [t for c in clips for t in c.captions]

    def embed_text(texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return model.project_text(text_features(model, texts, config.features_cache, progress=False)
                                      .to(model.device)).float().cpu()

    with torch.no_grad():
        audio = model.project_audio(feats.to(model.device)).float().cpu()
    text = embed_text(captions)
    label_set = cached_label_set(model, config.features_cache) if any(c.esc50 in ESC50_CLASSES for c in clips) else None
    result = evaluate_embeddings(model, clips, audio, text, label_set, modes)
    per_clip = owner_means(text, torch.tensor([i for i, c in enumerate(clips) for _ in c.captions]), len(clips))
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
    for part in ([c for c in data.train if c.esc50 in ESC50_CLASSES], [c for c in test_clips if c.esc50 in ESC50_CLASSES]):
        feats, ok = audio_features(model, part, config.features_cache, config.feature_batch_size,
                                   config.max_duration_s, progress=False)
        parts.append((feats.float().cpu(), [str(part[i].esc50) for i in ok]))
    return probe_report(parts[0][0], parts[0][1], parts[1][0], parts[1][1], seen, seed=config.seed)


def _flatten(prefix: str, value: Any, flat: dict[str, float]) -> None:
    """Numbers of a nested dict into ``flat`` under dotted keys after ``prefix`` (a prefix that
    ends in ``/`` is followed directly by the first key: ``structure/knn.cosine.10``)."""
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}{key}" if not prefix or prefix.endswith("/") else f"{prefix}.{key}", sub, flat)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        flat[prefix] = float(value)


def flatten_result(result: dict[str, Any]) -> dict[str, float]:
    """Nested evaluation result → ``{"cosine/t2a.R@1": …, "cosine/zs.top1": …, "gap": …}``, plus
    ``structure/knn.cosine.10``, ``leak/cosine/seen.top1``, ``probe/unseen.top5``,
    ``ml/cosine/fr/t2a.mAP@10``, ``ml/cosine/mean/t2a.R@1`` and ``ml/cosine/mrv.t2a`` when present."""
    short = {"text_to_audio": "t2a", "audio_to_text": "a2t", "zeroshot": "zs"}
    flat: dict[str, float] = {"gap": float(result["modality_gap"]), "n_clips": float(result["n_clips"])}
    for mode, entry in result["modes"].items():
        for part, values in entry.items():
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    flat[f"{mode}/{short[part]}.{key}"] = float(value)
    if "structure" in result:
        _flatten("structure/", {k: v for k, v in result["structure"].items() if k != "n"}, flat)
    for mode, split in result.get("leakage", {}).items():
        _flatten(f"leak/{mode}/", split, flat)
    if result.get("probe"):
        _flatten("probe/", result["probe"], flat)
    for mode, entry in result.get("multilingual", {}).items():
        for lang, values in entry["languages"].items():
            for part, metrics in values.items():
                _flatten(f"ml/{mode}/{lang}/{short[part]}", metrics, flat)
        for part, metrics in entry["mean"].items():
            _flatten(f"ml/{mode}/mean/{short[part]}", metrics, flat)
        for part, value in entry.get("mrv", {}).items():
            flat[f"ml/{mode}/mrv.{short[part]}"] = float(value)
    return flat


def load_result(config: TrainConfig, run_dir: Path) -> dict[str, Any] | None:
    """The stored result of a run if it exists and was made with ``config``; else ``None``."""
    result_path = run_dir / "result.json"
    if not result_path.is_file():
        return None
    record = json.loads(result_path.read_text(encoding="utf-8"))
    if record.get("config") != config.to_dict():
        logger.info("%s: config changed since the stored result", run_dir)
        return None
    record["skipped"] = True
    return record


def run_one(base: dict[str, Any], setting: Setting, seed: int, run_dir: Path, overrides: Sequence[str] = (),
            keep_checkpoints: bool = False, collect: bool = False) -> dict[str, Any] | None:
    """Train and evaluate one (setting, seed), or load its result when it already exists.

    With ``collect`` nothing is trained: a missing result gives ``None``.
    """
    config = run_config(base, setting, seed, run_dir / "train", overrides)
    record = load_result(config, run_dir)
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
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(result_path)
    return record


# -- aggregation -----------------------------------------------------------------------------

def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of finite values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per setting: ``{"label", "group", "n_seeds", "metrics": {key: [mean, std]}, "val_score": [mean, std]}``."""
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_setting.setdefault(r["setting"], []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for name, runs in by_setting.items():
        keys = sorted({k for r in runs for k in r["metrics"]})
        out[name] = {
            "label": runs[0]["label"], "group": runs[0]["group"], "family": runs[0].get("family"),
            "n_seeds": len(runs), "seeds": sorted(r["seed"] for r in runs),
            "metrics": {k: list(mean_std([r["metrics"].get(k, float("nan")) for r in runs])) for k in keys},
            "val_score": list(mean_std([r.get("val_score") for r in runs])),
            "train_seconds": list(mean_std([r.get("train_seconds") for r in runs])),
        }
    return out


def choose_on_validation(agg: dict[str, dict[str, Any]]) -> dict[str, str]:
    """For each (group, family) of candidate settings, the one with the best mean validation score."""
    best: dict[tuple[str, str], str] = {}
    for name, a in agg.items():
        if not a.get("family"):
            continue
        key = (a["group"], a["family"])
        if key not in best or a["val_score"][0] > agg[best[key]]["val_score"][0]:
            best[key] = name
    return {f"{g}|{f}": name for (g, f), name in best.items()}


def lopo_summary(records: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per method (row label): for each seed the mean over held-out packages, then mean ± std over
    seeds. Zero-shot means are over the packages that have ESC-50-labelled clips."""
    by_label: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for r in records:
        by_label.setdefault(r["label"], {}).setdefault(r["seed"], []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for label, seeds in by_label.items():
        metrics = {}
        for key in keys:
            per_seed = []
            for runs in seeds.values():
                vals = [r["metrics"][key] for r in runs if key in r["metrics"]]
                if vals:
                    per_seed.append(float(np.mean(vals)))
            metrics[key] = list(mean_std(per_seed))
        packages = sorted({r["group"] for runs in seeds.values() for r in runs})
        out[label] = {"metrics": metrics, "n_seeds": len(seeds), "packages": packages}
    return out


# -- tables ----------------------------------------------------------------------------------

COLUMNS: tuple[tuple[str, str], ...] = (
    ("T→A R@1", "t2a.R@1"), ("R@5", "t2a.R@5"), ("R@10", "t2a.R@10"), ("mAP@10", "t2a.mAP@10"),
    ("A→T R@1", "a2t.R@1"), ("R@5", "a2t.R@5"), ("R@10", "a2t.R@10"), ("mAP@10", "a2t.mAP@10"),
    ("ZS top-1", "zs.top1"), ("ZS top-5", "zs.top5"),
)


def fmt(pair: Sequence[float] | None, digits: int = 3) -> str:
    """``[mean, std]`` → ``"0.123 ± 0.004"`` (``–`` when missing)."""
    if not pair or pair[0] is None or not math.isfinite(pair[0]):
        return "–"
    return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render(suite: str, payload: dict[str, Any]) -> str:
    """The Markdown of a suite's results (tables + the command that produced them)."""
    agg: dict[str, dict[str, Any]] = payload["aggregates"]
    seeds = payload["seeds"]
    parts = [f"## Experiments: {suite}", "",
             f"Command: `{payload['command']}`", "",
             f"Mean ± sample std over seeds {seeds} (ddof=1); {payload['eval_note']}", ""]
    if payload.get("missing"):
        parts += [f"**Incomplete:** {len(payload['missing'])} run(s) not finished and left out: "
                  + ", ".join(payload["missing"]), ""]
    head = ["setting", "scoring"] + [c for c, _ in COLUMNS]
    if suite in ("main", "eps", "tune", "analysis"):
        rows = []
        for name, a in agg.items():
            for mode in EVAL_MODES:
                rows.append([a["label"], mode] + [fmt(a["metrics"].get(f"{mode}/{k}")) for _, k in COLUMNS])
        parts.append(_table(head, rows))
        parts += ["", _table(["setting", "modality gap", "val t2a mAP@10 (best epoch)", "train s/run"],
                             [[a["label"], fmt(a["metrics"].get("gap")), fmt(a["val_score"]), fmt(a["train_seconds"], 1)]
                              for a in agg.values()])]
    elif suite == "noise":
        chosen = payload.get("chosen", {})
        shown = [n for n, a in agg.items() if not a.get("family") or n in chosen.values()]
        cols = [c for c in COLUMNS if c[1] in ("t2a.R@1", "t2a.R@5", "t2a.mAP@10", "a2t.R@1", "a2t.R@5", "a2t.mAP@10", "zs.top1", "zs.top5")]
        rows = [[agg[n]["group"], agg[n]["label"] + (" — chosen on val" if agg[n].get("family") else "")
                 + (f" (seeds {agg[n]['seeds']})" if agg[n]["n_seeds"] != len(seeds) else "")]
                + [fmt(agg[n]["metrics"].get(f"cosine/{k}")) for _, k in cols] for n in shown]
        parts.append("Cosine scoring, test split.")
        parts.append("")
        parts.append(_table(["noise", "method"] + [c for c, _ in cols], rows))
        cand = [[a["group"], a["label"], fmt(a["val_score"]), str(a["seeds"]), "yes" if n in chosen.values() else ""]
                for n, a in agg.items() if a.get("family")]
        parts += ["", "Partial-OT mass s chosen per noise level on validation t2a mAP@10:", "",
                  _table(["noise", "candidate", "val t2a mAP@10", "seeds", "chosen"], cand)]
    if suite == "analysis":
        parts += ["", render_structure(payload), "", render_leakage(payload)]
    elif suite == "multilingual":
        parts.append(render_multilingual(payload))
    elif suite in ("lopo", "levers"):
        summary = payload["summary"]
        for mode in EVAL_MODES:
            parts.append(f"Mean over held-out packages ({mode} scoring):")
            parts.append("")
            rows = [[label, mode] + [fmt(s["metrics"].get(f"{mode}/{k}")) for _, k in COLUMNS]
                    for label, s in summary.items()]
            parts += [_table(["method", "scoring"] + [c for c, _ in COLUMNS], rows), ""]
        cols = [("T→A R@1", "t2a.R@1"), ("T→A R@5", "t2a.R@5"), ("T→A mAP@10", "t2a.mAP@10"),
                ("A→T R@1", "a2t.R@1"), ("A→T R@5", "a2t.R@5"), ("ZS top-1", "zs.top1"), ("ZS top-5", "zs.top5")]
        parts.append("Per held-out package (cosine scoring):")
        parts.append("")
        rows = [[a["group"], a["label"], f"{a['metrics'].get('n_clips', [0])[0]:.0f}",
                 f"{a['metrics'].get('cosine/zs.n', [0])[0]:.0f}"] + [fmt(a["metrics"].get(f"cosine/{k}")) for _, k in cols]
                for a in agg.values()]
        parts.append(_table(["held out", "method", "clips", "ZS clips"] + [c for c, _ in cols], rows))
    return "\n".join(parts) + "\n"


STRUCTURE_PAIRS = (("structure/knn.cosine.10", "k-NN overlap (k=10)"), ("structure/cka", "linear CKA"))
OUTCOMES = (("cosine/t2a.mAP@10", "T→A mAP@10"), ("cosine/a2t.mAP@10", "A→T mAP@10"),
            ("cosine/zs.top1", "ZS top-1"), ("cosine/zs.top5", "ZS top-5"))


def correlations(records: Sequence[dict[str, Any]], leave_out: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Spearman rank correlation over runs between each structure measure and each outcome
    (runs with held-out classes, a different data condition, and the settings named in
    ``leave_out`` are left out)."""
    from scipy.stats import spearmanr

    records = [r for r in records if not r.get("overrides", {}).get("exclude_classes") and r["setting"] not in leave_out]
    out = []
    for x_key, x_label in STRUCTURE_PAIRS:
        for y_key, y_label in OUTCOMES:
            pairs = [(r["metrics"][x_key], r["metrics"][y_key]) for r in records
                     if x_key in r["metrics"] and y_key in r["metrics"]]
            if len(pairs) < 3:
                continue
            xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
            if len(set(xs)) < 2 or len(set(ys)) < 2:  # a constant side: ρ is undefined
                rho, pval = float("nan"), float("nan")
            else:
                rho, pval = spearmanr(xs, ys)
            out.append({"x": x_label, "y": y_label, "rho": float(rho), "p": float(pval), "n": len(pairs)})
    return out


def render_structure(payload: dict[str, Any]) -> str:
    """The structure table (k-NN overlap per k, CKA, beside retrieval and zero-shot) and the
    correlations over runs."""
    agg = payload["aggregates"]
    ks = [str(k) for k in STRUCTURE_KS]
    head = (["method"] + [f"k-NN cos k={k}" for k in ks] + ["k-NN metric k=10", "CKA", "T→A mAP@10", "A→T mAP@10",
                                                            "ZS top-1", "ZS top-5"])
    rows = []
    for a in agg.values():
        m = a["metrics"]
        rows.append([a["label"]] + [fmt(m.get(f"structure/knn.cosine.{k}")) for k in ks]
                    + [fmt(m.get("structure/knn.metric.10")), fmt(m.get("structure/cka"))]
                    + [fmt(m.get(k)) for k, _ in OUTCOMES])
    first = next(iter(agg.values()))["metrics"]
    rows.append(["chance (random k-NN sets)"] + [fmt(first.get(f"structure/chance.{k}")) for k in ks]
                + [fmt(first.get("structure/chance.10")), "", "", "", "", ""])
    lines = ["### Structure of the joint space", "",
             "k-NN graph similarity of paired spaces: for each test clip, the Jaccard overlap of its k nearest "
             "clips in the audio space and of its k nearest in the caption space (mean of its captions' "
             "embeddings); cosine (on unit vectors the Euclidean neighbours are the same) and the model's ground "
             "metric (= Euclidean unless Mahalanobis); linear CKA of the two spaces. Cosine scoring for the outcomes.",
             "", _table(head, rows), "",
             "Spearman rank correlation over the runs (methods × seeds; runs with held-out classes left out):", ""]
    corr = payload.get("correlations", [])
    without = {(c["x"], c["y"]): c for c in payload.get("correlations_without_triplet", [])}
    lines.append(_table(["structure", "outcome", "Spearman ρ", "p", "runs", "ρ without triplet", "p", "runs"],
                        [[c["x"], c["y"], f"{c['rho']:+.2f}", f"{c['p']:.3f}", str(c["n"])]
                         + ([f"{w['rho']:+.2f}", f"{w['p']:.3f}", str(w["n"])] if (w := without.get((c["x"], c["y"])))
                            else ["–", "–", "–"]) for c in corr]))
    return "\n".join(lines)


def render_leakage(payload: dict[str, Any]) -> str:
    """Zero-shot split by classes named in the training captions, beside the linear probe."""
    agg = payload["aggregates"]
    first = next(iter(agg.values()))["metrics"]
    head = ["method", "scoring", "seen top-1", "seen top-5", "unseen top-1", "unseen top-5", "all top-1"]
    rows = []
    for a in agg.values():
        m = a["metrics"]
        for mode in EVAL_MODES:
            rows.append([a["label"], mode] + [fmt(m.get(f"leak/{mode}/{g}.{k}")) for g, k in
                                              (("seen", "top1"), ("seen", "top5"), ("unseen", "top1"),
                                               ("unseen", "top5"), ("all", "top1"))])
    rows.append(["linear probe on frozen audio-backbone features (no text)", "–"]
                + [fmt(first.get(f"probe/{g}.{k}")) for g, k in (("seen", "top1"), ("seen", "top5"), ("unseen", "top1"),
                                                                 ("unseen", "top5"), ("all", "top1"))])
    n_seen, n_unseen = first.get("leak/cosine/seen.n", [0])[0], first.get("leak/cosine/unseen.n", [0])[0]
    c_seen, c_unseen = first.get("leak/cosine/seen.n_classes", [0])[0], first.get("leak/cosine/unseen.n_classes", [0])[0]
    seen = payload.get("seen_classes", {})
    lines = ["### Zero-shot leakage", "",
             f"50-way ESC-50 zero-shot on the labelled test clips, split by whether the clip's class (or a synonym, "
             f"`training.analysis.leakage.ESC50_SYNONYMS`) occurs in the training captions: seen {n_seen:.0f} clips of "
             f"{c_seen:.0f} classes, unseen {n_unseen:.0f} clips of {c_unseen:.0f} classes. The probe is a "
             f"multinomial logistic regression on the frozen audio-backbone features of the "
             f"{first.get('probe/train_clips', [0])[0]:.0f} labelled training clips "
             f"({first.get('probe/train_classes', [0])[0]:.0f} classes); it cannot predict a class with no training clip.",
             "", _table(head, rows), "",
             f"{len(seen)} of 50 ESC-50 classes are named in the training captions: "
             + "; ".join(f"{c} ({', '.join(t)})" for c, t in sorted(seen.items()))]
    return "\n".join(lines)


def render_multilingual(payload: dict[str, Any]) -> str:
    """Per method: fold-mean (then mean ± std over seeds) of the mean over languages, English,
    and MRV; then T→A mAP@10 per language."""
    summary = payload["summary"]
    languages = payload["base"].get("languages", [])
    lines = []
    for mode in EVAL_MODES:
        head = ["method", "T→A R@1", "T→A R@5", "T→A mAP@10", "A→T R@1", "A→T mAP@10", "English T→A mAP@10",
                "MRV T→A", "MRV A→T"]
        rows = []
        for label, sm in summary.items():
            m = sm["metrics"]
            rows.append([label] + [fmt(m.get(f"ml/{mode}/mean/{k}")) for k in
                                   ("t2a.R@1", "t2a.R@5", "t2a.mAP@10", "a2t.R@1", "a2t.mAP@10")]
                        + [fmt(m.get(f"ml/{mode}/en/t2a.mAP@10")), fmt(m.get(f"ml/{mode}/mrv.t2a"), 2),
                           fmt(m.get(f"ml/{mode}/mrv.a2t"), 2)])
        lines += [f"Mean over the {len(languages)} languages ({mode} scoring); MRV = mean rank variance of the "
                  "correct item across languages (lower is more consistent):", "", _table(head, rows), ""]
    rows = [[label] + [fmt(sm["metrics"].get(f"ml/cosine/{lang}/t2a.mAP@10")) for lang in languages]
            for label, sm in summary.items()]
    lines += ["T→A mAP@10 per language (cosine scoring):", "", _table(["method"] + languages, rows)]
    return "\n".join(lines)


# -- driver ----------------------------------------------------------------------------------

EVAL_NOTES = {
    "main": "corpus test split; zero-shot 50-way ESC-50 on its ESC-50-labelled clips.",
    "eps": "corpus test split; zero-shot 50-way ESC-50 on its ESC-50-labelled clips.",
    "noise": "corpus test split (clean captions); noise shuffles captions of training pairs (clips + mixtures).",
    "lopo": "train/select on the other packages' train/validation splits; evaluate on ALL clips of the "
            "held-out package; zero-shot 50-way ESC-50 on its ESC-50-labelled clips; mixtures only of two kept sources.",
    "tune": "VALIDATION split (used to choose the base config; never the test split).",
}
EVAL_NOTES["levers"] = EVAL_NOTES["lopo"]
EVAL_NOTES["analysis"] = EVAL_NOTES["main"]
EVAL_NOTES["multilingual"] = (f"multilingual split (Tux Paint descriptions and their translations), {ML_FOLDS}-fold "
                              "cross-validation by recording group: each fold tests its clips once, the next fold "
                              "selects the epoch; per seed the metrics are averaged over folds. Every caption in a "
                              "language is a query against the fold's test clips.")


def run_suite(
    suite: str,
    base: dict[str, Any],
    seeds: Sequence[int],
    out_dir: Path,
    runs_dir: Path,
    overrides: Sequence[str] = (),
    command: str = "",
    only: Sequence[str] = (),
    keep_checkpoints: bool = False,
    packages: Sequence[str] = LOPO_PACKAGES,
    collect: bool = False,
) -> dict[str, Any]:
    """Run every (setting, seed) of ``suite`` (skipping finished ones), aggregate, write the
    JSON and Markdown into ``out_dir``; return the JSON payload. With ``collect``, only
    aggregate the runs already finished (the missing ones are listed in the payload)."""
    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r}; choose from {sorted(SUITES)}")
    settings = SUITES[suite](packages)
    if only:
        settings = [s for s in settings if any(o in s.name for o in only)]
        if not settings:
            raise ConfigError(f"--only {list(only)} matches no setting of suite {suite}")
    total = len(settings) * len(seeds)
    records: list[dict[str, Any]] = []
    missing: list[str] = []
    began = time.time()
    for n, (setting, seed) in enumerate(((s, k) for s in settings for k in seeds), 1):
        run_dir = runs_dir / suite / setting.name / f"seed{seed}"
        t0 = time.time()
        record = run_one(base, setting, seed, run_dir, overrides, keep_checkpoints, collect)
        if record is None:
            missing.append(f"{setting.name}/seed{seed}")
            continue
        m = record["metrics"]
        logger.info("[%d/%d] %s %s seed %d: %s t2a R@5 %.3f, a2t R@5 %.3f, ZS top-1 %s (train %.1fs, %.1fs in all)",
                    n, total, suite, setting.name, seed, "skipped (done)," if record.get("skipped") else "",
                    m.get("cosine/t2a.R@5", float("nan")), m.get("cosine/a2t.R@5", float("nan")),
                    f"{m['cosine/zs.top1']:.3f}" if "cosine/zs.top1" in m else "–",
                    record.get("train_seconds", 0.0), time.time() - t0)
        records.append(record)
    if not records:
        raise ConfigError(f"suite {suite}: no finished run to aggregate")
    agg = aggregate(records)
    payload: dict[str, Any] = {
        "suite": suite, "command": command, "seeds": list(seeds), "overrides": list(overrides), "missing": missing,
        "eval_note": EVAL_NOTES[suite], "base": base, "wall_seconds": round(time.time() - began, 1),
        "runs": [{k: v for k, v in r.items() if k not in ("result", "config", "skipped")} for r in records],
        "aggregates": agg,
    }
    if suite == "noise":
        payload["chosen"] = choose_on_validation(agg)
    if suite in ("lopo", "levers", "multilingual"):
        keys = sorted({k for r in records for k in r["metrics"]})
        payload["summary"] = lopo_summary(records, keys)
    if suite == "analysis":
        payload["correlations"] = correlations(records)
        payload["correlations_without_triplet"] = correlations(records, leave_out=("triplet",))
        payload["seen_classes"] = next((r["result"].get("seen_classes", {}) for r in records if "result" in r), {})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{suite}.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    markdown = render(suite, payload)
    (out_dir / f"{suite}.md").write_text(markdown, encoding="utf-8")
    return payload


def main(argv: list[str] | None = None) -> int:
    """``experiments --suite S [--base FILE] [--seeds …] [--out DIR] [--runs DIR] [--set k=v …]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m training experiments", description="run an experiment suite")
    parser.add_argument("--suite", required=True, choices=sorted(SUITES))
    parser.add_argument("--base", default="configs/corpus_base.yaml", help="base training config (YAML/JSON)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="results", help="folder of <suite>.json and <suite>.md")
    parser.add_argument("--runs", default="artifacts/experiments", help="folder of the runs (checkpoints, per-run JSON)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base-config key for every run; repeatable")
    parser.add_argument("--only", nargs="*", default=[], help="run only settings whose name contains one of these")
    parser.add_argument("--packages", nargs="+", default=list(LOPO_PACKAGES), help="held-out packages of lopo/levers")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--collect", action="store_true", help="train nothing: aggregate the runs already finished")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each run's last/ checkpoint")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # --collect only re-aggregates finished runs: the command that produces them is the one without it
    command = "python -m training experiments " + " ".join(shlex.quote(a) for a in argv if a != "--collect")
    try:
        base = read_config_file(args.base)
        payload = run_suite(args.suite, base, args.seeds, Path(args.out), Path(args.runs), args.overrides,
                            command, args.only, args.keep_checkpoints, args.packages, args.collect)
    except ATRError as exc:
        logger.error("%s", exc)
        return 1
    sys.stdout.write(render(args.suite, payload))
    return 0
