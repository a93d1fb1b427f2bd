"""``python -m atr_demo``: label clips, search a sound library by text, export embeddings.

Every command prints a readable table, or JSON with ``--json``. User errors (bad audio, bad
model, bad labels) print one line to stderr and exit with status 1; nothing is lost: files that
could be processed are still reported.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import save_file

from atr_demo.errors import ATRError
from atr_demo.gallery import index_gallery
from atr_demo.model import load_model
from atr_demo.retrieval import MODES
from atr_demo.search import label_clips, search_text
from atr_demo.zeroshot import embed_labels, load_labels

logger = logging.getLogger("atr_demo")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None,
        help="checkpoint folder, hub repo id, 'tiny', 'aisfx-minilm' (default: the bundled model)",
    )
    parser.add_argument("--revision", default=None, help="hub revision of --model")
    parser.add_argument(
        "--cache-dir", default=None, help="embedding cache folder (default: ~/.cache/atr_demo/embeddings)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m atr_demo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    label = sub.add_parser("label", help="zero-shot labels for audio files (ESC-50 or your own list)")
    label.add_argument("paths", nargs="+", help="audio files or folders (searched recursively)")
    label.add_argument("--labels", default="esc50", help="'esc50' or a text file with one label per line")
    label.add_argument("--top", type=int, default=5, help="labels to show per file")
    label.add_argument("--template", action="append", default=None, help="prompt template with {} (repeatable)")
    label.add_argument("--mode", choices=MODES, default=None, help="scoring (default: the model's)")
    _common(label)

    search = sub.add_parser("search", help="find the sounds in a folder that match text queries")
    search.add_argument("queries", nargs="+", help="one or more text queries")
    search.add_argument("--gallery", required=True, help="folder of audio files (searched recursively)")
    search.add_argument("--k", type=int, default=10, help="results per query")
    search.add_argument("--mode", choices=MODES, default=None, help="scoring (default: the model's)")
    _common(search)

    embed = sub.add_parser("embed", help="write joint-space embeddings of audio files")
    embed.add_argument("paths", nargs="+", help="audio files or folders")
    embed.add_argument("--out", required=True, help="output .safetensors or .npy")
    _common(embed)
    return parser


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        sys.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _report_skipped(skipped: list[tuple[Path, str]]) -> None:
    for path, reason in skipped:
        sys.stderr.write(f"skipped {path}: {reason}\n")


def cmd_label(args: argparse.Namespace) -> int:
    model = load_model(args.model, args.revision)
    labels = load_labels(args.labels)
    gallery = index_gallery(model, args.paths, cache_dir=args.cache_dir, progress=not args.json)
    _report_skipped(gallery.skipped)
    mode = args.mode or model.config.scoring
    results: list[dict[str, Any]] = []
    if len(gallery):
        label_set = embed_labels(model, labels, args.template)
        results = label_clips(model, gallery.files, gallery.embeddings, label_set, top=args.top, mode=mode)
    if args.json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    elif results:
        rows = [("file", "label", "score")]
        for r in results:
            for n, lab in enumerate(r["labels"]):
                rows.append((r["file"] if n == 0 else "", lab["label"], f"{lab['score']:.3f}"))
        _print_table(rows)
    return 1 if gallery.skipped else 0


def cmd_search(args: argparse.Namespace) -> int:
    model = load_model(args.model, args.revision)
    gallery = index_gallery(model, args.gallery, cache_dir=args.cache_dir, progress=not args.json)
    _report_skipped(gallery.skipped)
    if not len(gallery):
        raise ATRError(f"no usable audio files in {args.gallery}")
    results = search_text(model, gallery, args.queries, k=args.k, mode=args.mode or model.config.scoring)
    if args.json:
        slim = [
            {
                "query": r["query"],
                "results": [
                    {"file": x["file"], "score": x["score"], **({"caption": x["caption"]} if "caption" in x else {})}
                    for x in r["results"]
                ],
            }
            for r in results
        ]
        sys.stdout.write(json.dumps(slim, indent=2) + "\n")
    else:
        rows = [("query", "rank", "score", "file")]
        for r in results:
            for n, hit in enumerate(r["results"], 1):
                rows.append((r["query"] if n == 1 else "", str(n), f"{hit['score']:.4f}", hit["file"]))
        _print_table(rows)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    model = load_model(args.model, args.revision)
    gallery = index_gallery(model, args.paths, cache_dir=args.cache_dir, progress=not args.json)
    _report_skipped(gallery.skipped)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = [str(f) for f in gallery.files]
    if out.suffix == ".npy":
        np.save(out, gallery.embeddings.numpy())
        out.with_suffix(".files.txt").write_text("\n".join(files) + "\n", encoding="utf-8")
    elif out.suffix == ".safetensors":
        save_file(
            {"embeddings": gallery.embeddings.contiguous()},
            str(out),
            {"files": json.dumps(files), "model": model.config.name},
        )
    else:
        raise ATRError(f"--out must end in .safetensors or .npy, got {out.name}")
    summary = {"out": str(out), "count": len(files), "dim": int(gallery.embeddings.shape[1])}
    message = f"wrote {summary['count']} embeddings of dim {summary['dim']} to {out}"
    sys.stdout.write((json.dumps(summary) if args.json else message) + "\n")
    return 1 if gallery.skipped else 0


COMMANDS = {"label": cmd_label, "search": cmd_search, "embed": cmd_embed}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return COMMANDS[args.command](args)
    except ATRError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
