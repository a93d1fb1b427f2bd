"""``python -m training evaluate --model M --data D [--split test] [--json] [--out FILE]``.

For each scoring mode (cosine, metric, transport):

* retrieval, Clotho protocol: every caption is a text→audio query; an audio→text query hits
  when any of its captions is in the top k. R@1/5/10, mAP@10, median rank, both directions.
  Transport scoring solves the plan queries × gallery for each direction separately.
* zero-shot ESC-50 top-1/top-5 on the clips that carry an ESC-50 label (per fold and averaged
  when the data has folds, as ESC-50 itself does).

plus the modality gap ‖mean f(x) − mean g(y)‖₂. Prints a Markdown table; writes JSON.

``--device`` (cpu, cuda, cuda:N, auto: the default, a GPU when there is one) holds the model, the
embeddings and the scoring (score matrices, transport plans, zero-shot); ``--batch-size`` clips
(and ``--text-batch-size`` captions) go through the towers at once. Ranking runs on the CPU. The
numbers do not depend on the batch sizes (up to float rounding on a GPU).

With ``--train-data D`` (the data the model was trained on) it adds the leakage report: the
ESC-50 classes its training captions name (``training.analysis.leakage`` synonyms), zero-shot accuracy on
clips of those classes ("seen") and of the others ("unseen"), and a backbone-only reference, a
linear probe on the frozen audio-backbone features of D's labelled training clips.

With ``--languages en,fr,de`` (multilingual data: manifest columns ``caption_<lang>``) it also
reports, per language, text→audio and audio→text R@1/5/10 and mAP@10 with the clip's first
caption in that language as the only caption, and the cross-language consistency: the mean rank
variance (MRV) of the correct item across languages, both directions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from atr_demo import fileio
from atr_demo.devices import DEVICE_HELP, resolve_device
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

from training.analysis.leakage import classes_in_captions, fit_linear_probe, split_accuracy
from training.datasets import Clip, filter_packages, language_captions, load_clip_audio, load_dataset, split_clips

logger = logging.getLogger(__name__)


def _batched_audio(
    model: ATRModel, clips: Sequence[Clip], batch_size: int, progress: bool, backbone_only: bool
) -> torch.Tensor:
    model.eval()
    encode = model.audio_features if backbone_only else model.encode_audio
    out = []
    with torch.inference_mode():
        desc = "backbone features" if backbone_only else "embedding audio"
        for start in tqdm(range(0, len(clips), batch_size), desc=desc, unit="batch", disable=not progress):
            waves = [
                load_clip_audio(c, model.sample_rate, model.config.max_duration_s)
                for c in clips[start : start + batch_size]
            ]
            out.append(encode(waves).float().cpu())
    return torch.cat(out) if out else torch.empty(0, model.config.embed_dim)


def embed_clips(model: ATRModel, clips: Sequence[Clip], batch_size: int = 16, progress: bool = True) -> torch.Tensor:
    """Joint-space embeddings (n, d) of clips (segments and mixtures handled), in inference mode."""
    return _batched_audio(model, clips, batch_size, progress, backbone_only=False)


def backbone_features(
    model: ATRModel, clips: Sequence[Clip], batch_size: int = 16, progress: bool = True
) -> torch.Tensor:
    """Frozen audio-backbone features (n, D_audio) of clips (before the projection head)."""
    return _batched_audio(model, clips, batch_size, progress, backbone_only=True)


def load_eval_clips(data: Sequence[str], split: str, packages: str | None = None) -> list[Clip]:
    """The clips of ``data`` (dataset paths) in ``split`` (``all``: every split), optionally only
    those of the comma-separated corpus ``packages``; an empty result is an error."""
    clips: list[Clip] = [c for spec in data for c in load_dataset(spec)]
    if split != "all":
        clips = split_clips(clips, split)
    if packages:
        clips = filter_packages(clips, only=[p for p in packages.split(",") if p])
    if not clips:
        raise ConfigError(f"no clips in split {split!r} of {', '.join(data)}")
    return clips


def _directional_scores(
    model: ATRModel, text: torch.Tensor, audio: torch.Tensor, mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(t2a scores (n_text, n_audio), a2t scores transposed to (n_text, n_audio)), computed on the
    model's device and returned on the CPU (where the ranking metrics run)."""
    kw = {"metric": model.metric, "eps": model.config.eps, "mass": model.config.mass}
    text, audio = text.to(model.device), audio.to(model.device)
    with torch.inference_mode():
        t2a = score_matrix(text, audio, mode, **kw)
        a2t = t2a if mode != "transport" else score_matrix(audio, text, mode, **kw).T
    return t2a.float().cpu(), a2t.float().cpu()


