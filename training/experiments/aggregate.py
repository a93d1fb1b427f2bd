"""Aggregation of a suite's runs: mean ± sample std over seeds, the per-package summary, the
validation choice among candidate settings, and the structure-vs-outcome correlations."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from training.experiments import metrics as mk

#: Structure measures and outcomes correlated over runs: (metric key, label).
STRUCTURE_PAIRS = ((mk.knn("cosine", 10), "k-NN overlap (k=10)"), (mk.CKA, "linear CKA"))
OUTCOMES = ((mk.scored("cosine", mk.metric(mk.T2A, mk.MAP10)), "T→A mAP@10"),
            (mk.scored("cosine", mk.metric(mk.A2T, mk.MAP10)), "A→T mAP@10"),
            (mk.scored("cosine", mk.metric(mk.ZS, mk.TOP1)), "ZS top-1"),
            (mk.scored("cosine", mk.metric(mk.ZS, mk.TOP5)), "ZS top-5"))


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


def seed_means(records: Sequence[dict[str, Any]], key: str) -> list[float]:
    """Per seed (in seed order), the mean of metric ``key`` over that seed's runs that have it (over
    the held-out packages, in a leave-one-package-out suite); seeds with none are left out."""
    by_seed: dict[int, list[float]] = {}
    for r in records:
        if key in r["metrics"]:
            by_seed.setdefault(int(r["seed"]), []).append(r["metrics"][key])
    return [float(np.mean(by_seed[seed])) for seed in sorted(by_seed)]


def lopo_summary(records: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per method (row label): for each seed the mean over held-out packages, then mean ± std over
    seeds. Zero-shot means are over the packages that have ESC-50-labelled clips."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_label.setdefault(r["label"], []).append(r)
    return {label: {"metrics": {key: list(mean_std(seed_means(runs, key))) for key in keys},
                    "n_seeds": len({r["seed"] for r in runs}), "packages": sorted({r["group"] for r in runs})}
            for label, runs in by_label.items()}


def correlations(records: Sequence[dict[str, Any]], leave_out: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Spearman rank correlation over runs between each structure measure and each outcome
    (runs with held-out classes, a different data condition, and the settings named in
    ``leave_out`` are left out)."""
    from scipy.stats import spearmanr

    records = [r for r in records
               if not r.get("overrides", {}).get("exclude_classes") and r["setting"] not in leave_out]
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
