"""Text → audio retrieval of everyday queries over the shipped gallery, per scoring mode.

    HF_HUB_OFFLINE=1 python benchmarks/everyday_queries.py [--model DIR] [--gallery bundled_gallery]
        [--queries benchmarks/everyday_queries.json] [--per-query] [--json]

The queries and the gallery clips judged relevant to each (by ``clip_id``, with the judging rule)
are in ``benchmarks/everyday_queries.json``. Every query is searched alone, as the app searches it:
:func:`atr_demo.search.text_scores` (the scores :func:`~atr_demo.search.search_text` ranks; in
``transport`` mode against the gallery's caption anchors), over

* **all** clips of the gallery, and
* **held out**: only the clips marked ``in_training: false`` (the model never trained or selected on
  them), with the relevant sets cut to those clips.

Metrics per query (:func:`atr_demo.evaluation.relevance_metrics`): R@k = 1 when a relevant clip is
among the first k results; AP@10 = DCASE's average precision over the first 10 results. Means are
over *every* query: a query without a relevant clip in the searched clips scores 0 (the answerable
count is reported beside it, and "R@5 answerable" averages over those alone). Gallery clips from
packages the file was not judged over (``judged_packages``) are counted and warned about. ``metric`` is left out
when the model's ground metric is a multiple of the identity (it then ranks exactly like cosine).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from atr_demo.confidence import metric_ranks_like_cosine
from atr_demo.evaluation import relevance_metrics
from atr_demo.fileio import markdown_table
from atr_demo.gallery import Gallery, index_gallery, model_fingerprint
from atr_demo.model import ATRModel, load_model
from atr_demo.retrieval import MODES
from atr_demo.search import text_anchors, text_scores

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_QUERIES = ROOT / "benchmarks" / "everyday_queries.json"
#: Cut-offs of the recall columns.
KS = (1, 5, 10)
SUBSETS = ("all", "held_out")

logger = logging.getLogger(__name__)


def load_queries(path: str | Path) -> list[dict[str, Any]]:
    """``[{"query": str, "relevant": [clip_id, ...]}, ...]`` from a queries file."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    queries = data["queries"] if isinstance(data, dict) else data
    return [{"query": str(q["query"]), "relevant": [str(c) for c in q["relevant"]]} for q in queries]


def unjudged_clips(path: str | Path, gallery: Gallery) -> list[str]:
    """Ids of the gallery clips whose package (``source``) is not among the queries file's
    ``judged_packages``: their relevance to every query is unknown (empty when the file lists none)."""
    judged = json.loads(Path(path).read_text(encoding="utf-8")).get("judged_packages")
    if not judged:
        return []
    return [clip_id(m) for m in gallery.metadata if m.get("source") not in set(judged)]


def clip_id(meta: dict[str, Any]) -> str:
    """A gallery clip's id: its ``clip_id`` metadata, else its file name without the extension."""
    return str(meta.get("clip_id") or Path(str(meta.get("audio") or meta["file"])).stem)


def relevance_matrix(queries: list[dict[str, Any]], gallery: Gallery) -> torch.Tensor:
    """(n_query, n_clip) bool: clip j is judged relevant to query i."""
    column = {clip_id(m): j for j, m in enumerate(gallery.metadata)}
    relevant = torch.zeros(len(queries), len(gallery), dtype=torch.bool)
    for i, q in enumerate(queries):
        for c in q["relevant"]:
            if c in column:
                relevant[i, column[c]] = True
    return relevant


def scoring_modes(model: ATRModel) -> list[str]:
    """The scoring modes worth reporting: ``metric`` only where it can rank unlike cosine."""
    return [m for m in MODES if m != "metric" or not metric_ranks_like_cosine(model.metric)]


