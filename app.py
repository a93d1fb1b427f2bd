"""atr-demo's Gradio app: ``python app.py [--model M] [--gallery DIR]``.

Serves on port 7860: on 127.0.0.1 locally, on all interfaces when running in a Hugging Face
Space (``SPACE_ID`` set). The model is the bundled checkpoint unless ``--model`` / ``ATR_MODEL``
names a checkpoint folder, a built-in model (``tiny``, ``aisfx-minilm``) or a Hub repo id
(with ``--revision``). The gallery is ``bundled_gallery/`` unless ``--gallery DIR`` is given;
it is indexed with a progress bar and an on-disk embedding cache (the bundled gallery ships its
embeddings for the bundled model, so start-up embeds nothing unless a file or the model changed).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
BUNDLED_GALLERY = ROOT / "bundled_gallery"
DEFAULT_PORT = 7860

logger = logging.getLogger("atr_demo.app")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description="atr-demo: audio-text retrieval with optimal transport (Gradio app)")
    parser.add_argument("--model", default=os.environ.get("ATR_MODEL") or None,
                        help="checkpoint folder, built-in name (tiny, aisfx-minilm) or Hub repo id "
                             "(default: $ATR_MODEL, else the bundled checkpoint)")
    parser.add_argument("--revision", default=os.environ.get("ATR_MODEL_REVISION") or None,
                        help="Hub branch, tag or commit of --model")
    parser.add_argument("--gallery", action="append", type=Path, default=None, metavar="DIR",
                        help="folder of audio files to search, indexed recursively (repeatable; "
                             f"default: {BUNDLED_GALLERY.name}/ when it exists)")
    parser.add_argument("--index", type=Path, default=None, metavar="INDEX",
                        help="serve a search index built with 'python -m atr_demo index' (opened, not re-indexed)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="embedding cache folder (default: ~/.cache/atr_demo)")
    parser.add_argument("--max-upload-s", type=float, default=None,
                        help="longest accepted upload in seconds (default: $ATR_MAX_UPLOAD_S or 120)")
    parser.add_argument("--max-upload-mb", type=float, default=None,
                        help="largest accepted upload in MB (default: $ATR_MAX_UPLOAD_MB or 50)")
    parser.add_argument("--max-files", type=int, default=None,
                        help="files per zero-shot request (default: $ATR_MAX_FILES or 8)")
    parser.add_argument("--max-prompts", type=int, default=None,
                        help="prompts (labels × templates) per zero-shot request (default: $ATR_MAX_PROMPTS or 1000)")
    parser.add_argument("--upload-ttl-s", type=int, default=None,
                        help="uploads are deleted after this many seconds (default: $ATR_UPLOAD_TTL_S or 3600)")
    parser.add_argument("--host", default=None, help="interface to bind (default: 0.0.0.0 in a Space, else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", DEFAULT_PORT)))
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link (off by default)")
    parser.add_argument("--concurrency", type=int, default=2, help="requests processed at once")
    args = parser.parse_args(argv)
    if args.gallery is None and args.index is not None:
        args.gallery = []
    if args.gallery is None:
        if not BUNDLED_GALLERY.is_dir():
            parser.error(f"no bundled gallery at {BUNDLED_GALLERY}: pass --gallery DIR (a folder of audio files)")
        args.gallery = [BUNDLED_GALLERY]
    if args.host is None:
        args.host = "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"
    return args


def main(argv: list[str] | None = None) -> int:
    """Load the model, index the gallery, build the demo and serve it (blocks until stopped)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)

    from atr_demo.errors import ATRError
    from atr_demo.limits import Limits
    from atr_demo.model import load_model
    from atr_demo.ui import build_demo, launch_options, make_state

    try:
        limits = Limits.from_env().replace(
            max_upload_s=args.max_upload_s, max_upload_mb=args.max_upload_mb, max_files=args.max_files,
            max_prompts=args.max_prompts, upload_ttl_s=args.upload_ttl_s,
        )
        model = load_model(args.model, revision=args.revision)
        state = make_state(model, args.gallery, cache_dir=args.cache_dir, progress=True,
                           max_upload_s=limits.max_upload_s, limits=limits)
        if args.index is not None:  # the index's own search and columns: nothing built per clip
            from atr_demo.index import open_index
            from atr_demo.index.view import IndexGallery

            searcher = open_index(model, args.index)
            state.gallery = IndexGallery(searcher).extend(state.gallery)
            state.roots = list(searcher.data.roots) + state.roots
        state.model_ref = (args.model or "bundled checkpoint") + (f" @ {args.revision}" if args.revision else "")
    except ATRError as exc:
        logger.error("%s", exc)
        return 2
    demo = build_demo(state)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=64)
    demo.launch(
        server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=True,
        **launch_options(state),
    )
    state.warm_up_in_background()  # after the page is served; a request needing a cache meanwhile fills it
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