def _classify(model: ATRModel, audio: torch.Tensor, label_set: Any, mode: str) -> torch.Tensor:
    """Zero-shot label probabilities (n, L) of (n, d) audio embeddings, computed on the model's
    device, returned on the CPU."""
    labels = dataclasses.replace(label_set, embeddings=label_set.embeddings.to(model.device))
    with torch.inference_mode():
        return classify(model, audio.to(model.device), labels, mode=mode).float().cpu()


def evaluate_clips(
    model: ATRModel,
    clips: Sequence[Clip],
    modes: Sequence[str] = MODES,
    batch_size: int = 16,
    progress: bool = True,
    languages: Sequence[str] = (),
    train_clips: Sequence[Clip] | None = None,
    text_batch_size: int = 256,
) -> dict[str, Any]:
    """All metrics of ``model`` on ``clips`` (see the module docstring) as a nested dict.

    The audio is decoded and run through the backbone once: the joint-space embeddings are the
    projected backbone features, which the leakage probe reuses. With ``languages``, adds
    ``multilingual`` (:func:`evaluate_languages`); with ``train_clips`` (the model's training
    data), adds ``leakage`` (:func:`leakage_section`).
    """
    if not clips:
        raise ConfigError("no clips to evaluate in this split")
    features = backbone_features(model, clips, batch_size, progress)
    with torch.inference_mode():
        audio = model.project_audio(features.to(model.device)).float().cpu()
    text = model.embed_texts([t for c in clips for t in c.captions], text_batch_size).float()
    labelled = any(c.esc50 in ESC50_CLASSES for c in clips)
    label_set = embed_labels(model, list(ESC50_CLASSES)) if labelled else None
    result = evaluate_embeddings(model, clips, audio, text, label_set, modes)
    if languages:
        text_by_lang = {lang: model.embed_texts(first_captions(clips, lang), text_batch_size).float()
                        for lang in languages}
        result["multilingual"] = evaluate_languages(model, audio, text_by_lang, modes)
    if train_clips is not None:
        result["leakage"] = leakage_section(model, clips, audio, features, label_set, train_clips, modes,
                                            batch_size, progress)
    return result


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
            raise ConfigError(
                f"clip {clip.clip_id} has no caption in language {lang!r} (manifest column caption_{lang})"
            )
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
    rows: list[list[str]] = []
    for mode, entry in result.items():
        for lang, m in entry["languages"].items():
            rows.append([mode, lang] + [f"{m[d][k]:.3f}" for d in ("text_to_audio", "audio_to_text")
                                        for k in ("R@1", "R@5", "R@10", "mAP@10")])
        if "mrv" in entry:
            mrv = entry["mrv"]
            rows.append([mode, "MRV (lower is better)", f"{mrv['text_to_audio']:.2f}", "", "", "",
                         f"{mrv['audio_to_text']:.2f}", "", "", ""])
    return fileio.markdown_table(head, rows)


def zeroshot_leakage(model: ATRModel, clips: Sequence[Clip], audio: torch.Tensor, label_set: Any,
                     seen: set[str], modes: Sequence[str]) -> dict[str, Any]:
    """Per mode, 50-way zero-shot accuracy of the ESC-50-labelled clips split by whether their
    class is in ``seen`` — the classes the training captions name
    (:func:`training.analysis.leakage.split_accuracy`). ``audio``: (len(clips), d) embeddings."""
    idx = [i for i, c in enumerate(clips) if c.esc50 in ESC50_CLASSES]
    labels = torch.tensor([ESC50_CLASSES.index(str(clips[i].esc50)) for i in idx])
    out: dict[str, Any] = {}
    for mode in modes:
        probs = _classify(model, audio[torch.tensor(idx)], label_set, mode)
        out[mode] = split_accuracy(probs, labels, ESC50_CLASSES, seen)
    return out


