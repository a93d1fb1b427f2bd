"""The on-disk format of a search index, and reading it back.

An index is a folder::

    INDEX/
      index.json        header: format, model (name + fingerprint), count, dim, dtype, roots,
                        ANN type and parameters, transport anchors' settings, the other files' sizes
      embeddings.npy    (n, d) float16 or float32 L2-normalised clip embeddings (memory-mapped)
      metric.npy        (n, d) rows x Lᵀ in the metric's Euclidean space (only when M ≠ I)
      meta.json         text columns: path (relative to its root, POSIX), caption, licence (one JSON
                        list per column, n rows each)
      meta.npz          number columns as arrays: root (int32), size, mtime_ns (int64), duration
                        (float64, NaN: unknown), digest ((n, 32) uint8, the SHA-256 bytes)
      potentials.npy    (m,) float32 anchors' dual potentials for transport mode (optional)
      anchors.npy       (k, d) float32 anchor query embeddings they were solved with (optional)
      ann-<space>.faiss FAISS IVF of a search space (cosine; metric when M ≠ I), in FAISS's own file
                        format, memory-mapped when opened (optional; above a size threshold)

Roots are stored relative to the index folder (and absolute, as a fallback), so a library moved
together with its index keeps working. Every file is written atomically and the whole set under
an exclusive lock on the folder (:func:`atr_demo.fileio.folder_lock`); readers take the lock
shared while they open the files, so they never mix two versions.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atr_demo.errors import SearchIndexError
from atr_demo.fileio import atomic_write, atomic_write_text, folder_lock

logger = logging.getLogger(__name__)

FORMAT = 2
HEADER = "index.json"
EMBEDDINGS = "embeddings.npy"
METRIC = "metric.npy"
META = "meta.json"
META_ARRAYS = "meta.npz"
POTENTIALS = "potentials.npy"
ANCHORS = "anchors.npy"
ANN = "ann.faiss"  # the HNSW graphs of earlier releases (one npz); removed when an index is rewritten
#: Metadata columns, each a sequence of n values.
COLUMNS = ("root", "path", "digest", "size", "mtime_ns", "duration", "caption", "licence")
#: Columns stored as arrays in ``meta.npz`` (and held as :class:`Column` in memory), with their dtypes.
ARRAY_COLUMNS = {"root": np.int32, "size": np.int64, "mtime_ns": np.int64, "duration": np.float64}


class Column(Sequence[Any]):
    """A read-only metadata column over a numpy array: item ``i`` is a Python scalar (NaN → None).

    Held in memory instead of a list of Python objects: 4–8 bytes a row instead of 30–40.
    """

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def _item(self, v: Any) -> Any:
        out = v.item()
        return None if isinstance(out, float) and out != out else out

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._item(v) for v in self.values[i]]
        return self._item(self.values[i])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


class HexColumn(Column):
    """SHA-256 digests held as (n, 32) bytes; item ``i`` is the 64-character hex string."""

    def _item(self, v: Any) -> Any:
        return bytes(v).hex()


def _hex_array(digests: Sequence[Any]) -> np.ndarray | None:
    """(n, 32) uint8 of 64-hex-digit digests; None when one is not such a digest (kept as text then)."""
    if isinstance(digests, HexColumn):
        return digests.values
    if any(not isinstance(d, str) or len(d) != 64 for d in digests):
        return None
    try:
        return np.frombuffer(bytes.fromhex("".join(digests)), np.uint8).reshape(len(digests), 32)
    except ValueError:
        return None


def _number_array(column: str, values: Sequence[Any]) -> np.ndarray:
    if isinstance(values, Column):
        return values.values
    if column == "duration":
        return np.array([np.nan if v is None else v for v in values], np.float64)
    return np.asarray(values, dtype=ARRAY_COLUMNS[column]).reshape(len(values))


@dataclass
class IndexData:
    """The content of an index folder; arrays are memory-mapped when read from disk.

    ``embeddings`` (n, d), ``metric_rows`` (n, d) or None, ``meta`` {column: sequence of n}
    (lists when built, :class:`Column` for the number and digest columns when read),
    ``potentials`` (n,) or None with ``anchors`` (k, d), ``header`` the parsed ``index.json``.
    """

    folder: Path
    header: dict[str, Any]
    embeddings: np.ndarray
    meta: dict[str, Sequence[Any]]
    metric_rows: np.ndarray | None = None
    potentials: np.ndarray | None = None
    anchors: np.ndarray | None = None
    roots: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def file(self, i: int) -> Path:
        """Absolute path of clip ``i`` (its root resolved as in :func:`resolve_roots`)."""
        return self.roots[self.meta["root"][i]] / self.meta["path"][i]

    def row_meta(self, i: int) -> dict[str, Any]:
        """Metadata of clip ``i`` as a dict (``file`` is the path relative to its root)."""
        out: dict[str, Any] = {"file": self.meta["path"][i], "digest": self.meta["digest"][i]}
        for key in ("duration", "caption", "licence"):
            if self.meta[key][i] is not None:
                out[key] = self.meta[key][i]
        return out


def rebuild_hint(folder: Path, header: dict[str, Any] | None = None) -> str:
    """The command that rebuilds ``folder`` (its roots when the header is readable)."""
    roots = " ".join(header.get("roots_abs", [])) if header else "FOLDER..."
    return f"rebuild it with: python -m atr_demo index {roots or 'FOLDER...'} --out {folder}"


def resolve_roots(folder: Path, header: dict[str, Any]) -> list[Path]:
    """Each root relative to the index folder when that exists, else its absolute path at build time."""
    roots = []
    for rel, absolute in zip(header["roots"], header["roots_abs"], strict=True):
        candidate = (folder / rel).resolve()
        roots.append(candidate if candidate.exists() or not Path(absolute).exists() else Path(absolute))
    return roots


def _load_npy(path: Path, folder: Path, header: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise SearchIndexError(f"index {folder} is damaged: {path.name} cannot be read ({exc}); "
                               f"{rebuild_hint(folder, header)}") from exc
    if arr.shape != shape:
        raise SearchIndexError(f"index {folder} is damaged: {path.name} has shape {arr.shape}, "
                               f"expected {shape}; {rebuild_hint(folder, header)}")
    return arr


def read_header(folder: str | Path) -> dict[str, Any]:
    """The parsed ``index.json`` of ``folder`` (:class:`SearchIndexError` when missing or damaged)."""
    folder = Path(folder)
    path = folder / HEADER
    if not path.is_file():
        raise SearchIndexError(f"{folder} is not a search index (no {HEADER}): build one with "
                               f"python -m atr_demo index FOLDER... --out {folder}")
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SearchIndexError(f"index {folder} is damaged: {HEADER} ({exc}); {rebuild_hint(folder)}") from exc
    if header.get("format") != FORMAT:
        raise SearchIndexError(f"index {folder} has format {header.get('format')!r}, this version reads "
                               f"{FORMAT}; {rebuild_hint(folder, header)}")
    return header


def read_index(folder: str | Path, fingerprint: str | None = None, model_name: str = "") -> IndexData:
    """Open the index in ``folder``, memory-mapping its arrays.

    ``fingerprint`` (the model's, see :func:`atr_demo.gallery.model_fingerprint`) must match the
    one the index was built with; otherwise :class:`SearchIndexError` names both models. A
    truncated or damaged file also raises it, with the command that rebuilds the index.
    """
    folder = Path(folder)
    with folder_lock(folder, shared=True) if folder.is_dir() else _nothing():
        header = read_header(folder)
        built = header["model"]
        if fingerprint is not None and built["fingerprint"] != fingerprint:
            raise SearchIndexError(
                f"index {folder} was built by model {built['name']} ({built['fingerprint']}), not by "
                f"{model_name or 'this model'} ({fingerprint}): pass --model {built['name']} or "
                f"{rebuild_hint(folder, header)} --model {model_name or 'MODEL'}"
            )
        n, d = int(header["count"]), int(header["dim"])
        embeddings = _load_npy(folder / EMBEDDINGS, folder, header, (n, d))
        metric_rows = _load_npy(folder / METRIC, folder, header, (n, d)) if header.get("metric") else None
        try:
            meta = _read_meta(folder)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise SearchIndexError(f"index {folder} is damaged: {META} ({exc}); "
                                   f"{rebuild_hint(folder, header)}") from exc
        if sorted(meta) != sorted(COLUMNS) or any(len(meta[c]) != n for c in COLUMNS):
            raise SearchIndexError(f"index {folder} is damaged: {META} does not hold {n} rows; "
                                   f"{rebuild_hint(folder, header)}")
        potentials = anchors = None
        if header.get("transport"):
            k = int(header["transport"]["anchors"])
            potentials = np.asarray(_load_npy(folder / POTENTIALS, folder, header, (n,)))
            anchors = np.asarray(_load_npy(folder / ANCHORS, folder, header, (k, d)))
    return IndexData(folder=folder, header=header, embeddings=embeddings, meta=meta, metric_rows=metric_rows,
                     potentials=potentials, anchors=anchors, roots=resolve_roots(folder, header))


def _read_meta(folder: Path) -> dict[str, Sequence[Any]]:
    """The metadata columns of ``folder``: text from ``meta.json``, numbers and digests from ``meta.npz``."""
    meta: dict[str, Sequence[Any]] = json.loads((folder / META).read_text(encoding="utf-8"))
    with np.load(folder / META_ARRAYS) as arrays:
        for name in arrays.files:
            meta[name] = HexColumn(arrays[name]) if name == "digest" else Column(arrays[name])
    return meta


def _write_meta(folder: Path, meta: dict[str, Sequence[Any]]) -> None:
    """Write ``meta`` as ``meta.json`` (text columns) and ``meta.npz`` (number and digest arrays)."""
    arrays = {c: _number_array(c, meta[c]) for c in ARRAY_COLUMNS}
    digests = _hex_array(meta["digest"])
    if digests is not None:
        arrays["digest"] = digests
    text = {c: list(meta[c]) for c in COLUMNS if c not in arrays}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(folder / META_ARRAYS, write)
    atomic_write_text(folder / META, json.dumps(text, separators=(",", ":")))


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    atomic_write(path, write)


def ann_path(folder: Path, space: str) -> Path:
    """The FAISS file of ``space``'s IVF in index ``folder``."""
    return folder / f"ann-{space}.faiss"


def ann_paths(folder: Path) -> dict[str, Path]:
    """The FAISS files of the index in ``folder``, by space name."""
    return {p.name[len("ann-") : -len(".faiss")]: p for p in sorted(folder.glob("ann-*.faiss"))}


def write_index(data: IndexData, ann: dict[str, Any] | None = None) -> None:
    """Write every file of ``data`` into ``data.folder`` atomically, under the folder's lock.

    ``ann``: FAISS indexes by space name, each written with ``faiss.write_index``. The header is
    written last; files of an optional part that is absent (metric rows, transport, ANN) are
    removed so no stale part survives.
    """
    folder = data.folder
    folder.mkdir(parents=True, exist_ok=True)
    header = dict(data.header)
    header["format"] = FORMAT
    header["count"], header["dim"] = int(data.embeddings.shape[0]), int(data.embeddings.shape[1])
    header["dtype"] = str(data.embeddings.dtype)
    header["metric"] = data.metric_rows is not None
    with folder_lock(folder):
        _save_npy(folder / EMBEDDINGS, np.ascontiguousarray(data.embeddings))
        optional = {METRIC: data.metric_rows, POTENTIALS: data.potentials, ANCHORS: data.anchors}
        for name, array in optional.items():
            if array is None:
                (folder / name).unlink(missing_ok=True)
            else:
                _save_npy(folder / name, np.ascontiguousarray(array))
        _write_meta(folder, data.meta)
        (folder / ANN).unlink(missing_ok=True)
        for space, path in ann_paths(folder).items():
            if space not in (ann or {}):
                path.unlink()
        for space, index in (ann or {}).items():
            atomic_write(ann_path(folder, space), lambda tmp, ix=index: _write_faiss(ix, tmp))
        header["bytes"] = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.name != HEADER
                           and not p.name.startswith(".")}
        atomic_write_text(folder / HEADER, json.dumps(header, indent=1))
    data.header = header
    logger.info("wrote index %s: %d clips", folder, len(data))


def _write_faiss(index: Any, path: Path) -> None:
    """``faiss.write_index``, after copying memory-mapped cells into memory: FAISS writes an index
    opened with ``IO_FLAG_MMAP`` as a reference to the file it was opened from, not as its data."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    if isinstance(lists, faiss.OnDiskInvertedLists):
        copy = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
        for cell in range(ivf.nlist):
            if size := lists.list_size(cell):
                copy.add_entries(cell, size, lists.get_ids(cell), lists.get_codes(cell))
        del lists
        copy.this.disown()  # the index owns it from here on
        ivf.replace_invlists(copy, True)
    faiss.write_index(index, str(path))


def relative_root(folder: Path, root: Path) -> str:
    """``root`` relative to the index ``folder`` (``..`` allowed), POSIX separators."""
    return Path(os.path.relpath(root.resolve(), folder.resolve())).as_posix()
