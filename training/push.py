"""``python -m training push --model DIR --repo-id ID [--private] [--revision BRANCH] [--eval FILE]``.

Refreshes the folder's model card, creates the Hub repo if needed (and the branch when a
revision is given), then uploads the folder's allow-listed files (:data:`ALLOW_PATTERNS`:
safetensors weights, JSON configs and metrics, the model card, tokenizer and feature-extractor
files, plots). Optimiser state (``optimizer.safetensors``, ``trainer_state.json``), pickles,
TensorBoard event files and logs are never uploaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from atr_demo.errors import ATRError, CheckpointError
from atr_demo.model import load_from_dir

from training.model_card import write_model_card

logger = logging.getLogger(__name__)

#: The only files of a checkpoint folder that are uploaded.
ALLOW_PATTERNS = ["*.safetensors", "*.json", "README.md", "tokenizer*", "vocab.txt", "merges.txt", "spiece.model",
                  "sentencepiece.bpe.model", "*.png", "*.svg"]
#: Files that are never uploaded, even where an allow pattern matches them.
IGNORE_PATTERNS = ["optimizer.safetensors", "trainer_state.json", ".*", "*.pt", "*.pth", "*.bin", "*.pkl",
                   "*.pickle", "*events.out.tfevents*", "tb/*", "log.jsonl"]


def push(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    evaluation: dict[str, Any] | None = None,
    commit_message: str | None = None,
) -> str:
    """Validate ``folder`` (it must load strictly), write its card, upload it; return the commit URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    load_from_dir(folder)  # refuse to upload a checkpoint that does not load
    write_model_card(folder, evaluation, repo_id)
    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision,
        commit_message=commit_message or f"Upload {folder.name} with atr-demo",
        allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS,
    )
    return str(info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training push", description="upload a checkpoint folder to the Hub"
    )
    parser.add_argument("--model", required=True, help="checkpoint folder (e.g. runs/x/best)")
    parser.add_argument("--repo-id", required=True, help="owner/name on the Hugging Face Hub")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    parser.add_argument("--eval", dest="eval_file", default=None, help="evaluation JSON (from evaluate --out)")
    args = parser.parse_args(argv)
    try:
        evaluation = None
        if args.eval_file:
            path = Path(args.eval_file)
            if not path.is_file():
                raise CheckpointError(f"--eval: no file {path}")
            evaluation = json.loads(path.read_text(encoding="utf-8"))
            (Path(args.model) / "eval.json").write_text(json.dumps(evaluation, indent=2) + "\n", encoding="utf-8")
        url = push(args.model, args.repo_id, args.private, args.revision, evaluation)
    except ATRError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except Exception as exc:  # noqa: BLE001 - network/auth errors from the Hub client
        if type(exc).__module__.startswith("huggingface_hub") or isinstance(exc, OSError):
            sys.stderr.write(f"error: the upload to {args.repo_id} failed: {exc}\n")
            return 1
        raise
    sys.stdout.write(f"pushed {args.model} to {args.repo_id}: {url}\n")
    return 0
