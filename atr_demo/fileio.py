"""Shared file I/O: atomic writes, file digests, the content-addressed tensor store, the cache home,
the audio extensions and Markdown tables.

Atomic writes go to a hidden temporary file in the target's own folder (``.<name>.<pid>.<token>.tmp``,
created with the process umask), are flushed to disk with ``fsync`` and then renamed over the
target with :func:`os.replace`, so a reader sees either the old file or the new one, never a
partial one; if writing fails the temporary file is removed and the target is left untouched.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
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


@contextlib.contextmanager
def folder_lock(folder: str | Path, shared: bool = False) -> Iterator[None]:
    """Hold an advisory ``flock`` on ``folder`` itself (exclusive, or shared when ``shared``).

    Locking the folder's own descriptor leaves no lock file behind. Writers of the stores in one
    folder take it exclusively around read-merge-write; readers take it shared, so they never see
    a half-finished fold of segments. The folder must exist.
    """
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


#: Tensor names of the matrix form of a store file: keys (UTF-8, ``\n``-joined, as uint8) and rows.
_KEYS, _ROWS = "__keys__", "__rows__"
#: Stores with more entries than this are written in matrix form (one tensor, no per-key header).
MATRIX_THRESHOLD = 50_000


def _write_entries(path: Path, entries: dict[str, torch.Tensor], matrix: bool) -> None:
    """Write ``entries`` to ``path`` atomically: one tensor per key, or (``matrix``) one stacked matrix.

    The matrix form holds ``__rows__`` (n, *shape) and ``__keys__`` (the keys joined by ``\n``, UTF-8
    bytes as uint8), so the safetensors header stays small whatever the number of keys. It needs
    keys without ``\n`` and values of one shape; otherwise the per-key form is written.
    """
    from safetensors.torch import save_file

    shapes = {tuple(v.shape) for v in entries.values()}
    if matrix and len(shapes) == 1 and not any("\n" in k for k in entries):
        keys = list(entries)
        blob = torch.frombuffer(bytearray("\n".join(keys).encode("utf-8")) or bytearray(1), dtype=torch.uint8)
        tensors = {_KEYS: blob.clone(), _ROWS: torch.stack([entries[k] for k in keys])}
    else:
        tensors = entries

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp))

    atomic_write(path, write)


def _read_entries(path: Path) -> dict[str, torch.Tensor]:
    """The ``key → tensor`` entries of a store file in either form (see :func:`_write_entries`)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    if _ROWS in tensors and _KEYS in tensors:
        rows = tensors[_ROWS]
        keys = bytes(tensors[_KEYS].numpy()).decode("utf-8").split("\n") if len(rows) else []
        if len(keys) != len(rows):
            raise ValueError(f"{len(keys)} keys for {len(rows)} rows")
        return dict(zip(keys, rows, strict=True))
    return dict(tensors)


class TensorStore:
    """A content-addressed ``key → tensor`` store kept in one safetensors file, safe to share.

    Keys are strings (e.g. a SHA-256 of the content the tensor was computed from); values are
    float32 CPU tensors (typically ``(D,)`` embeddings or features). Small stores are a plain
    safetensors file with one tensor per key and no metadata, so any earlier cache file of that
    form loads; above :data:`MATRIX_THRESHOLD` entries of one shape the file holds one stacked
    matrix instead (no 100 MB header limit, one read). A missing file is an empty store; a damaged
    one is logged and treated as empty (it is rebuilt, never fatal).

    Sharing and progress (several processes may use one store at once):

    * :meth:`checkpoint` writes the entries :meth:`put` since the last checkpoint or save to a new
      *segment* file in ``.<name>.segments/`` beside the store (cheap: only the new rows), so a long
      job killed midway keeps everything it checkpointed. Opening a store reads the main file and
      every segment.
    * :meth:`save` folds: under an exclusive :func:`folder_lock` on the store's folder it re-reads
      the main file and the segments (other writers' work), takes the union with this store's
      entries, rewrites the main file atomically and removes the folded segments. It writes only
      when this store changed something since it was loaded or last saved, or segments are waiting.
    """

    def __init__(self, path: str | Path, what: str = "tensor cache") -> None:
        """Open the store at ``path``; ``what`` names it in log messages (e.g. ``"embedding cache"``)."""
        self.path = Path(path)
        self.what = what
        self.entries: dict[str, torch.Tensor] = {}
        self.dirty = False
        self._pending: list[str] = []  # keys put since the last checkpoint or save
        if self.path.parent.is_dir():
            with folder_lock(self.path.parent, shared=True):
                self.entries = self._read_all()

    @property
    def segment_dir(self) -> Path:
        """The hidden folder of this store's checkpoint segments."""
        return self.path.with_name(f".{self.path.name}.segments")

    def _segments(self) -> list[Path]:
        return sorted(self.segment_dir.glob("*.safetensors")) if self.segment_dir.is_dir() else []

    def _read_all(self) -> dict[str, torch.Tensor]:
        """Main file and segments united (call with the folder locked)."""
        entries: dict[str, torch.Tensor] = {}
        for path in [self.path, *self._segments()]:
            if not path.is_file():
                continue
            try:
                entries.update(_read_entries(path))
            except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
                logger.warning("ignoring damaged %s %s (%s)", self.what, path, exc)
        return entries

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
        self._pending.append(key)
        self.dirty = True

    def checkpoint(self) -> None:
        """Write the entries put since the last checkpoint/save to a new segment file (if any).

        A segment is written atomically under a unique name, so concurrent writers never collide
        and a reader sees whole segments only.
        """
        keys = [k for k in dict.fromkeys(self._pending) if k in self.entries]
        if not keys:
            return
        self.segment_dir.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.safetensors"
        _write_entries(self.segment_dir / name, {k: self.entries[k] for k in keys}, matrix=True)
        self._pending.clear()

    def save(self) -> None:
        """Fold other writers' entries and all segments into the main file (see the class docstring)."""
        if not self.dirty and not self._segments():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.path.parent):
            segments = self._segments()
            on_disk = self._read_all()
            merged = {**on_disk, **self.entries}
            if self.dirty or segments or len(merged) != len(on_disk):
                _write_entries(self.path, merged, matrix=len(merged) > MATRIX_THRESHOLD)
            for segment in segments:
                segment.unlink(missing_ok=True)
            if segments:
                with contextlib.suppress(OSError):
                    self.segment_dir.rmdir()
        self.entries = merged
        self._pending.clear()
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
