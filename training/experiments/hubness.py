"""The hubness suite: scoring-time variants of one trained run, evaluated under leave-one-package-out.

Each run of the suite trains once (the levers' m-LTM ε = 0.1 setting with the 6-template prompt
ensemble) and :func:`evaluate_variants` scores its held-out package in several ways, with no
retraining:

* retrieval (text→audio and audio→text): cosine, transport (the paper's test-time scoring),
  QB-Norm with the dynamic inverted softmax (β = 20 as in the paper, and β chosen on the other
  packages' validation split), CSLS (k = 10) — :mod:`atr_demo.hubness`;
* zero-shot 50-way ESC-50, for three prompt sets (templates only; templates + the single
  built-in description; templates + the 3–5 sound descriptions of
  :data:`atr_demo.zeroshot.ESC50_SOUND_DESCRIPTIONS`): cosine, transport, class-prior
  calibration, centring, QB-Norm, CSLS.

Every bank is drawn from the run's *training* packages only — the held-out package is excluded
from training, so no bank sees the evaluated distribution: training-split captions for
text→audio, training-split clips (their audio, labels unused) for audio→text and zero-shot.
The validation split of the same packages chooses β (β = 20 when it is empty).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from atr_demo.evaluation import audio_to_text_metrics, text_to_audio_metrics, topk_accuracy
from atr_demo.fileio import markdown_table
from atr_demo.hubness import (
    CSLS_K,
    QB_BETA,
    centred,
    class_prior,
    csls,
    dynamic_inverted_softmax,
    k_occurrence,
    prior_corrected,
    skewness,
)
from atr_demo.model import ATRModel
from atr_demo.retrieval import score_matrix
from atr_demo.zeroshot import (
    ESC50_CLASSES,
    ESC50_DESCRIPTIONS,
    ESC50_SOUND_DESCRIPTIONS,
    Descriptions,
    LabelSet,
    embed_labels,
)

from training.analysis.leakage import classes_in_captions, split_accuracy
from training.config import TrainConfig
from training.datasets import Clip
from training.experiments import metrics as mk
from training.experiments.aggregate import lopo_summary, mean_std
from training.features import audio_features, text_features
from training.prepare import PreparedData, clip_captions

logger = logging.getLogger(__name__)

#: Retrieval scorings: name → row label.
RETRIEVAL_VARIANTS: dict[str, str] = {
    "cosine": "cosine", "transport": "transport",
    "qbnorm": f"QB-Norm (dynamic inverted softmax, β={QB_BETA:g})",
    "qbnorm-val": "QB-Norm (dynamic inverted softmax, β chosen on validation)",
    "csls": f"CSLS (k={CSLS_K})", "centred": "centred (bank mean subtracted)",
}
#: Zero-shot scorings: name → column label.
ZS_VARIANTS: dict[str, str] = {
    "cosine": "cosine", "transport": "transport", "prior": "class prior divided out", "centred": "centred",
    "qbnorm": f"QB-Norm β={QB_BETA:g}", "qbnorm-val": "QB-Norm β on val", "csls": f"CSLS k={CSLS_K}",
}
#: Zero-shot prompt sets (each with the run's templates): name → (row label, descriptions).
PROMPT_SETS: dict[str, tuple[str, bool | Descriptions]] = {
    "templates": ("templates only", False),
    "single": ("templates + 1 description (before)", ESC50_DESCRIPTIONS),
    "sound": ("templates + 3-5 sound descriptions (default now)", ESC50_SOUND_DESCRIPTIONS),
}
#: β candidates for QB-Norm chosen on the validation split.
BETA_GRID = (1.0, 2.0, 5.0, 10.0, 20.0, 40.0)
#: Stored with each run's variants; a stored result of another version is re-evaluated from the
#: run's best checkpoint, without retraining (:func:`training.experiments.runs.run_one`).
VERSION = "3: beta grid 1-40, centred retrieval, zero-shot seen/unseen"
#: k of the k-occurrence hubness measure (skewness of N_k).
HUB_K = 10
#: Metric names of the retrieval variants (plus ``skew``: skewness of N_10 over the gallery).
SKEW = "skew"


@dataclass
class Embedded:
    """Joint-space embeddings of clips: ``audio`` (n, d), ``text`` (n_captions, d) of every caption
    in order, ``owner`` (n_captions,) the index of each caption's clip."""

    clips: list[Clip]
    audio: torch.Tensor
    text: torch.Tensor
    owner: torch.Tensor


