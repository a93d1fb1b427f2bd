"""``python -m training evaluate --model M --data D [--split test] [--json] [--out FILE]``.

For each scoring mode (cosine, metric, transport):

* retrieval, Clotho protocol: every caption is a text→audio query; an audio→text query hits
  when any of its captions is in the top k. R@1/5/10, mAP@10, median rank, both directions.
  Transport scoring solves the plan queries × gallery for each direction separately.
* zero-shot ESC-50 top-1/top-5 on the clips that carry an ESC-50 label (per fold and averaged
  when the data has folds, as ESC-50 itself does).

plus the modality gap ‖mean f(x) − mean g(y)‖₂. Prints a Markdown table; writes JSON.

With ``--languages en,fr,de`` (multilingual data: manifest columns ``caption_<lang>``) it also
reports, per language, text→audio and audio→text R@1/5/10 and mAP@10 with the clip's first
caption in that language as the only caption, and the cross-language consistency: the mean rank
variance (MRV) of the correct item across languages, both directions.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from atr_demo.errors import ATRError, ConfigError
from atr_demo.evaluation import (
    audio_to_text_metrics,
    mean_rank_variance,
    modality_gap,
    paired_ranks,
    text_to_audio_metrics,
    topk_accuracy,
)
from atr_demo.model import ATRModel, load_model
from atr_demo.retrieval import MODES, score_matrix
from atr_demo.zeroshot import ESC50_CLASSES, classify, embed_labels

from training.datasets import Clip, filter_packages, language_captions, load_clip_audio, load_dataset, split_clips

logger = logging.getLogger(__name__)


def embed_clips(model: ATRModel, clips: Sequence[Clip], batch_size: int = 16, progress: bool = True) -> torch.Tensor:
    """Joint-space embeddings (n, d) of clips (segments and mixtures handled), in inference mode."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(clips), batch_size), desc="embedding audio", unit="batch", disable=not progress):
            waves = [load_clip_audio(c, model.sample_rate, model.config.max_duration_s) for c in clips[start : start + batch_size]]
            out.append(model.encode_audio(waves).float().cpu())
    return torch.cat(out) if out else torch.empty(0, model.config.embed_dim)