def probe_report(train_features: torch.Tensor, train_labels: Sequence[str], test_features: torch.Tensor,
                 test_labels: Sequence[str], seen: set[str], seed: int = 0) -> dict[str, Any] | None:
    """Backbone-only reference for zero-shot: a linear probe (multinomial logistic regression,
    :func:`training.analysis.leakage.fit_linear_probe`) on frozen audio-backbone features (n, D) of
    ESC-50-labelled training clips, scored 50-way on the test clips' features, split by ``seen``
    like :func:`zeroshot_leakage`. It uses labels the zero-shot model never sees, so it bounds
    what the audio backbone alone separates. ``None`` when there is no test clip or fewer than
    two training classes."""
    if not len(test_labels) or len(set(train_labels)) < 2:
        return None
    index = {c: i for i, c in enumerate(ESC50_CLASSES)}
    probe = fit_linear_probe(train_features.float(), torch.tensor([index[c] for c in train_labels]),
                             len(ESC50_CLASSES), seed=seed)
    test_targets = torch.tensor([index[c] for c in test_labels])
    out: dict[str, Any] = split_accuracy(probe.scores(test_features.float()), test_targets, ESC50_CLASSES, seen)
    out["train_clips"] = len(train_labels)
    out["train_classes"] = len(set(train_labels))
    return out


def leakage_section(model: ATRModel, clips: Sequence[Clip], audio: torch.Tensor, features: torch.Tensor,
                    label_set: Any, train_clips: Sequence[Clip], modes: Sequence[str], batch_size: int = 16,
                    progress: bool = True) -> dict[str, Any]:
    """The leakage report of ``evaluate --train-data``: the classes the training captions name
    (with the matched terms), zero-shot split into seen / unseen classes, and the probe.

    Args:
        audio, features: (len(clips), d) joint-space embeddings and (len(clips), D) backbone
            features of ``clips``; label_set: the ESC-50 labels' embeddings (``None`` when no
            clip is labelled); train_clips: the model's training clips (captions and, for the
            probe, the labelled ones' audio).
    """
    seen_terms = classes_in_captions([t for c in train_clips for t in c.captions])
    seen = set(seen_terms)
    out: dict[str, Any] = {"seen_classes": seen_terms}
    labelled = [i for i, c in enumerate(clips) if c.esc50 in ESC50_CLASSES]
    if not labelled or label_set is None:
        return out
    out["zeroshot"] = zeroshot_leakage(model, clips, audio, label_set, seen, modes)
    train_labelled = [c for c in train_clips if c.esc50 in ESC50_CLASSES]
    if len({c.esc50 for c in train_labelled}) >= 2:
        out["probe"] = probe_report(backbone_features(model, train_labelled, batch_size, progress),
                                    [str(c.esc50) for c in train_labelled], features[labelled],
                                    [str(clips[i].esc50) for i in labelled], seen)
    return out


def leakage_table(section: dict[str, Any]) -> str:
    """Markdown of :func:`leakage_section`."""
    head = ["scoring", "seen top-1", "seen top-5", "unseen top-1", "unseen top-5", "seen clips", "unseen clips"]
    scorings = list(section.get("zeroshot", {}).items())
    if section.get("probe"):
        scorings.append(("linear probe (audio backbone)", section["probe"]))
    rows = []
    for name, s in scorings:
        columns = (("seen", "top1"), ("seen", "top5"), ("unseen", "top1"), ("unseen", "top5"))
        cells = [name] + [f"{s[g][k]:.3f}" for g, k in columns]
        rows.append(cells + [str(s["seen"]["n"]), str(s["unseen"]["n"])])
    seen = section.get("seen_classes", {})
    lines = [fileio.markdown_table(head, rows), ""]
    lines.append(f"Classes named in the training captions ({len(seen)}): " + ", ".join(sorted(seen)))
    return "\n".join(lines)


def _zeroshot(
    model: ATRModel, audio: torch.Tensor, labels: torch.Tensor, folds: list[int | None], label_set: Any, mode: str
) -> dict[str, Any]:
    """Top-1/top-5 over all labelled clips; per fold (and the fold mean) when folds are known.

    In transport mode each fold is solved as one batch (the plan balances labels over it).
    """
    out: dict[str, Any] = {"n": int(len(labels))}
    if all(f is not None for f in folds):
        per_fold = {}
        for fold in sorted(set(folds)):
            sel = torch.tensor([f == fold for f in folds])
            probs = _classify(model, audio[sel], label_set, mode)
            per_fold[str(fold)] = topk_accuracy(probs, labels[sel])
        out["per_fold"] = per_fold
        for k in ("top1", "top5"):
            out[k] = float(np.mean([v[k] for v in per_fold.values()]))
    else:
        out.update(topk_accuracy(_classify(model, audio, label_set, mode), labels))
    return out