def embed(model: ATRModel, config: TrainConfig, clips: Sequence[Clip]) -> Embedded:
    """Project the cached backbone features of ``clips`` (undecodable clips left out)."""
    feats, ok = audio_features(model, clips, config.features_cache, config.feature_batch_size,
                               config.max_duration_s, progress=False)
    kept = [clips[i] for i in ok]
    captions = [t for c in kept for t in c.captions]
    with torch.no_grad():
        audio = model.project_audio(feats.to(model.device)).float().cpu()
        text = model.project_text(text_features(model, captions, config.features_cache, progress=False)
                                  .to(model.device)).float().cpu()
    owner = torch.tensor([i for i, c in enumerate(kept) for _ in c.captions], dtype=torch.long)
    return Embedded(kept, audio, text, owner)


def label_set(model: ATRModel, config: TrainConfig, descriptions: bool | Descriptions) -> LabelSet:
    """ESC-50 label embeddings with the run's templates and ``descriptions``, text features cached."""

    def project(prompts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            feats = text_features(model, prompts, config.features_cache, progress=False).to(model.device)
            return model.project_text(feats).float().cpu()

    return embed_labels(model, list(ESC50_CLASSES), model.config.prompt_templates, descriptions, embed=project)


def corrected(variant: str, scores: torch.Tensor, bank_scores: torch.Tensor, beta: float) -> torch.Tensor:
    """``scores`` (n, m) with the bank correction ``variant`` (bank_scores (b, m))."""
    if variant in ("qbnorm", "qbnorm-val"):
        return dynamic_inverted_softmax(scores, bank_scores, beta)
    if variant == "csls":
        return csls(scores, bank_scores, CSLS_K)
    if variant == "centred":
        return centred(scores, bank_scores)
    raise ValueError(f"no bank correction {variant!r}")


def directional(model: ATRModel, queries: torch.Tensor, gallery: torch.Tensor, bank: torch.Tensor, variant: str,
                beta: float) -> torch.Tensor:
    """(n, m) scores of ``queries`` against ``gallery`` under a retrieval ``variant``; ``bank`` (b, d)
    holds the bank queries (same modality as ``queries``)."""
    if variant == "transport":
        return score_matrix(queries, gallery, "transport", metric=model.metric, eps=model.config.eps,
                            mass=model.config.mass)
    cos = queries @ gallery.T
    if variant == "cosine":
        return cos
    return corrected(variant, cos, bank @ gallery.T, beta)


def retrieval_metrics(model: ATRModel, ev: Embedded, banks: tuple[torch.Tensor, torch.Tensor], variant: str,
                      betas: tuple[float, float]) -> dict[str, dict[str, float]]:
    """``{"t2a": {...}, "a2t": {...}}`` of ``ev`` under ``variant``; banks = (captions, audio),
    betas = (text→audio β, audio→text β). ``skew``: skewness of N_10 of the gallery items."""
    t2a = directional(model, ev.text, ev.audio, banks[0], variant, betas[0])
    a2t = directional(model, ev.audio, ev.text, banks[1], variant, betas[1])
    out = {"t2a": text_to_audio_metrics(t2a, ev.owner), "a2t": audio_to_text_metrics(a2t.T, ev.owner)}
    out["t2a"][SKEW] = skewness(k_occurrence(t2a, HUB_K))
    out["a2t"][SKEW] = skewness(k_occurrence(a2t, HUB_K))
    return out


def choose_beta(score: Callable[[float], float]) -> float:
    """The β of :data:`BETA_GRID` with the best ``score(β)`` (ties: the first)."""
    values = [score(b) for b in BETA_GRID]
    return BETA_GRID[int(np.argmax(values))]


def zeroshot_scores(model: ATRModel, audio: torch.Tensor, labels: LabelSet, bank_audio: torch.Tensor,
                    variant: str, beta: float) -> torch.Tensor:
    """(n, 50) zero-shot scores of ``audio`` (n, d) under ``variant``; ``bank_audio`` (b, d) unlabelled."""
    if variant == "transport":
        # as the standard evaluation does: all labelled clips solved jointly
        return score_matrix(audio, labels.embeddings, "transport", metric=model.metric, eps=model.config.eps,
                            mass=model.config.mass)
    cos = audio @ labels.embeddings.T
    if variant == "cosine":
        return cos
    bank_scores = bank_audio @ labels.embeddings.T
    if variant == "prior":
        return prior_corrected(cos, class_prior(bank_scores, model.config.eps), model.config.eps)
    return corrected(variant, cos, bank_scores, beta)


def labelled(ev: Embedded) -> tuple[torch.Tensor, torch.Tensor]:
    """(audio (n_l, d), targets (n_l,)) of the ESC-50-labelled clips of ``ev``."""
    idx = [i for i, c in enumerate(ev.clips) if c.esc50 in ESC50_CLASSES]
    targets = torch.tensor([ESC50_CLASSES.index(str(ev.clips[i].esc50)) for i in idx], dtype=torch.long)
    return ev.audio[torch.tensor(idx, dtype=torch.long)], targets


def evaluate_variants(model: ATRModel, config: TrainConfig, data: PreparedData,
                      test_clips: Sequence[Clip]) -> dict[str, Any]:
    """Every retrieval and zero-shot variant (module docstring) of one trained run.

    Returns ``{"retrieval": {variant: {"t2a": metrics, "a2t": metrics}}, "zeroshot": {prompt set:
    {variant: {"top1", "top5", "n"}}}, "beta": {...}, "bank": {...}}`` (nested numbers, flattened
    by :func:`training.experiments.metrics.flatten_result` under ``var/``).
    """
    model.eval()
    test, train, val = (embed(model, config, clips) for clips in (test_clips, data.train, data.validation))
    banks = (train.text, train.audio)

    betas = {"t2a": QB_BETA, "a2t": QB_BETA}
    if len(val.text):
        on_val = {b: retrieval_metrics(model, val, banks, "qbnorm", (b, b)) for b in BETA_GRID}
        betas = {d: choose_beta(lambda b, d=d: on_val[b][d][mk.MAP10]) for d in betas}
    out: dict[str, Any] = {"version": VERSION, "retrieval": {}, "zeroshot": {}, "beta": dict(betas),
                           "bank": {"captions": len(train.text), "clips": len(train.audio)}}
    for variant in RETRIEVAL_VARIANTS:
        chosen = (betas["t2a"], betas["a2t"]) if variant == "qbnorm-val" else (QB_BETA, QB_BETA)
        out["retrieval"][variant] = retrieval_metrics(model, test, banks, variant, chosen)
    audio, targets = labelled(test)
    if not len(targets):
        return out
    seen = set(classes_in_captions([t for c in data.train + data.mixture_pool
                                    for t in clip_captions(c, config.languages)]))
    val_audio, val_targets = labelled(val)
    for name, (_, descriptions) in PROMPT_SETS.items():
        labels = label_set(model, config, descriptions)
        beta = QB_BETA
        if len(val_targets):
            beta = choose_beta(lambda b, lab=labels: topk_accuracy(
                zeroshot_scores(model, val_audio, lab, train.audio, "qbnorm", b), val_targets)["top1"])
        out["beta"][f"zs.{name}"] = beta
        entry = {}
        for variant in ZS_VARIANTS:
            b = beta if variant == "qbnorm-val" else QB_BETA
            split = split_accuracy(zeroshot_scores(model, audio, labels, train.audio, variant, b), targets,
                                   ESC50_CLASSES, seen)
            entry[variant] = {**split["all"], "seen": split["seen"], "unseen": split["unseen"]}
        out["zeroshot"][name] = entry
    return out


# -- keys, summary and tables ----------------------------------------------------------------

def retrieval_key(variant: str, part: str, name: str) -> str:
    """``var/retrieval.qbnorm.t2a.R@5``."""
    return mk.variant("retrieval", variant, part, name)


def zeroshot_key(prompts: str, variant: str, *name: str) -> str:
    """``var/zeroshot.sound.prior.top1``, ``var/zeroshot.sound.prior.unseen.top1``."""
    return mk.variant("zeroshot", prompts, variant, *name)


def paired_deltas(records: Sequence[dict[str, Any]], pairs: Sequence[tuple[str, str, str]]) -> dict[str, list[float]]:
    """Per (name, key, baseline key): for each seed the mean over held-out packages of key − baseline,
    then mean ± sample std over seeds (a paired difference: same runs, same clips) → ``{name: [mean, std]}``."""
    out: dict[str, list[float]] = {}
    seeds = sorted({r["seed"] for r in records})
    for name, key, base in pairs:
        per_seed = []
        for seed in seeds:
            diffs = [r["metrics"][key] - r["metrics"][base] for r in records
                     if r["seed"] == seed and key in r["metrics"] and base in r["metrics"]]
            if diffs:
                per_seed.append(float(np.mean(diffs)))
        out[name] = list(mean_std(per_seed))
    return out


RETRIEVAL_COLUMNS = (("T→A R@1", "t2a", mk.R1), ("R@5", "t2a", mk.R5), ("R@10", "t2a", mk.R10),
                     ("mAP@10", "t2a", mk.MAP10), ("N₁₀ skew", "t2a", SKEW), ("A→T R@1", "a2t", mk.R1),
                     ("R@5", "a2t", mk.R5), ("mAP@10", "a2t", mk.MAP10), ("N₁₀ skew", "a2t", SKEW))
DELTA_COLUMNS = (("t2a", mk.R5), ("t2a", mk.MAP10), ("a2t", mk.R5), ("a2t", mk.MAP10))


def delta_pairs() -> list[tuple[str, str, str]]:
    """(name, key, baseline key) of every difference the tables show: each retrieval variant − cosine
    (name = the key); each zero-shot variant − cosine scoring of the same prompts (name = the key),
    − the single description with the same scoring (name ``prompts:`` + the key), and − the zero-shot
    before this suite, the single description with cosine scoring (name ``before:`` + the key)."""
    pairs = [(retrieval_key(v, part, name), retrieval_key(v, part, name), retrieval_key("cosine", part, name))
             for v in RETRIEVAL_VARIANTS for part, name in DELTA_COLUMNS]
    for p in PROMPT_SETS:
        for v in ZS_VARIANTS:
            for name in (mk.TOP1, mk.TOP5):
                key = zeroshot_key(p, v, name)
                pairs += [(key, key, zeroshot_key(p, "cosine", name)),
                          ("prompts:" + key, key, zeroshot_key("single", v, name)),
                          ("before:" + key, key, zeroshot_key("single", "cosine", name))]
    return pairs


def hubness_summary(records: Sequence[dict[str, Any]], agg: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``summary`` (mean over held-out packages per seed, then over seeds) and ``deltas`` (the paired
    differences of :func:`delta_pairs`)."""
    keys = sorted({k for r in records for k in r["metrics"]})
    return {"summary": lopo_summary(records, keys), "deltas": paired_deltas(records, delta_pairs())}


def _fmt(pair: Sequence[float] | None, digits: int = 3, sign: bool = False) -> str:
    if not pair or pair[0] is None or not np.isfinite(pair[0]):
        return "–"
    return f"{pair[0]:{'+' if sign else ''}.{digits}f} ± {pair[1]:.{digits}f}"


def _wins(delta: Sequence[float] | None, *stds: float) -> str:
    """``paired / strict``: ``yes`` when the paired gain exceeds its own std (paired), and when it also
    exceeds every given seed std (strict: the stds of the two rows compared); bold when strict."""
    if not delta or not np.isfinite(delta[0]):
        return "–"
    paired = delta[0] > delta[1]
    strict = delta[0] > max([delta[1], *stds])
    text = f"{'yes' if paired else 'no'} / {'yes' if strict else 'no'}"
    return f"**{text}**" if strict else text


PROBE_TOP1, PROBE_TOP5 = (mk.probe(mk.metric(mk.ALL, name)) for name in (mk.TOP1, mk.TOP5))


def render_hubness(payload: dict[str, Any]) -> list[str]:
    """Retrieval per scoring, paired gains over cosine, zero-shot per prompt set × scoring, β chosen."""
    summary = next(iter(payload["summary"].values()))
    m, deltas = summary["metrics"], payload["deltas"]
    rows = [[label] + [_fmt(m.get(retrieval_key(v, part, name)), 2 if name == SKEW else 3)
                       for _, part, name in RETRIEVAL_COLUMNS] for v, label in RETRIEVAL_VARIANTS.items()]
    lines = ["Retrieval, mean over held-out packages (N₁₀ skew: skewness of how often each gallery item is in "
             "a query's top 10; lower = fewer hubs):", "",
             markdown_table(["scoring"] + [c for c, _, _ in RETRIEVAL_COLUMNS], rows), ""]
    head = (["scoring"] + [f"Δ {'T→A' if p == 't2a' else 'A→T'} {n}" for p, n in DELTA_COLUMNS]
            + ["wins T→A R@5", "wins A→T R@5"])
    rows = []
    for v, label in RETRIEVAL_VARIANTS.items():
        if v == "cosine":
            continue
        wins = []
        for part in ("t2a", "a2t"):
            r5 = retrieval_key(v, part, mk.R5)
            wins.append(_wins(deltas.get(r5), m.get(r5, [0, 0])[1],
                              m.get(retrieval_key("cosine", part, mk.R5), [0, 0])[1]))
        rows.append([label] + [_fmt(deltas.get(retrieval_key(v, p, n)), sign=True) for p, n in DELTA_COLUMNS]
                    + wins)
    lines += ["Paired difference to cosine (per seed the mean over packages of variant − cosine, then mean ± std "
              "over seeds); *wins* paired / strict: the gain exceeds its own std / also both rows' seed stds:", "",
              markdown_table(head, rows), ""]
    for name, title in ((mk.TOP1, "top-1"), (mk.TOP5, "top-5")):
        rows = [[label] + [_fmt(m.get(zeroshot_key(p, v, name))) for v in ZS_VARIANTS]
                for p, (label, _) in PROMPT_SETS.items()]
        lines += [f"Zero-shot 50-way ESC-50 {title}, mean over held-out packages with labelled clips "
                  "(rows: prompt sets, each with the 6-template ensemble — 1 description: "
                  "`ESC50_DESCRIPTIONS`, 3-5: `ESC50_SOUND_DESCRIPTIONS`; columns: scoring):", "",
                  markdown_table(["prompts"] + list(ZS_VARIANTS.values()), rows), ""]
    rows = []
    for p, (label, _) in PROMPT_SETS.items():
        for v, vlabel in ZS_VARIANTS.items():
            cells = [label, vlabel]
            for name in (mk.TOP1, mk.TOP5):
                key = zeroshot_key(p, v, name)
                before = deltas.get("before:" + key) if (p, v) != ("single", "cosine") else None
                cells += [_fmt(m.get(key)), _fmt(before, sign=True) if before else "–",
                          _wins(before, m.get(key, [0, 0])[1], m.get(zeroshot_key("single", "cosine", name), [0, 0])[1])
                          if before else "–"]
            key = zeroshot_key(p, v, mk.TOP1)
            cells += [_fmt(deltas.get(key), sign=True) if v != "cosine" else "–",
                      _fmt(deltas.get("prompts:" + key), sign=True) if p != "single" else "–"]
            rows.append(cells)
    lines += ["Zero-shot, paired differences to the zero-shot before this suite (1 description, cosine scoring), "
              "*wins* paired / strict as above; then top-1 differences to cosine scoring with the same prompts and "
              "to the single description with the same scoring:", "",
              markdown_table(["prompts", "scoring", "top-1", "Δ top-1 vs before", "wins", "top-5",
                              "Δ top-5 vs before", "wins", "Δ top-1 vs cosine", "Δ top-1 vs 1 description"], rows),
              ""]
    seen, unseen = (sum(a["metrics"].get(zeroshot_key("single", "cosine", g, mk.N), [0])[0]
                        for a in payload["aggregates"].values()) for g in (mk.SEEN, mk.UNSEEN))
    lines += [f"Of the {seen + unseen:.0f} labelled clips (all held-out packages), {unseen:.0f} are of classes the "
              "run's training captions do not name (`training.analysis.leakage`): the gains above are on seen "
              "classes; the per-run seen/unseen split of every variant is in the JSON (`var/zeroshot.*.unseen.*`).",
              ""]
    if m.get(PROBE_TOP1):
        lines += ["A supervised reference, not zero-shot: a linear probe (multinomial logistic regression on the "
                  "frozen audio-backbone features, fitted on the labelled clips of the packages the run trained "
                  f"on; `training.analysis.leakage`) scores top-1 {_fmt(m.get(PROBE_TOP1))} and top-5 "
                  f"{_fmt(m.get(PROBE_TOP5))} on the same held-out clips.", ""]
    rows = []
    for a in payload["aggregates"].values():
        am = a["metrics"]
        rows.append([a["group"], f"{am.get(mk.N_CLIPS, [0])[0]:.0f}",
                     f"{am.get(zeroshot_key('single', 'cosine', mk.N), [0])[0]:.0f}"]
                    + [_fmt(am.get(retrieval_key(v, "t2a", mk.R5))) for v in RETRIEVAL_VARIANTS]
                    + [_fmt(am.get(zeroshot_key(p, v, mk.TOP1))) for p, v in
                       (("single", "cosine"), ("sound", "cosine"), ("single", "prior"), ("single", "transport"))]
                    + [f"{am.get(mk.variant('beta', 't2a'), [float('nan')])[0]:.0f}"])
    lines += ["Per held-out package (T→A R@5 per scoring; ZS top-1 for a few prompt × scoring pairs; mean β "
              "chosen on validation for T→A):", "",
              markdown_table(["held out", "clips", "ZS clips"] + [f"T→A R@5 {v}" for v in RETRIEVAL_VARIANTS]
                             + ["ZS single cosine", "ZS sound cosine", "ZS single prior", "ZS single transport",
                                "β T→A"], rows)]
    bank = {k: summary["metrics"].get(mk.variant("bank", k), [0])[0] for k in ("captions", "clips")}
    lines += ["", f"Banks (mean over packages): {bank['captions']:.0f} training captions (T→A), {bank['clips']:.0f} "
              "training clips (A→T, zero-shot), all from the packages the run trained on; β grid "
              f"{list(BETA_GRID)} chosen on the same packages' validation split (T→A and A→T mAP@10, zero-shot "
              "top-1)."]
    return lines
