"""``python -m atr_demo``: label clips, search a sound library by text, export embeddings.

Every command prints a readable table, or JSON with ``--json``. User errors (bad model, bad
labels, bad template, bad output path, a value out of range) print one line to stderr and exit
with status 1. Files are handled one by one: a file that cannot be read or decoded is reported
on stderr (``skipped FILE: reason``) and, for ``label --json``, as ``{"file", "error"}`` in the
output; the others are still processed, and the exit status is 1. ``search`` names clips relative
to the ``--gallery`` folder.
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

from atr_demo.errors import ATRError, InputFileError
from atr_demo.gallery import index_gallery
from atr_demo.index.commands import add_index_parser, cmd_index, gallery_from_index, run_index_search
from atr_demo.limits import Limits, check_k
from atr_demo.model import load_model
from atr_demo.retrieval import MODES
from atr_demo.search import anchor_picks, display_name, label_clips, search_text
from atr_demo.zeroshot import check_template, embed_labels, load_labels

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
    label.add_argument("paths", nargs="*", help="audio files or folders (searched recursively)")
    label.add_argument("--index", default=None, help="label the clips of this index (or those under paths)")
    label.add_argument("--labels", default="esc50", help="'esc50' or a text file with one label per line")
    label.add_argument("--top", type=int, default=5, help="labels to show per file")
    label.add_argument("--template", action="append", default=None, help="prompt template with {} (repeatable)")
    label.add_argument("--mode", choices=MODES, default=None, help="scoring (default: the model's)")
    label.add_argument(
        "--anchors", action="append", default=None,
        help="transport mode: other audio files or folders solved together with yours, so that the "
             "plan can balance the labels over a batch (repeatable; needed when there are fewer files than labels)",
    )
    label.add_argument("--max-prompts", type=int, default=None,
                       help="most prompts (labels × templates) embedded (default: $ATR_MAX_PROMPTS or 1000)")
    _common(label)

    search = sub.add_parser("search", help="find the sounds in a folder that match text queries")
    search.add_argument("queries", nargs="+", help="one or more text queries")
    search.add_argument("--gallery", default=None, help="folder of audio files (searched recursively)")
    search.add_argument("--index", default=None, help="search this index (python -m atr_demo index) instead")
    search.add_argument("--no-refresh", action="store_true", help="with --index: skip the update check")
    search.add_argument("--exact", action="store_true", help="with --index: exact search, no ANN")
    search.add_argument("--k", type=int, default=10, help="results per query")
    search.add_argument("--mode", choices=MODES, default=None, help="scoring (default: the model's)")
    _common(search)

    embed = sub.add_parser("embed", help="write joint-space embeddings of audio files")
    embed.add_argument("paths", nargs="+", help="audio files or folders")
    embed.add_argument("--out", required=True, help="output .safetensors or .npy")
    _common(embed)
    add_index_parser(sub, _common)
    return parser


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        sys.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _report_skipped(skipped: list[tuple[Path, str]], roots: list[str] | None = None) -> None:
    for path, reason in skipped:
        sys.stderr.write(f"skipped {display_name(path, roots or [])}: {reason}\n")


def _check_out(out: Path) -> None:
    """Refuse an ``embed --out`` that cannot be written, before any work is done."""
    example = f"e.g. {out / 'embeddings.safetensors'}" if out.is_dir() else "e.g. embeddings.safetensors"
    if out.is_dir():
        raise InputFileError(f"--out {out} is a folder; give a file path ending in .safetensors or .npy, {example}")
    if out.suffix not in (".safetensors", ".npy"):
        raise InputFileError(f"--out must end in .safetensors or .npy, got {out.name!r}; {example}")
    if out.parent.exists() and not out.parent.is_dir():
        raise InputFileError(f"--out {out}: {out.parent} is a file, not a folder; choose another path")


def cmd_label(args: argparse.Namespace) -> int:
    top = check_k(args.top, what="--top")
    labels = load_labels(args.labels)
    templates = [check_template(t) for t in args.template] if args.template else None
    max_prompts = args.max_prompts or Limits.from_env().max_prompts
    model = load_model(args.model, args.revision)
    templates = templates or list(model.config.prompt_templates)
    label_set = embed_labels(model, labels, templates, max_prompts=max_prompts)
    if args.index:
        gallery = gallery_from_index(model, args.index, args.paths)
    elif args.paths:
        gallery = index_gallery(model, args.paths, cache_dir=args.cache_dir, progress=not args.json)
    else:
        raise ATRError("label needs audio files or folders, or --index INDEX")
    _report_skipped(gallery.skipped)
    mode = args.mode or model.config.scoring
    anchors = None
    if mode == "transport":
        anchors = _transport_anchors(model, args, n_files=len(gallery.files), n_labels=len(label_set.labels))
    labelled = label_clips(model, gallery.files, gallery.embeddings, label_set, top=top, mode=mode, anchors=anchors)
    # one row per file found: its labels, or (after the labelled ones) why it has none
    results: list[dict[str, Any]] = labelled + [{"file": str(f), "error": reason} for f, reason in gallery.skipped]
    if args.json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    elif results:
        rows = [("file", "label", "score")]
        for r in results:
            if "error" in r:
                rows.append((r["file"], "(skipped: see above)", ""))
            for n, lab in enumerate(r.get("labels", [])):
                rows.append((r["file"] if n == 0 else "", lab["label"], f"{lab['score']:.3f}"))
        _print_table(rows)
    return 1 if gallery.skipped else 0


def _transport_anchors(model: Any, args: argparse.Namespace, n_files: int, n_labels: int) -> Any:
    """Embeddings of ``--anchors`` clips for transport labelling, or ``None`` when the files alone suffice.

    The transport plan gives every label an equal share of the mass over the clips it sees; with
    fewer clips than labels (one file and 50 ESC-50 labels) every label gets the same score, which
    says nothing. Such a run needs other clips to compete with (``--anchors``), or cosine scoring.
    """
    if not args.anchors:
        if n_files < n_labels:
            raise ATRError(
                f"--mode transport balances the {n_labels} labels over the clips it labels, and {n_files} "
                f"file(s) give every label the same score; add --anchors FOLDER (other clips to solve with, "
                f"e.g. bundled_gallery/audio) or use --mode cosine"
            )
        return None
    anchor_gallery = index_gallery(model, args.anchors, cache_dir=args.cache_dir, progress=not args.json)
    _report_skipped(anchor_gallery.skipped)
    if not len(anchor_gallery.files):
        raise ATRError("--anchors holds no usable audio files; give a folder of audio clips")
    return anchor_gallery.embeddings[anchor_picks(len(anchor_gallery.files))]


def cmd_search(args: argparse.Namespace) -> int:
    k = check_k(args.k, what="--k")
    if args.index:
        return run_index_search(args, k, lambda results: _write_search_results(results, args.json))
    if not args.gallery:
        raise ATRError("search needs --gallery FOLDER or --index INDEX")
    model = load_model(args.model, args.revision)
    gallery = index_gallery(model, args.gallery, cache_dir=args.cache_dir, progress=not args.json)
    _report_skipped(gallery.skipped, [args.gallery])
    if not len(gallery):
        why = f" ({len(gallery.skipped)} file(s) skipped, see above)" if gallery.skipped else ""
        raise ATRError(f"no usable audio files in {args.gallery}{why}; add audio files (wav, flac, mp3, ...) to it")
    results = search_text(
        model, gallery, args.queries, k=k, mode=args.mode or model.config.scoring, roots=[args.gallery]
    )
    _write_search_results(results, args.json)
    return 1 if gallery.skipped else 0


def _write_search_results(results: list[dict[str, Any]], as_json: bool) -> None:
    """Print ``[{"query", "results": [{"file", "score", "caption"?}]}]`` as JSON or as a table."""
    if as_json:
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
        return
    rows = [("query", "rank", "score", "file")]
    for r in results:
        for n, hit in enumerate(r["results"], 1):
            rows.append((r["query"] if n == 1 else "", str(n), f"{hit['score']:.4f}", hit["file"]))
    _print_table(rows)


def cmd_embed(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _check_out(out)
    model = load_model(args.model, args.revision)
    gallery = index_gallery(model, args.paths, cache_dir=args.cache_dir, progress=not args.json)
    _report_skipped(gallery.skipped)
    files = [str(f) for f in gallery.files]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".npy":
            np.save(out, gallery.embeddings.numpy())
            out.with_suffix(".files.txt").write_text("\n".join(files) + "\n", encoding="utf-8")
        else:
            save_file(
                {"embeddings": gallery.embeddings.contiguous()},
                str(out),
                {"files": json.dumps(files), "model": model.config.name},
            )
    except OSError as exc:
        raise InputFileError(f"--out {out} cannot be written ({exc.strerror or exc}); choose a writable path") from exc
    summary = {
        "out": str(out), "count": len(files), "dim": int(gallery.embeddings.shape[1]),
        "skipped": [{"file": str(f), "error": reason} for f, reason in gallery.skipped],
    }
    message = f"wrote {summary['count']} embeddings of dim {summary['dim']} to {out}"
    sys.stdout.write((json.dumps(summary) if args.json else message) + "\n")
    return 1 if gallery.skipped else 0


def _not_a_skip_warning(record: logging.LogRecord) -> bool:
    """Logging filter: drop the library's per-file "skipping FILE: reason" warnings."""
    return not str(record.msg).startswith("skipping %s")


COMMANDS = {"label": cmd_label, "search": cmd_search, "embed": cmd_embed, "index": cmd_index}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:  # skipped files are reported once, by _report_skipped
        if _not_a_skip_warning not in handler.filters:
            handler.addFilter(_not_a_skip_warning)
    try:
        return COMMANDS[args.command](args)
    except ATRError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except OSError as exc:  # a path the process cannot read or write: one line, not a traceback
        where = f" {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"error: cannot access{where} ({exc.strerror or exc}); check the path and its permissions\n")
        return 1
