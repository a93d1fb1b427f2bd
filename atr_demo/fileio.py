"""Shared file I/O: atomic writes, file digests, the content-addressed tensor store, the cache home,
the audio extensions and Markdown tables.

Atomic writes go to a hidden temporary file in the target's own folder (``.<name>.<pid>.<token>.tmp``,
created with the process umask), are flushed to disk with ``fsync`` and then renamed over the
target with :func:`os.replace`, so a reader sees either the old file or the new one, never a
partial one; if writing fails the temporary file is removed and the target is left untouched.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

#: Environment variable naming the cache home (default ``~/.cache/atr_demo``).
CACHE_HOME_ENV = "ATR_DEMO_HOME"

#: File suffixes (lower case) treated as audio when scanning folders: what
#: :func:`atr_demo.decoding.decode_audio` reads (mp4/m4v: their audio track).
AUDIO_EXTENSIONS: tuple[str, ...] = (
    ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".m4v", ".webm", ".wma", ".aiff", ".aif",
)


def cache_home() -> Path:
    """``$ATR_DEMO_HOME`` (``~`` expanded), or ``~/.cache/atr_demo`` when it is unset or empty.

    Sub-folders: ``embeddings/`` (gallery embeddings), ``features/`` (training feature cache),
    ``aisfx/`` (converted aiSFX weights).
    """
    return Path(os.environ.get(CACHE_HOME_ENV) or Path.home() / ".cache" / "atr_demo").expanduser()


def file_digest(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes (read in 1 MiB chunks): the content address of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- atomic writes ---------------------------------------------------------------------------


def _temp_path(path: Path) -> Path:
    """A fresh, hidden, empty file beside ``path`` (created exclusively, mode 0666 & ~umask)."""
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Create or replace file ``path`` atomically with what ``writer(tmp_path)`` writes.

    ``writer`` receives the path of an empty temporary file in ``path``'s folder and must write
    the complete content there (it may reopen or recreate that file). The folder must exist.
    If ``writer`` raises, the temporary file is removed, ``path`` is unchanged and the error
    propagates.
    """
    path = Path(path)
    tmp = _temp_path(path)
    try:
        writer(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically, encoded as ``encoding`` with no newline translation."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_replace_dir(tmp_dir: str | Path, target: str | Path) -> None:
    """Replace folder ``target`` by the complete folder ``tmp_dir`` with two renames.

    ``target`` is first renamed to ``<target>.old`` (a stale ``.old`` from an earlier interrupted
    swap is removed first), then ``tmp_dir`` is renamed to ``target`` and ``.old`` is removed. So
    ``<target>.old`` exists only in between: after an interruption, the newest complete folder is
    ``target`` if it exists, else ``<target>.old``. ``tmp_dir`` must be on the same file system.
    """
    tmp_dir, target = Path(tmp_dir), Path(target)
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp_dir, target)
    if old.exists():
        shutil.rmtree(old)


# -- content-addressed tensor store ----------------------------------------------------------


class TensorStore:
    """A content-addressed ``key → tensor`` store kept in one safetensors file.

    Keys are strings (e.g. a SHA-256 of the content the tensor was computed from); values are
    float32 CPU tensors (typically ``(D,)`` embeddings or features). The file is a plain
    safetensors file with one tensor per key and no metadata, so any earlier cache file of that
    form loads. A missing file is an empty store; a damaged one is logged and treated as empty
    (it is rebuilt, never fatal). :meth:`save` rewrites the file atomically, and only when
    :meth:`put` changed something since the last load or save.
    """

    def __init__(self, path: str | Path, what: str = "tensor cache") -> None:
        """Open the store at ``path``; ``what`` names it in log messages (e.g. ``"embedding cache"``)."""
        from safetensors.torch import load_file

        self.path = Path(path)
        self.what = what
        self.entries: dict[str, torch.Tensor] = {}
        self.dirty = False
        if self.path.is_file():
            try:
                self.entries = dict(load_file(str(self.path)))
            except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
                logger.warning("ignoring damaged %s %s (%s)", what, self.path, exc)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> torch.Tensor:
        """The tensor stored under ``key`` (``KeyError`` when absent)."""
        return self.entries[key]

    def put(self, key: str, value: torch.Tensor) -> None:
        """Store a detached float32 CPU copy of ``value`` under ``key`` and mark the store dirty."""
        self.entries[key] = value.detach().to("cpu", torch.float32).contiguous().clone()
        self.dirty = True

    def save(self) -> None:
        """Write the file atomically (creating its folder) if anything changed; else do nothing."""
        from safetensors.torch import save_file

        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entries = self.entries

        def write(tmp: Path) -> None:
            save_file(entries, str(tmp))

        atomic_write(self.path, write)
        self.dirty = False


# -- Markdown --------------------------------------------------------------------------------


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[str]], right: Collection[int] = ()) -> str:
    """A GitHub-flavoured Markdown table, lines joined by ``\\n`` with no trailing newline.

    Each row is written ``"| " + " | ".join(cells) + " |"`` (an empty cell gives ``|  |``); the
    separator line is ``|---|`` per column, ``|---:|`` for the column indices in ``right``
    (right-aligned). Cells are written as given: format numbers before calling.
    """
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    lines = [line(head), "|" + "".join("---:|" if i in right else "---|" for i in range(len(head)))]
    lines += [line(r) for r in rows]
    return "\n".join(lines)