def markdown_table(result: dict[str, Any]) -> str:
    """One row per scoring mode: R@1/5/10 and mAP@10 both ways, median ranks, zero-shot."""
    head = ["scoring", "T→A R@1", "R@5", "R@10", "mAP@10", "med", "A→T R@1", "R@5", "R@10", "mAP@10", "med",
            "ZS top-1", "ZS top-5"]
    rows = []
    for mode, e in result["modes"].items():
        t, a, z = e["text_to_audio"], e["audio_to_text"], e.get("zeroshot")
        cells = [mode] + [f"{t[k]:.3f}" for k in ("R@1", "R@5", "R@10", "mAP@10")] + [f"{t['median_rank']:g}"]
        cells += [f"{a[k]:.3f}" for k in ("R@1", "R@5", "R@10", "mAP@10")] + [f"{a['median_rank']:g}"]
        cells += [f"{z['top1']:.3f}", f"{z['top5']:.3f}"] if z else ["–", "–"]
        rows.append(cells)
    lines = [fileio.markdown_table(head, rows), ""]
    lines.append(
        f"{result['n_clips']} clips, {result['n_captions']} captions; modality gap {result['modality_gap']:.3f}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``evaluate --model M --data D [--split test] [--modes …] [--json] [--out FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m training evaluate", description="evaluate a checkpoint")
    parser.add_argument("--model", required=True, help="checkpoint folder, hub repo id or built-in name")
    parser.add_argument("--revision", default=None, help="hub revision of --model")
    parser.add_argument("--data", required=True, action="append",
                        help="dataset path (repeatable; format:path to force a format)")
    parser.add_argument("--split", default="test", help="train | validation | test | all (default test)")
    parser.add_argument("--packages", default=None,
                        help="comma-separated corpus packages to keep (e.g. the held-out package of a LOPO run)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated scoring modes")
    parser.add_argument("--train-data", default=None, action="append",
                        help="the model's training data (repeatable): adds the leakage report — zero-shot on classes "
                             "named in its training captions vs the others, and a linear probe on backbone features")
    parser.add_argument("--train-split", default="train",
                        help="split of --train-data the model trained on (default train)")
    parser.add_argument("--languages", default=None,
                        help="comma-separated caption languages (e.g. en,fr,de): per-language metrics and MRV")
    parser.add_argument("--batch-size", type=int, default=16, help="clips embedded at once (default 16)")
    parser.add_argument("--text-batch-size", type=int, default=256, help="captions embedded at once (default 256)")
    parser.add_argument("--device", default="auto", help=f"where the model runs: {DEVICE_HELP}")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    parser.add_argument("--out", default=None, help="write the JSON result to this file")
    args = parser.parse_args(argv)
    try:
        modes = [m for m in args.modes.split(",") if m]
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise ConfigError(f"unknown scoring mode(s) {bad}; choose from {MODES}")
        if args.batch_size < 1 or args.text_batch_size < 1:
            raise ConfigError(f"--batch-size and --text-batch-size must be at least 1, got "
                              f"{args.batch_size} and {args.text_batch_size}")
        device = resolve_device(args.device)  # before any data is read: a missing GPU fails at once
        clips = load_eval_clips(args.data, args.split, args.packages)
        languages = [lang for lang in (args.languages or "").split(",") if lang]
        if languages:
            clips = [c for c in clips if all(language_captions(c, lang) for lang in languages)]
            if not clips:
                raise ConfigError(f"no clip has captions in all of {languages}")
        train_clips = load_eval_clips(args.train_data, args.train_split) if args.train_data else None
        model = load_model(args.model, args.revision).to(device)
        result = evaluate_clips(model, clips, modes, args.batch_size, not args.json, languages, train_clips,
                                args.text_batch_size)
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
    if "leakage" in result and not args.json:
        text += (
            "\n\nZero-shot leakage (ESC-50 classes named in the training captions = seen):\n\n"
            + leakage_table(result["leakage"])
        )
    sys.stdout.write(text + "\n")
    return 0