def _directional_scores(model: ATRModel, text: torch.Tensor, audio: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(t2a scores (n_text, n_audio), a2t scores transposed to (n_text, n_audio))."""
    kw = {"metric": model.metric, "eps": model.config.eps, "mass": model.config.mass}
    t2a = score_matrix(text, audio, mode, **kw)
    a2t = t2a if mode != "transport" else score_matrix(audio, text, mode, **kw).T
    return t2a, a2t


def evaluate_clips(
    model: ATRModel, clips: Sequence[Clip], modes: Sequence[str] = MODES, batch_size: int = 16, progress: bool = True
) -> dict[str, Any]:
    """All metrics of ``model`` on ``clips`` (see the module docstring) as a nested dict."""
    if not clips:
        raise ConfigError("no clips to evaluate in this split")
    audio = embed_clips(model, clips, batch_size, progress)
    text = model.embed_texts([t for c in clips for t in c.captions]).float()
    labelled = any(c.esc50 in ESC50_CLASSES for c in clips)
    label_set = embed_labels(model, list(ESC50_CLASSES)) if labelled else None
    return evaluate_embeddings(model, clips, audio, text, label_set, modes)


def evaluate_embeddings(
    model: ATRModel,
    clips: Sequence[Clip],
    audio: torch.Tensor,
    text: torch.Tensor,
    label_set: Any,
    modes: Sequence[str] = MODES,
) -> dict[str, Any]:
    """The metrics of :func:`evaluate_clips` from joint-space embeddings already computed.

    Args:
        audio: (n_clips, d) embeddings of ``clips``; text: (n_captions, d) embeddings of every
            caption of ``clips`` in order; label_set: the ESC-50 :class:`LabelSet` (``None``: no
            zero-shot).
    """
    captions = [t for c in clips for t in c.captions]
    text_to_audio = torch.tensor([i for i, c in enumerate(clips) for _ in c.captions])
    result: dict[str, Any] = {"n_clips": len(clips), "n_captions": len(captions),
                              "modality_gap": modality_gap(audio, text), "modes": {}}
    labelled = [(i, c) for i, c in enumerate(clips) if c.esc50 in ESC50_CLASSES]
    if not labelled:
        label_set = None
    for mode in modes:
        t2a_scores, a2t_scores = _directional_scores(model, text, audio, mode)
        entry: dict[str, Any] = {
            "text_to_audio": text_to_audio_metrics(t2a_scores, text_to_audio),
            "audio_to_text": audio_to_text_metrics(a2t_scores, text_to_audio),
        }
        if label_set is not None:
            idx = torch.tensor([i for i, _ in labelled])
            labels = torch.tensor([ESC50_CLASSES.index(str(c.esc50)) for _, c in labelled])
            folds = [c.fold for _, c in labelled]
            entry["zeroshot"] = _zeroshot(model, audio[idx], labels, folds, label_set, mode)
        result["modes"][mode] = entry
    return result


def first_captions(clips: Sequence[Clip], lang: str) -> list[str]:
    """Each clip's first caption in ``lang`` (every clip must have one)."""
    out = []
    for clip in clips:
        captions = language_captions(clip, lang)
        if not captions:
            raise ConfigError(f"clip {clip.clip_id} has no caption in language {lang!r} (manifest column caption_{lang})")
        out.append(captions[0])
    return out


def evaluate_languages(
    model: ATRModel, audio: torch.Tensor, text_by_lang: dict[str, torch.Tensor], modes: Sequence[str] = MODES
) -> dict[str, Any]:
    """Per-language retrieval and cross-language consistency.

    Args:
        audio: (n, d) clip embeddings; text_by_lang: language → (n, d) embeddings of each clip's
            caption in that language (row i describes clip i).

    Returns:
        ``{mode: {"languages": {lang: {"text_to_audio": …, "audio_to_text": …}},
        "mrv": {"text_to_audio": float, "audio_to_text": float}, "mean": {…}}}`` — MRV is the
        mean over clips of the variance (over languages) of the correct item's rank; ``mean``
        averages each metric over the languages. Transport scoring solves each language's plan
        on its own (queries of one language against the gallery).
    """
    n = audio.shape[0]
    identity = torch.arange(n)
    out: dict[str, Any] = {}
    for mode in modes:
        per_lang: dict[str, Any] = {}
        ranks_t2a, ranks_a2t = [], []
        for lang, text in text_by_lang.items():
            if text.shape[0] != n:
                raise ValueError(f"language {lang}: {text.shape[0]} captions for {n} clips")
            t2a, a2t = _directional_scores(model, text, audio, mode)
            per_lang[lang] = {"text_to_audio": text_to_audio_metrics(t2a, identity),
                              "audio_to_text": audio_to_text_metrics(a2t, identity)}
            ranks_t2a.append(paired_ranks(t2a))
            ranks_a2t.append(paired_ranks(a2t.T))
        entry: dict[str, Any] = {"languages": per_lang}
        if len(per_lang) >= 2:
            entry["mrv"] = {"text_to_audio": mean_rank_variance(torch.stack(ranks_t2a)),
                            "audio_to_text": mean_rank_variance(torch.stack(ranks_a2t))}
        keys = ("R@1", "R@5", "R@10", "mAP@10")
        entry["mean"] = {d: {k: float(np.mean([v[d][k] for v in per_lang.values()])) for k in keys}
                         for d in ("text_to_audio", "audio_to_text")}
        out[mode] = entry
    return out


def languages_table(result: dict[str, Any]) -> str:
    """Markdown: one row per (scoring, language) and the MRV row."""
    head = ["scoring", "language", "T→A R@1", "R@5", "R@10", "mAP@10", "A→T R@1", "R@5", "R@10", "mAP@10"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode, entry in result.items():
        for lang, m in entry["languages"].items():
            cells = [mode, lang] + [f"{m[d][k]:.3f}" for d in ("text_to_audio", "audio_to_text")
                                    for k in ("R@1", "R@5", "R@10", "mAP@10")]
            lines.append("| " + " | ".join(cells) + " |")
        if "mrv" in entry:
            lines.append(f"| {mode} | MRV (lower is better) | {entry['mrv']['text_to_audio']:.2f} | | | | "
                         f"{entry['mrv']['audio_to_text']:.2f} | | | |")
    return "\n".join(lines)


def _zeroshot(model: ATRModel, audio: torch.Tensor, labels: torch.Tensor, folds: list[int | None], label_set: Any, mode: str) -> dict[str, Any]:
    """Top-1/top-5 over all labelled clips; per fold (and the fold mean) when folds are known.

    In transport mode each fold is solved as one batch (the plan balances labels over it).
    """
    out: dict[str, Any] = {"n": int(len(labels))}
    if all(f is not None for f in folds):
        per_fold = {}
        for fold in sorted(set(folds)):
            sel = torch.tensor([f == fold for f in folds])
            probs = classify(model, audio[sel], label_set, mode=mode)
            per_fold[str(fold)] = topk_accuracy(probs, labels[sel])
        out["per_fold"] = per_fold
        for k in ("top1", "top5"):
            out[k] = float(np.mean([v[k] for v in per_fold.values()]))
    else:
        out.update(topk_accuracy(classify(model, audio, label_set, mode=mode), labels))
    return out


def markdown_table(result: dict[str, Any]) -> str:
    """One row per scoring mode: R@1/5/10 and mAP@10 both ways, median ranks, zero-shot."""
    head = ["scoring", "T→A R@1", "R@5", "R@10", "mAP@10", "med", "A→T R@1", "R@5", "R@10", "mAP@10", "med",
            "ZS top-1", "ZS top-5"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode, e in result["modes"].items():
        t, a, z = e["text_to_audio"], e["audio_to_text"], e.get("zeroshot")
        cells = [mode] + [f"{t[k]:.3f}" for k in ("R@1", "R@5", "R@10", "mAP@10")] + [f"{t['median_rank']:g}"]
        cells += [f"{a[k]:.3f}" for k in ("R@1", "R@5", "R@10", "mAP@10")] + [f"{a['median_rank']:g}"]
        cells += [f"{z['top1']:.3f}", f"{z['top5']:.3f}"] if z else ["–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{result['n_clips']} clips, {result['n_captions']} captions; modality gap {result['modality_gap']:.3f}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``evaluate --model M --data D [--split test] [--modes …] [--json] [--out FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m training evaluate", description="evaluate a checkpoint")
    parser.add_argument("--model", required=True, help="checkpoint folder, hub repo id or built-in name")
    parser.add_argument("--revision", default=None, help="hub revision of --model")
    parser.add_argument("--data", required=True, action="append", help="dataset path (repeatable; format:path to force a format)")
    parser.add_argument("--split", default="test", help="train | validation | test | all (default test)")
    parser.add_argument("--packages", default=None,
                        help="comma-separated corpus packages to keep (e.g. the held-out package of a LOPO run)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated scoring modes")
    parser.add_argument("--languages", default=None,
                        help="comma-separated caption languages (e.g. en,fr,de): per-language metrics and MRV")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    parser.add_argument("--out", default=None, help="write the JSON result to this file")
    args = parser.parse_args(argv)
    try:
        modes = [m for m in args.modes.split(",") if m]
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise ConfigError(f"unknown scoring mode(s) {bad}; choose from {MODES}")
        clips: list[Clip] = []
        for spec in args.data:
            clips += load_dataset(spec)
        if args.split != "all":
            clips = split_clips(clips, args.split)
        if args.packages:
            clips = filter_packages(clips, only=[p for p in args.packages.split(",") if p])
        languages = [lang for lang in (args.languages or "").split(",") if lang]
        if languages:
            clips = [c for c in clips if all(language_captions(c, lang) for lang in languages)]
            if not clips:
                raise ConfigError(f"no clip has captions in all of {languages}")
        model = load_model(args.model, args.revision)
        result = evaluate_clips(model, clips, modes, args.batch_size, progress=not args.json)
        if languages:
            audio = embed_clips(model, clips, args.batch_size, progress=False)
            text_by_lang = {lang: model.embed_texts(first_captions(clips, lang)).float() for lang in languages}
            result["multilingual"] = evaluate_languages(model, audio, text_by_lang, modes)
    except ATRError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    result = {"model": args.model, "data": args.data, "split": args.split, "packages": args.packages, **result}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = json.dumps(result, indent=2) if args.json else markdown_table(result)
    if "multilingual" in result and not args.json:
        text += "\n\nPer language:\n\n" + languages_table(result["multilingual"])
    sys.stdout.write(text + "\n")
    return 0
