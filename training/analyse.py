"""``python -m training analyse --model M --data D [--compare M2] [--ks ...] [--plot FILE.png]``.

Structure of a checkpoint's joint embedding space on the clips of a split (see
:mod:`training.analysis.structure`):

* audio side: the joint-space embedding of each clip, f(x_i) (unit rows);
* text side: per clip, the L2-normalised mean of the joint-space embeddings of its captions,
  normalize(mean_c g(y_ic)).

Row i of both is clip i, so the two spaces are paired. Reported for each comparison: linear CKA,
and for each distance and k the mean Jaccard similarity of the k-NN sets, next to its chance
level. Comparisons:

* ``audio vs text`` of the model (A): do sounds and their captions have the same neighbours?
* with ``--compare M2`` (B) also ``audio A vs B`` and ``text A vs B``: how much did the
  geometry of each modality change between the two checkpoints?

The ``metric`` distance (the learned ground metric) applies only inside one model's joint
space, i.e. to ``audio vs text``; the cross-model comparisons skip it. Both sides have unit rows,
so ‖x − y‖² = 2 − 2 cos(x, y): ``cosine`` and ``euclidean`` give the same neighbours here (up
to rounding on near-ties), and ``metric`` differs from them only where the learned M ≠ I. Prints a Markdown table
(``--json``: JSON); ``--out`` writes the JSON, ``--plot`` a PNG of similarity against k.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from atr_demo import fileio
from atr_demo.errors import ATRError, ConfigError
from atr_demo.model import ATRModel, load_model

from training.analysis.structure import DISTANCES, owner_means, plot_knn_overlap, structure_report
from training.datasets import Clip
from training.evaluate import embed_clips, load_eval_clips

logger = logging.getLogger(__name__)

DEFAULT_KS = (1, 5, 10, 20, 50)
AUDIO_TEXT = "audio vs text"
AUDIO_TEXT_B = "audio vs text (B)"
AUDIO_AB = "audio A vs B"
TEXT_AB = "text A vs B"


def caption_means(model: ATRModel, clips: Sequence[Clip]) -> torch.Tensor:
    """(n_clips, d) unit rows: normalize(mean of the joint-space embeddings of each clip's captions)."""
    captions = [t for c in clips for t in c.captions]
    owner = torch.tensor([i for i, c in enumerate(clips) for _ in c.captions], dtype=torch.long)
    return owner_means(model.embed_texts(captions).float(), owner, len(clips))


def embed_spaces(
    model: ATRModel, clips: Sequence[Clip], batch_size: int = 16, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(audio (n, d), text (n, d)) paired joint-space embeddings of ``clips``."""
    return embed_clips(model, clips, batch_size, progress), caption_means(model, clips)


def usable_ks(ks: Sequence[int], n: int) -> list[int]:
    """Sorted distinct ``ks`` that leave at least one other clip (k ≤ n − 1); warns about the rest.

    Raises:
        ConfigError: a k < 1, or no k fits in ``n`` clips.
    """
    wanted = sorted(set(int(k) for k in ks))
    if not wanted or wanted[0] < 1:
        raise ConfigError(f"--ks must be positive integers, got {list(ks)}")
    kept = [k for k in wanted if k <= n - 1]
    dropped = [k for k in wanted if k > n - 1]
    if dropped:
        logger.warning("dropping k = %s: %d clips leave at most %d neighbours", ", ".join(map(str, dropped)), n, n - 1)
    if not kept:
        raise ConfigError(f"{n} clip(s) are too few for every k in {wanted}: k-NN needs k <= n - 1 = {n - 1}")
    return kept


def analyse_clips(
    model: ATRModel,
    clips: Sequence[Clip],
    ks: Sequence[int] = DEFAULT_KS,
    distances: Sequence[str] = DISTANCES,
    compare: ATRModel | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Structure reports of ``model`` (and ``compare``) on ``clips``.

    Returns ``{"n_clips", "ks", "distances", "comparisons": {name: report}}`` with the reports
    of :func:`training.analysis.structure.structure_report` under ``"audio vs text"`` and, with
    ``compare``, ``"audio vs text (B)"`` (B's own joint space, with B's metric), ``"audio A vs B"``
    and ``"text A vs B"`` (these two without the ``metric`` distance).
    """
    if not clips:
        raise ConfigError("no clips to analyse in this split")
    ks = usable_ks(ks, len(clips))
    audio, text = embed_spaces(model, clips, batch_size, progress)
    comparisons = {AUDIO_TEXT: structure_report(audio, text, ks, distances, metric=model.metric)}
    if compare is not None:
        audio_b, text_b = embed_spaces(compare, clips, batch_size, progress)
        comparisons[AUDIO_TEXT_B] = structure_report(audio_b, text_b, ks, distances, metric=compare.metric)
        across = [d for d in distances if d != "metric"]
        comparisons[AUDIO_AB] = structure_report(audio, audio_b, ks, across)
        comparisons[TEXT_AB] = structure_report(text, text_b, ks, across)
    return {"n_clips": len(clips), "ks": ks, "distances": list(distances), "comparisons": comparisons}


def markdown_table(result: dict[str, Any]) -> str:
    """Rows (comparison, distance), columns k and linear CKA; a last row with the chance level."""
    ks = [str(k) for k in result["ks"]]
    head = ["comparison", "distance", *[f"k={k}" for k in ks], "linear CKA"]
    rows: list[list[str]] = []
    chance: dict[str, float] = {}
    for name, report in result["comparisons"].items():
        chance = report["chance"]
        knn = report["knn"].items() or [("–", {})]
        for r, (distance, values) in enumerate(knn):
            cells = [name if r == 0 else "", distance]
            cells += [f"{values[k]:.3f}" if k in values else "–" for k in ks]
            cells.append(f"{report['cka']:.3f}" if r == 0 else "")
            rows.append(cells)
    rows.append(["chance", "–", *[f"{chance[k]:.3f}" for k in ks], "–"])
    lines = [fileio.markdown_table(head, rows), ""]
    note = (f"{result['n_clips']} clips; k-NN similarity = mean Jaccard index of the k nearest other clips "
            "in each space (1 = same neighbours); chance = two unrelated spaces.")
    if result.get("compare"):
        note += f" A = {result.get('model')}, B = {result.get('compare')}."
    lines.append(note)
    return "\n".join(lines)


def short_name(model: str) -> str:
    """A plot label for a model argument: a built-in or hub name as given, a path's last two parts."""
    parts = Path(model).parts
    return model if len(parts) <= 2 else "/".join(parts[-2:])


def _parse_distances(text: str) -> list[str]:
    distances = [d.strip() for d in text.split(",") if d.strip()]
    bad = [d for d in distances if d not in DISTANCES]
    if bad or not distances:
        raise ConfigError(f"unknown or missing distance(s) {bad or text!r}; choose from {', '.join(DISTANCES)}")
    return list(dict.fromkeys(distances))


def main(argv: list[str] | None = None) -> int:
    """``analyse --model M --data D [--split S] [--ks …] [--distances …] [--compare M2] [--plot F] [--json]``
    (and ``--out F``, ``--packages``…: see ``--help``)."""
    parser = argparse.ArgumentParser(prog="python -m training analyse",
                                     description="k-NN graph similarity and linear CKA of embedding spaces")
    parser.add_argument("--model", required=True, help="checkpoint folder, hub repo id or built-in name")
    parser.add_argument("--revision", default=None, help="hub revision of --model")
    parser.add_argument("--data", required=True, action="append",
                        help="dataset path (repeatable; format:path to force a format)")
    parser.add_argument("--split", default="test", help="train | validation | test | all (default test)")
    parser.add_argument("--packages", default=None, help="comma-separated corpus packages to keep")
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS),
                        help="neighbourhood sizes k (default 1 5 10 20 50)")
    parser.add_argument("--distances", default=",".join(DISTANCES),
                        help=f"comma-separated distances among {', '.join(DISTANCES)} (default all)")
    parser.add_argument("--compare", default=None, help="a second checkpoint (B) to compare each modality with")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--name", default=None,
                        help="label of --model in the plot (default: its path's last two parts)")
    parser.add_argument("--compare-name", default=None, help="label of --compare in the plot")
    parser.add_argument("--plot", default=None, help="save a PNG of similarity against k to this file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    parser.add_argument("--out", default=None, help="write the JSON result to this file")
    args = parser.parse_args(argv)
    try:
        distances = _parse_distances(args.distances)
        clips = load_eval_clips(args.data, args.split, args.packages)
        ks = usable_ks(args.ks, len(clips))  # before loading models: fail fast
        model = load_model(args.model, args.revision)
        compare = load_model(args.compare) if args.compare else None
        result = analyse_clips(model, clips, ks, distances, compare, args.batch_size, progress=not args.json)
    except ATRError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    result = {"model": args.model, "compare": args.compare, "data": args.data, "split": args.split,
              "packages": args.packages, **result}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.plot:
        name_a = args.name or short_name(args.model)
        title = f"k-NN graph similarity: {name_a}" + (
            f" (A) vs {args.compare_name or short_name(args.compare)} (B)" if args.compare else "")
        fig = plot_knn_overlap(result["comparisons"], f"{title}; {result['n_clips']} clips, {args.split}")
        try:
            Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(args.plot, dpi=120)
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"error: cannot save the plot to {args.plot}: {exc}\n")
            return 1
    sys.stdout.write((json.dumps(result, indent=2) if args.json else markdown_table(result)) + "\n")
    return 0