def evaluate(
    model: ATRModel, gallery: Gallery, queries: list[dict[str, Any]], modes: list[str] | None = None
) -> dict[str, Any]:
    """Metrics of every mode over all clips and over the held-out clips (see the module docstring).

    Returns ``{"clips": {subset: n}, "queries": n, "answerable": {subset: n}, "modes": {mode: {subset:
    {"R@1", "R@5", "R@10", "mAP@10", "R@5 answerable"}}}, "per_query": [{"query", "relevant": {subset: n},
    "R@5": {mode: {subset: 0/1}}, "top1": {mode: {subset: clip id}}}]}``.
    """
    modes = modes or scoring_modes(model)
    texts = [q["query"] for q in queries]
    out: dict[str, Any] = {"clips": {}, "queries": len(queries), "answerable": {}, "modes": {m: {} for m in modes}}
    per_query: list[dict[str, Any]] = [{"query": t, "relevant": {}, "R@5": {m: {} for m in modes},
                                        "top1": {m: {} for m in modes}} for t in texts]
    for subset in SUBSETS:
        clips = gallery if subset == "all" else gallery.held_out()
        relevant = relevance_matrix(queries, clips)
        has = relevant.any(dim=1)
        out["clips"][subset] = len(clips)
        out["answerable"][subset] = int(has.sum())
        for i, n in enumerate(relevant.sum(dim=1).tolist()):
            per_query[i]["relevant"][subset] = int(n)
        if len(clips) == 0:
            continue
        anchors = text_anchors(model, clips) if "transport" in modes else None
        for mode in modes:
            scores = torch.cat([text_scores(model, clips, [t], mode=mode, anchors=anchors) for t in texts])
            per = relevance_metrics(scores, relevant, KS)
            row = {f"R@{k}": float(per[f"R@{k}"].mean()) for k in KS}
            row["mAP@10"] = float(per["AP@10"].mean())
            row["R@5 answerable"] = float(per["R@5"][has].mean()) if bool(has.any()) else 0.0
            out["modes"][mode][subset] = row
            best = scores.argmax(dim=1).tolist()
            for i, hit in enumerate(per["R@5"].tolist()):
                per_query[i]["R@5"][mode][subset] = int(hit)
                per_query[i]["top1"][mode][subset] = clip_id(clips.metadata[best[i]])
    out["per_query"] = per_query
    return out


def summary_table(result: dict[str, Any]) -> str:
    """One row per mode and subset."""
    rows = []
    for mode, by_subset in result["modes"].items():
        for subset, m in by_subset.items():
            rows.append([mode, subset.replace("_", " "), str(result["clips"][subset]),
                         f"{result['answerable'][subset]} / {result['queries']}",
                         *(f"{m[f'R@{k}']:.3f}" for k in KS), f"{m['mAP@10']:.3f}", f"{m['R@5 answerable']:.3f}"])
    head = ["mode", "searched", "clips", "queries with a relevant clip", *(f"R@{k}" for k in KS), "mAP@10",
            "R@5 answerable"]
    return markdown_table(head, rows, right={2, 4, 5, 6, 7, 8})


def per_query_table(result: dict[str, Any]) -> str:
    """One row per query: relevant clips and R@5 per mode, all clips / held out."""
    modes = list(result["modes"])
    rows = []
    for q in result["per_query"]:
        cells = [f"{q['R@5'][m].get('all', 0)} / {q['R@5'][m].get('held_out', '-')}" for m in modes]
        rows.append([q["query"], f"{q['relevant']['all']} / {q['relevant']['held_out']}", *cells])
    head = ["query", "relevant (all / held out)", *(f"R@5 {m} (all / held out)" for m in modes)]
    return markdown_table(head, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint folder or Hub id (default: the bundled model)")
    parser.add_argument("--gallery", type=Path, default=ROOT / "bundled_gallery", help="gallery folder")
    parser.add_argument("--queries", type=Path, default=DEFAULT_QUERIES, help="queries file")
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (default: the app's)")
    parser.add_argument("--per-query", action="store_true", help="also print R@5 of every query")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    model = load_model(args.model)
    gallery = index_gallery(model, [args.gallery], cache_dir=args.cache_dir, progress=False)
    unjudged = unjudged_clips(args.queries, gallery)
    if unjudged:
        logger.warning("%d gallery clip(s) come from packages the queries were not judged over (e.g. %s): they "
                       "count as not relevant; judge them in %s", len(unjudged), unjudged[0], args.queries)
    result = {"model": args.model or "bundled", "model_fingerprint": model_fingerprint(model),
              "gallery": str(args.gallery), "unjudged_clips": len(unjudged),
              **evaluate(model, gallery, load_queries(args.queries))}
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(summary_table(result))
    if args.per_query:
        print()
        print(per_query_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
