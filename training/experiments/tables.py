"""The Markdown tables of the experiment suites. Each ``render_*`` takes a suite's JSON payload
and returns the lines below the common header (:func:`render_header`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from atr_demo.fileio import markdown_table

from training.experiments import metrics as mk
from training.experiments.aggregate import OUTCOMES
from training.experiments.runs import EVAL_MODES, STRUCTURE_KS

Column = tuple[str, str]  # (header, metric name: mk.metric(part, name))

T2A_R1, T2A_R5, T2A_R10, T2A_MAP = (mk.metric(mk.T2A, n) for n in (mk.R1, mk.R5, mk.R10, mk.MAP10))
A2T_R1, A2T_R5, A2T_R10, A2T_MAP = (mk.metric(mk.A2T, n) for n in (mk.R1, mk.R5, mk.R10, mk.MAP10))
ZS_TOP1, ZS_TOP5, ZS_N = (mk.metric(mk.ZS, n) for n in (mk.TOP1, mk.TOP5, mk.N))

#: The retrieval and zero-shot columns of the per-setting tables.
COLUMNS: tuple[Column, ...] = (
    ("T→A R@1", T2A_R1), ("R@5", T2A_R5), ("R@10", T2A_R10), ("mAP@10", T2A_MAP),
    ("A→T R@1", A2T_R1), ("R@5", A2T_R5), ("R@10", A2T_R10), ("mAP@10", A2T_MAP),
    ("ZS top-1", ZS_TOP1), ("ZS top-5", ZS_TOP5),
)
#: The noise table: :data:`COLUMNS` without R@10.
NOISE_COLUMNS: tuple[Column, ...] = tuple(c for c in COLUMNS if c[1] not in (T2A_R10, A2T_R10))
#: The per-package table of the held-out-package suites.
PACKAGE_COLUMNS: tuple[Column, ...] = (
    ("T→A R@1", T2A_R1), ("T→A R@5", T2A_R5), ("T→A mAP@10", T2A_MAP), ("A→T R@1", A2T_R1), ("A→T R@5", A2T_R5),
    ("ZS top-1", ZS_TOP1), ("ZS top-5", ZS_TOP5),
)
#: The leakage and probe columns: (class group, metric name).
LEAK_COLUMNS = ((mk.SEEN, mk.TOP1), (mk.SEEN, mk.TOP5), (mk.UNSEEN, mk.TOP1), (mk.UNSEEN, mk.TOP5), (mk.ALL, mk.TOP1))
#: The multilingual table's mean-over-languages columns.
ML_COLUMNS = (T2A_R1, T2A_R5, T2A_MAP, A2T_R1, A2T_MAP)


def fmt(pair: Sequence[float] | None, digits: int = 3) -> str:
    """``[mean, std]`` → ``"0.123 ± 0.004"`` (``–`` when missing)."""
    if not pair or pair[0] is None or not math.isfinite(pair[0]):
        return "–"
    return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def _first(metrics: dict[str, Any], key: str) -> float:
    """The mean of an aggregated metric, 0 when missing (counts in the table text)."""
    return metrics.get(key, [0])[0]


def render_header(suite: str, payload: dict[str, Any]) -> list[str]:
    """Title, command, aggregation note and the unfinished runs."""
    parts = [f"## Experiments: {suite}", "",
             f"Command: `{payload['command']}`", "",
             f"Mean ± sample std over seeds {payload['seeds']} (ddof=1); {payload['eval_note']}", ""]
    if payload.get("missing"):
        parts += [f"**Incomplete:** {len(payload['missing'])} run(s) not finished and left out: "
                  + ", ".join(payload["missing"]), ""]
    return parts


def render_settings(payload: dict[str, Any]) -> list[str]:
    """Every setting × scoring mode, then modality gap, validation score and training time per setting."""
    agg: dict[str, dict[str, Any]] = payload["aggregates"]
    rows = [[a["label"], mode] + [fmt(a["metrics"].get(mk.scored(mode, k))) for _, k in COLUMNS]
            for a in agg.values() for mode in EVAL_MODES]
    return [markdown_table(["setting", "scoring"] + [c for c, _ in COLUMNS], rows), "",
            markdown_table(["setting", "modality gap", "val t2a mAP@10 (best epoch)", "train s/run"],
                   [[a["label"], fmt(a["metrics"].get(mk.GAP)), fmt(a["val_score"]), fmt(a["train_seconds"], 1)]
                    for a in agg.values()])]


def render_noise(payload: dict[str, Any]) -> list[str]:
    """Ordinary rows and the validation-chosen partial-OT mass per noise level; then the candidates."""
    agg: dict[str, dict[str, Any]] = payload["aggregates"]
    n_seeds = len(payload["seeds"])
    chosen = payload.get("chosen", {})
    shown = [n for n, a in agg.items() if not a.get("family") or n in chosen.values()]
    rows = [[agg[n]["group"], agg[n]["label"] + (" — chosen on val" if agg[n].get("family") else "")
             + (f" (seeds {agg[n]['seeds']})" if agg[n]["n_seeds"] != n_seeds else "")]
            + [fmt(agg[n]["metrics"].get(mk.scored("cosine", k))) for _, k in NOISE_COLUMNS] for n in shown]
    cand = [[a["group"], a["label"], fmt(a["val_score"]), str(a["seeds"]), "yes" if n in chosen.values() else ""]
            for n, a in agg.items() if a.get("family")]
    return ["Cosine scoring, test split.", "",
            markdown_table(["noise", "method"] + [c for c, _ in NOISE_COLUMNS], rows),
            "", "Partial-OT mass s chosen per noise level on validation t2a mAP@10:", "",
            markdown_table(["noise", "candidate", "val t2a mAP@10", "seeds", "chosen"], cand)]


def render_held_out(payload: dict[str, Any]) -> list[str]:
    """Per method the mean over held-out packages (per scoring mode), then every package."""
    summary: dict[str, dict[str, Any]] = payload["summary"]
    parts = []
    for mode in EVAL_MODES:
        rows = [[label, mode] + [fmt(s["metrics"].get(mk.scored(mode, k))) for _, k in COLUMNS]
                for label, s in summary.items()]
        parts += [f"Mean over held-out packages ({mode} scoring):", "",
                  markdown_table(["method", "scoring"] + [c for c, _ in COLUMNS], rows), ""]
    rows = [[a["group"], a["label"], f"{_first(a['metrics'], mk.N_CLIPS):.0f}",
             f"{_first(a['metrics'], mk.scored('cosine', ZS_N)):.0f}"]
            + [fmt(a["metrics"].get(mk.scored("cosine", k))) for _, k in PACKAGE_COLUMNS]
            for a in payload["aggregates"].values()]
    parts += ["Per held-out package (cosine scoring):", "",
              markdown_table(["held out", "method", "clips", "ZS clips"] + [c for c, _ in PACKAGE_COLUMNS], rows)]
    return parts


def render_analysis(payload: dict[str, Any]) -> list[str]:
    """The per-setting tables, the structure of the joint space and the zero-shot leakage."""
    return render_settings(payload) + ["", render_structure(payload), "", render_leakage(payload)]


def render_structure(payload: dict[str, Any]) -> str:
    """The structure table (k-NN overlap per k, CKA, beside retrieval and zero-shot) and the
    correlations over runs."""
    agg = payload["aggregates"]
    head = (["method"] + [f"k-NN cos k={k}" for k in STRUCTURE_KS]
            + ["k-NN metric k=10", "CKA", "T→A mAP@10", "A→T mAP@10", "ZS top-1", "ZS top-5"])
    rows = []
    for a in agg.values():
        m = a["metrics"]
        rows.append([a["label"]] + [fmt(m.get(mk.knn("cosine", k))) for k in STRUCTURE_KS]
                    + [fmt(m.get(mk.knn("metric", 10))), fmt(m.get(mk.CKA))]
                    + [fmt(m.get(k)) for k, _ in OUTCOMES])
    first = next(iter(agg.values()))["metrics"]
    rows.append(["chance (random k-NN sets)"] + [fmt(first.get(mk.chance(k))) for k in STRUCTURE_KS]
                + [fmt(first.get(mk.chance(10))), "", "", "", "", ""])
    lines = ["### Structure of the joint space", "",
             "k-NN graph similarity of paired spaces: for each test clip, the Jaccard overlap of its k nearest "
             "clips in the audio space and of its k nearest in the caption space (mean of its captions' "
             "embeddings); cosine (on unit vectors the Euclidean neighbours are the same) and the model's ground "
             "metric (= Euclidean unless Mahalanobis); linear CKA of the two spaces. Cosine scoring for the outcomes.",
             "", markdown_table(head, rows), "",
             "Spearman rank correlation over the runs (methods × seeds; runs with held-out classes left out):", ""]
    corr = payload.get("correlations", [])
    without = {(c["x"], c["y"]): c for c in payload.get("correlations_without_triplet", [])}
    lines.append(markdown_table(["structure", "outcome", "Spearman ρ", "p", "runs", "ρ without triplet", "p", "runs"],
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
            rows.append([a["label"], mode] + [fmt(m.get(mk.leak(mode, g, k))) for g, k in LEAK_COLUMNS])
    rows.append(["linear probe on frozen audio-backbone features (no text)", "–"]
                + [fmt(first.get(mk.probe(mk.metric(g, k)))) for g, k in LEAK_COLUMNS])
    n_seen, n_unseen = (_first(first, mk.leak("cosine", g, mk.N)) for g in (mk.SEEN, mk.UNSEEN))
    c_seen, c_unseen = (_first(first, mk.leak("cosine", g, mk.N_CLASSES)) for g in (mk.SEEN, mk.UNSEEN))
    seen = payload.get("seen_classes", {})
    lines = ["### Zero-shot leakage", "",
             f"50-way ESC-50 zero-shot on the labelled test clips, split by whether the clip's class (or a synonym, "
             f"`training.analysis.leakage.ESC50_SYNONYMS`) occurs in the training captions: seen {n_seen:.0f} clips of "
             f"{c_seen:.0f} classes, unseen {n_unseen:.0f} clips of {c_unseen:.0f} classes. The probe is a "
             f"multinomial logistic regression on the frozen audio-backbone features of the "
             f"{_first(first, mk.probe('train_clips')):.0f} labelled training clips "
             f"({_first(first, mk.probe('train_classes')):.0f} classes); it cannot predict a class with no "
             f"training clip.",
             "", markdown_table(head, rows), "",
             f"{len(seen)} of 50 ESC-50 classes are named in the training captions: "
             + "; ".join(f"{c} ({', '.join(t)})" for c, t in sorted(seen.items()))]
    return "\n".join(lines)


def render_multilingual(payload: dict[str, Any]) -> list[str]:
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
            rows.append([label] + [fmt(m.get(mk.ml(mode, mk.ML_MEAN, k))) for k in ML_COLUMNS]
                        + [fmt(m.get(mk.ml(mode, "en", T2A_MAP))), fmt(m.get(mk.mrv(mode, mk.T2A)), 2),
                           fmt(m.get(mk.mrv(mode, mk.A2T)), 2)])
        lines += [f"Mean over the {len(languages)} languages ({mode} scoring); MRV = mean rank variance of the "
                  "correct item across languages (lower is more consistent):", "", markdown_table(head, rows), ""]
    rows = [[label] + [fmt(sm["metrics"].get(mk.ml("cosine", lang, T2A_MAP))) for lang in languages]
            for label, sm in summary.items()]
    lines += ["T→A mAP@10 per language (cosine scoring):", "", markdown_table(["method"] + languages, rows)]
    return lines
