"""An opened index seen as a :class:`~atr_demo.gallery.Gallery`, with nothing built per clip up front.

The app serves a 10⁶-clip index: building a ``Path``, a metadata dict and a float32 embedding row
per clip takes seconds and gigabytes before the first page. :class:`IndexGallery` keeps the
index's own columns (lists of str, the memory-mapped embeddings) and builds a clip's path or
metadata only when asked for it; its search is the index's own (:class:`~atr_demo.index.ann.Searcher`:
FAISS IVF when the index has one, exact otherwise). Public clip
names are the clips' paths relative to their library folder (``meta["path"]``).

Code written for a plain gallery still works on it: ``files`` and ``metadata`` are lazy
sequences, and ``embeddings`` is materialised as one float32 tensor on first use (n × d × 4 bytes:
what the audio → text tab's full scoring and a session's own uploads need).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np
import torch

from atr_demo.gallery import Gallery
from atr_demo.index.ann import Searcher

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LazyRows(Sequence[T]):
    """A read-only sequence of ``n`` items, item ``i`` built by ``get(i)`` when accessed."""

    def __init__(self, n: int, get: Callable[[int], T]) -> None:
        self._n = n
        self._get = get

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> T: ...

    @overload
    def __getitem__(self, i: slice) -> list[T]: ...

    def __getitem__(self, i: int | slice) -> T | list[T]:
        if isinstance(i, slice):
            return [self._get(j) for j in range(*i.indices(self._n))]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._get(i)

    def __iter__(self) -> Iterator[T]:
        return (self._get(i) for i in range(self._n))


class IndexGallery(Gallery):
    """The clips of an opened index (``searcher.data``) as a gallery; see the module docstring."""

    def __init__(self, searcher: Searcher) -> None:  # noqa: D107 - no dataclass fields are set
        self.searcher = searcher
        self.data = searcher.data
        self.skipped: list[tuple[Path, str]] = []
        self._embeddings: torch.Tensor | None = None
        self._rows: dict[str, int] | None = None

    # -- the Gallery interface, lazily ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.data)

    @property  # type: ignore[override]
    def files(self) -> Sequence[Path]:
        """Absolute path of each clip (built per access)."""
        return LazyRows(len(self.data), self.data.file)

    @property  # type: ignore[override]
    def metadata(self) -> Sequence[dict[str, Any]]:
        """Metadata of each clip (:meth:`atr_demo.index.store.IndexData.row_meta`, built per access)."""
        return LazyRows(len(self.data), self.data.row_meta)

    @property  # type: ignore[override]
    def embeddings(self) -> torch.Tensor:
        """(n, d) float32 embeddings, materialised from the memory-mapped array on first use."""
        if self._embeddings is None:
            logger.info("materialising the %d × %d embeddings of index %s as float32", *self.data.embeddings.shape,
                        self.data.folder)
            self._embeddings = torch.from_numpy(np.array(self.data.embeddings, dtype=np.float32))
        return self._embeddings

    def rows(self, idx: slice | list[int]) -> torch.Tensor:
        """(m, d) float32 embeddings of the clips ``idx`` selects (read from the memory-mapped array)."""
        if self._embeddings is not None:
            return self._embeddings[idx]
        return torch.from_numpy(np.array(self.data.embeddings[idx], dtype=np.float32))

    def captions(self) -> list[str]:
        """The caption of each clip that has one (straight from the caption column)."""
        return [c for c in self.data.meta["caption"] if c]

    def extend(self, other: Gallery) -> Gallery:
        """Itself when ``other`` is empty, else a plain gallery of both (materialises every clip)."""
        if len(other) == 0:
            return self
        plain = Gallery(files=list(self.files), embeddings=self.embeddings, metadata=list(self.metadata))
        return plain.extend(other)

    # -- what the app needs without touching every clip ------------------------------------------------
    def names(self) -> list[str]:
        """Public name of each clip: its path relative to its library folder (the stored column)."""
        return self.data.meta["path"]

    def caption_owners(self) -> tuple[list[str], list[list[int]]]:
        """Distinct captions (first-seen order) and the rows carrying each, from the caption column
        (what :func:`atr_demo.confidence.caption_owners` gives for a plain gallery)."""
        owners: dict[str, list[int]] = {}
        for i, caption in enumerate(self.data.meta["caption"]):
            if caption and str(caption).strip():
                owners.setdefault(str(caption).strip(), []).append(i)
        return list(owners), list(owners.values())

    def captioned(self) -> Sequence[int]:
        """Rows of clips with a caption (all rows when none has one)."""
        rows = [i for i, c in enumerate(self.data.meta["caption"]) if c]
        return rows or range(len(self.data))

    def row_of(self, name: str) -> int | None:
        """Row of the clip with public ``name`` (a dict built on first use), None when there is none."""
        if self._rows is None:
            self._rows = {p: i for i, p in enumerate(self.data.meta["path"])}
        return self._rows.get(str(name))

    def name_map(self) -> ServedNames:
        """Public name → absolute path of every clip, as a lazy mapping."""
        return ServedNames(self)

    def served(self) -> ServedFiles:
        """The absolute paths a client may fetch (``x in served``), checked per request."""
        return ServedFiles(self)

    def search(self, query: torch.Tensor, k: int, mode: str) -> tuple[list[tuple[int, float]], float]:
        """(1, d) query embedding → ``[(row, score)]`` best first in ``mode``, and the best cosine.

        The index's own search (ANN when it has an IVF) for the L2-normalised query (the index
        holds normalised embeddings); the best cosine comes from the cosine search's top hit (the
        same search when ``mode`` is cosine).
        """
        query = torch.nn.functional.normalize(query.float(), dim=-1)
        scores, ids = self.searcher.search(query, k, mode=mode)
        hits = [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True)]
        if mode == "cosine":
            best = hits[0][1] if hits else 0.0
        else:
            best = float(self.searcher.search(query, 1, mode="cosine")[0][0, 0])
        return hits, best


class ServedNames(Mapping[str, Path]):
    """Public clip name → absolute path, looked up per access (see :meth:`IndexGallery.row_of`)."""

    def __init__(self, gallery: IndexGallery) -> None:
        self.gallery = gallery

    def __getitem__(self, name: str) -> Path:
        row = self.gallery.row_of(name)
        if row is None:
            raise KeyError(name)
        return self.gallery.data.file(row)

    def __iter__(self) -> Iterator[str]:
        return iter(self.gallery.names())

    def __len__(self) -> int:
        return len(self.gallery)


class ServedFiles:
    """``path in served``: whether an absolute path is one of the index's clips (as stored or resolved)."""

    def __init__(self, gallery: IndexGallery) -> None:
        self.gallery = gallery
        data = gallery.data
        self.roots = [(n, os.path.abspath(r)) for n, r in enumerate(data.roots)]
        self.roots += [(n, str(Path(r).resolve())) for n, r in enumerate(data.roots)]

    def __contains__(self, path: object) -> bool:
        target = os.path.abspath(str(path))
        for n, root in self.roots:
            prefix = root.rstrip("/") + "/"
            if target.startswith(prefix):
                row = self.gallery.row_of(Path(target[len(prefix):]).as_posix())
                if row is not None and self.gallery.data.meta["root"][row] == n:
                    return True
        return False
