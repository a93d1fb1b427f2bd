"""What the transformers towers (``hf_audio``, ``hf_text``) share: where their files come from.

A trained tower is stored in a checkpoint with its weights (in ``model.safetensors``), its
transformers config and its tokenizer or feature extractor (in a sub-folder), and the source it
started from, pinned: the hub id with the commit hash it resolved to in the hub cache, or a local
folder with a digest of its files (a local folder has no revision).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from atr_demo.errors import CheckpointError
from atr_demo.fileio import file_digest

logger = logging.getLogger(__name__)

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")

#: Prefix of :func:`folder_digest`'s value, naming the hash.
DIGEST_PREFIX = "sha256:"


def folder_digest(folder: str | Path) -> str:
    """``sha256:<hex>`` over the relative path and SHA-256 of every file under ``folder`` (sorted,
    hidden files and folders skipped): the content address of a local model folder."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(f"{relative.as_posix()}\0{file_digest(path)}\n".encode())
    return DIGEST_PREFIX + digest.hexdigest()


def cached_commit(repo_id: str, revision: str | None = None) -> str | None:
    """The commit hash ``repo_id`` at ``revision`` (default ``main``) resolves to in the local hub
    cache, or ``None`` when the cache does not hold it (nothing is downloaded)."""
    if revision is not None and _COMMIT_RE.match(revision):
        return revision
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - a malformed id or cache: no pin, not an error
        return None
    if not isinstance(path, str):
        return None
    commit = Path(path).parent.name
    return commit if _COMMIT_RE.match(commit) else None


def pin_source(name: str, source: str, revision: str | None) -> tuple[str | None, str | None]:
    """``(revision, source_digest)`` that pin where a tower's files came from.

    Args:
        name: the configured hub id or local folder.
        source: what ``from_pretrained`` actually opened (``name``, a hub snapshot folder, or a
            packaged copy of a hub model).
        revision: the configured revision.

    A local ``name`` is pinned by :func:`folder_digest`; a hub id by the commit its revision
    resolves to in the hub cache; a hub id served from another local folder (a packaged copy) by
    that folder's digest.
    """
    if Path(name).is_dir():
        return revision, folder_digest(name)
    commit = cached_commit(name, revision)
    if commit is not None:
        return commit, None
    if Path(source).is_dir():
        return revision, folder_digest(source)
    return revision, None


def load_error(what: str, name: str, exc: Exception) -> CheckpointError:
    """The error for a tower whose files cannot be opened."""
    return CheckpointError(
        f"cannot load the {what} backbone {name!r}: {exc}. Give a local directory, a hub id that is "
        "cached, or go online"
    )
