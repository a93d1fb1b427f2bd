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

from training.config import TrainConfig, apply_overrides, read_config_file
from training.datasets import Clip, filter_packages, load_dataset, split_clips
from training.evaluate import evaluate_embeddings
from training.features import audio_features, text_features
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
    "tune": suite_tune,
}


# -- one run ---------------------------------------------------------------------------------

def run_config(base: dict[str, Any], setting: Setting, seed: int, out: Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """The training config of one run: base ← CLI overrides ← setting ← seed and output folder."""
    data = apply_overrides(base, list(overrides))
    items = [f"{k}={json.dumps(v)}" for k, v in setting.overrides.items()]
    data = apply_overrides(data, items + [f"seed={seed}", f"out={json.dumps(str(out))}", "progress=false"])
    return TrainConfig.from_dict(data)


def load_clips(config: TrainConfig) -> list[Clip]:
    clips: list[Clip] = []
    for spec in config.data:
        clips += load_dataset(spec, config.data_format)
    return clips


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


def evaluate_cached(model: ATRModel, clips: Sequence[Clip], config: TrainConfig, modes: Sequence[str] = EVAL_MODES) -> dict[str, Any]:
    """:func:`training.evaluate.evaluate_clips` on cached backbone features (no audio decoding
    when the cache holds the clips); clips whose audio cannot be decoded are left out."""
    model.eval()
    feats, ok = audio_features(model, clips, config.features_cache, config.feature_batch_size,
                               config.max_duration_s, progress=False)
    clips = [clips[i] for i in ok]
    captions = [t for c in clips for t in c.captions]
    with torch.no_grad():
        audio = model.project_audio(feats.to(model.device)).float().cpu()
        text = model.project_text(text_features(model, captions, config.features_cache, progress=False).to(model.device)).float().cpu()
    label_set = cached_label_set(model, config.features_cache) if any(c.esc50 in ESC50_CLASSES for c in clips) else None
    return evaluate_embeddings(model, clips, audio, text, label_set, modes)


def flatten_result(result: dict[str, Any]) -> dict[str, float]:
    """Nested evaluation result → ``{"cosine/t2a.R@1": …, "cosine/zs.top1": …, "gap": …}``."""
    short = {"text_to_audio": "t2a", "audio_to_text": "a2t", "zeroshot": "zs"}
    flat: dict[str, float] = {"gap": float(result["modality_gap"]), "n_clips": float(result["n_clips"])}
    for mode, entry in result["modes"].items():
        for part, values in entry.items():
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    flat[f"{mode}/{short[part]}.{key}"] = float(value)
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
    result = evaluate_cached(model, eval_clips(config, setting), config)
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
    if suite in ("main", "eps", "tune"):
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
    if suite in ("lopo", "levers"):
        keys = sorted({k for r in records for k in r["metrics"]})
        payload["summary"] = lopo_summary(records, keys)
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
    command = "python -m training experiments " + " ".join(shlex.quote(a) for a in argv)
    try:
        base = read_config_file(args.base)
        payload = run_suite(args.suite, base, args.seeds, Path(args.out), Path(args.runs), args.overrides,
                            command, args.only, args.keep_checkpoints, args.packages, args.collect)
    except ATRError as exc:
        logger.error("%s", exc)
        return 1
    sys.stdout.write(render(args.suite, payload))
    return 0
