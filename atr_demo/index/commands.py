"""The CLI's index parts: ``python -m atr_demo index``, ``search --index`` and ``label --index``.

Kept here so :mod:`atr_demo.cli` only wires them in.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from atr_demo.errors import ATRError
from atr_demo.gallery import Gallery
from atr_demo.index.ann import ANN_THRESHOLD
from atr_demo.index.build import build_index, dist_from_env
from atr_demo.index.store import read_header
from atr_demo.model import ATRModel, load_model


def add_index_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``index`` sub-command (``common`` adds --model, --cache-dir, --json, -v)."""
    index = sub.add_parser(
        "index", help="build or update a persistent search index of audio folders (resumable, incremental)",
    )
    index.add_argument("folders", nargs="+", help="folders of audio files (searched recursively)")
    index.add_argument("--out", required=True, help="index folder to create or update")
    index.add_argument("--fp16", action="store_true", help="store embeddings as float16 (half the bytes)")
    index.add_argument("--no-transport", action="store_true", help="skip the transport-mode precompute")
    index.add_argument("--ann-threshold", type=int, default=ANN_THRESHOLD,
                       help=f"build an IVF (FAISS) at this many clips or more (default {ANN_THRESHOLD})")
    index.add_argument("--batch-size", type=int, default=8, help="clips per CNN batch")
    common(index)


def cmd_index(args: argparse.Namespace) -> int:
    """Build/update the index; under ``torchrun`` the processes share the work (rank 0 reports)."""
    dist = dist_from_env()
    model = load_model(args.model, args.revision)
    summary = build_index(
        model, args.folders, args.out, cache_dir=args.cache_dir, fp16=args.fp16, transport=not args.no_transport,
        ann_threshold=args.ann_threshold, batch_size=args.batch_size, progress=not args.json, dist=dist,
    )
    dist.close()
    if dist.rank != 0:
        return 0
    for path, reason in summary["skipped"]:
        sys.stderr.write(f"skipped {path}: {reason}\n")
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        ann = summary["ann"]
        params = ", ".join(f"{k}={v}" for k, v in ann.items() if k != "type")
        sys.stdout.write(
            f"index {summary['index']}: {summary['clips']} clips ({summary['reused']} unchanged, "
            f"{summary['embedded']} embedded with {summary['precision']}, {summary['removed']} removed); "
            f"search: {ann['type']} ({params})\n"
        )
    return 1 if summary["skipped"] else 0


def refresh_index(model: ATRModel, index: str, cache_dir: str | None, progress: bool) -> None:
    """Bring ``index`` up to date with its folders (new, changed, deleted files) before searching."""
    header = read_header(index)
    from atr_demo.index.store import resolve_roots

    roots = [r for r in resolve_roots(Path(index), header) if r.exists()]
    if roots:
        build_index(model, roots, index, cache_dir=cache_dir, fp16=header.get("dtype") == "float16",
                    transport=header.get("transport") is not None,
                    ann_threshold=int(header["ann"].get("threshold", ANN_THRESHOLD)), progress=progress)


def run_index_search(
    args: argparse.Namespace, k: int, write_results: Callable[[list[dict[str, Any]]], None]
) -> int:
    """``search QUERY... --index INDEX``: refresh the index (unless --no-refresh), search it, and hand
    the results (``[{"query", "results": [...]}]``) to ``write_results`` (the CLI's printer)."""
    from atr_demo.index import open_index, search_text_index

    model = load_model(args.model, args.revision)
    if not getattr(args, "no_refresh", False):
        refresh_index(model, args.index, args.cache_dir, progress=not args.json)
    searcher = open_index(model, args.index)
    if not len(searcher.data):
        raise ATRError(f"index {args.index} holds no clips; add audio files to its folders and re-run index")
    method = "exact" if getattr(args, "exact", False) else "auto"
    results = search_text_index(model, searcher, args.queries, k=k, mode=args.mode or model.config.scoring,
                                method=method)
    write_results(results)
    return 0


def gallery_from_index(model: ATRModel, index: str, paths: list[str] | None = None) -> Gallery:
    """The clips of ``index`` as a :class:`Gallery` (all of them, or those under ``paths``)."""
    from atr_demo.gallery import model_fingerprint
    from atr_demo.index.store import read_index

    data = read_index(index, model_fingerprint(model), model.config.name)
    wanted = [Path(p).expanduser().resolve() for p in paths or []]
    keep = [i for i in range(len(data))
            if not wanted or any(data.file(i) == w or w in data.file(i).parents for w in wanted)]
    return Gallery(
        files=[data.file(i) for i in keep],
        embeddings=torch.from_numpy(data.embeddings[keep].astype("float32")) if keep
        else torch.empty(0, data.embeddings.shape[1]),
        metadata=[data.row_meta(i) for i in keep],
    )
