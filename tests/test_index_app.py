"""The app serving an index (``app.py --index``): nothing built per clip up front, the index's own
search, clip names relative to the library, only the library's audio files served; and the compact
metadata format (number and digest columns as arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atr_demo import ui
from atr_demo.index import build_index, open_index
from atr_demo.index.store import COLUMNS, Column, HexColumn, IndexData, read_index, write_index
from atr_demo.index.view import IndexGallery
from atr_demo.model import load_model
from atr_demo.ui import callbacks
from atr_demo.ui import state as ui_state
from atr_demo.ui.serving import is_refused

from tests.test_app_callbacks import make_gallery


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[ui.AppState, Path]:
    root = make_gallery(tmp_path_factory.mktemp("library"))
    out = tmp_path_factory.mktemp("home") / "index"
    model = load_model("tiny")
    build_index(model, [root], out, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    state = ui.make_state(model, [], progress=False, max_upload_s=5.0)
    searcher = open_index(model, out)
    state.gallery = IndexGallery(searcher).extend(state.gallery)
    state.roots = list(searcher.data.roots)
    return state, root


def test_index_gallery_is_lazy_and_named_relative_to_the_library(served: tuple[ui.AppState, Path]) -> None:
    state, root = served
    gallery = state.gallery
    assert isinstance(gallery, IndexGallery) and len(gallery) == 6
    assert not isinstance(gallery.files, list) and gallery.files[-1] == gallery.data.file(5)
    assert "sub/chirp.wav" in gallery.names() and gallery.row_of("nope.wav") is None
    assert ui_state.clip_choices(gallery) == gallery.names()
    assert sorted(gallery.captions()) == sorted(c for _, c in callbacks_tones())
    assert gallery.files[gallery.row_of("sub/chirp.wav")] == root / "sub" / "chirp.wav"
    assert ui_state.dropdown_choices(gallery, [], limit=3) == sorted(gallery.names()[i] for i in
                                                                   __import__("random").Random(0).sample(range(6), 3))


def callbacks_tones() -> list[tuple[str, str]]:
    from tests.test_app_callbacks import TONES

    return [(name, caption) for name, (_, caption) in TONES.items()]


@pytest.mark.parametrize("mode", ["cosine", "metric", "transport"])
def test_text_search_uses_the_index(served: tuple[ui.AppState, Path], mode: str) -> None:
    state, root = served
    gallery = state.gallery
    assert isinstance(gallery, IndexGallery)
    out = callbacks.search_text_cb(state, "a bird chirps", k=3, mode=mode)
    q = state.model.embed_texts(["a bird chirps"])
    scores, ids = gallery.searcher.search(q, 3, mode=mode)
    assert [r["file"] for r in out["results"]] == [gallery.names()[i] for i in ids[0]]
    assert [r["score"] for r in out["results"]] == pytest.approx(scores[0].tolist())
    cosine = gallery.searcher.exact(q, 1, "cosine")[0][0, 0]
    assert out["best_cosine"] == pytest.approx(float(cosine), abs=1e-5)
    rows = callbacks.playable(state, out["results"])
    assert all(Path(r["file"]).is_file() and r["url"].startswith("gallery_audio/") for r in rows)
    assert Path(rows[0]["file"]).relative_to(root).as_posix() == out["results"][0]["file"]


def test_picker_random_draw_and_plan_work_on_names(served: tuple[ui.AppState, Path]) -> None:
    state, _ = served
    files, captions = callbacks.random_draw(state, n=3, seed=1)
    assert len(files) == 3 and all(f in state.gallery.names() for f in files) and len(captions.splitlines()) == 3
    summary, _, _ = callbacks.transport_plan_cb(state, files, captions)
    assert summary
    with pytest.raises(Exception, match="not a clip of the gallery"):
        callbacks._resolve_clips(state.gallery, ["missing.wav"])


def test_only_the_library_audio_is_served(served: tuple[ui.AppState, Path]) -> None:
    state, root = served
    gallery = state.gallery
    assert isinstance(gallery, IndexGallery)
    allowed = gallery.served()
    roots = [str(r) for r in state.roots]
    assert str(root / "beep.wav") in allowed and str(root / "sub" / "chirp.wav") in allowed
    assert not is_refused(f"/gradio_api/file={root / 'beep.wav'}", roots, allowed)
    assert is_refused(f"/gradio_api/file={root / 'gallery.jsonl'}", roots, allowed)
    names = gallery.name_map()
    assert names["sub/chirp.wav"] == root / "sub" / "chirp.wav" and "gallery.jsonl" not in names
    assert len(ui.launch_options(state)["app_kwargs"]["middleware"]) == 1


def test_metadata_columns_round_trip_as_arrays(tmp_path: Path) -> None:
    n = 4
    meta: dict = {c: [None] * n for c in COLUMNS}
    meta.update(root=[0, 0, 1, 1], path=[f"c{i}.wav" for i in range(n)], digest=[f"{i:064x}" for i in range(n)],
                size=[10, 20, 30, 2**40], mtime_ns=[1_700_000_000_000_000_123 + i for i in range(n)],
                duration=[0.5, None, 1.25, 3.0], caption=["a", None, "c", None])
    header = {"model": {"name": "m", "fingerprint": "f"}, "roots": [".", "."], "roots_abs": ["/a", "/b"],
              "ann": {"type": "exact"}}
    write_index(IndexData(folder=tmp_path / "ix", header=header, embeddings=np.eye(n, 3, dtype=np.float16), meta=meta))
    data = read_index(tmp_path / "ix")
    assert isinstance(data.meta["size"], Column) and isinstance(data.meta["digest"], HexColumn)
    for c in COLUMNS:
        assert list(data.meta[c]) == meta[c], c
        assert data.meta[c] == meta[c]
    assert type(data.meta["size"][3]) is int and data.meta["duration"][1] is None
    assert data.row_meta(0) == {"file": "c0.wav", "digest": "0" * 64, "duration": 0.5, "caption": "a"}
    # rewriting what was read keeps it; digests that are not SHA-256 hex stay text
    data.folder = tmp_path / "copy"
    data.meta["digest"] = ["short", *list(data.meta["digest"])[1:]]
    write_index(data)
    again = read_index(tmp_path / "copy")
    assert list(again.meta["digest"]) == ["short", *meta["digest"][1:]] and list(again.meta["size"]) == meta["size"]


@pytest.mark.parametrize("mode", ["cosine", "transport"])
def test_audio_search_finds_the_clip_itself_in_the_index(served: tuple[ui.AppState, Path], mode: str) -> None:
    state, root = served
    out = callbacks.search_audio_cb(state, str(root / "hum.wav"), "a cat meows", 50, mode)
    assert out["sounds"][0]["file"] == "hum.wav" and out["sounds"][0]["score"] == pytest.approx(1.0, abs=2e-3)
    assert len(out["sounds"]) == callbacks.NEAREST_SOUNDS and len(out["captions"]) == 6
    assert state.gallery._embeddings is None  # nothing materialised the whole embedding matrix


def test_caption_owners_match_the_plain_gallery(served: tuple[ui.AppState, Path]) -> None:
    from atr_demo.confidence import caption_owners
    from atr_demo.gallery import Gallery

    gallery = served[0].gallery
    assert isinstance(gallery, IndexGallery)
    plain = Gallery(files=list(gallery.files), embeddings=gallery.rows(slice(None)), metadata=list(gallery.metadata))
    assert gallery.caption_owners() == caption_owners(plain)


def test_a_truncated_metadata_array_file_is_a_clear_error(tmp_path: Path) -> None:
    from atr_demo.errors import SearchIndexError

    n = 3
    meta: dict = {c: [None] * n for c in COLUMNS}
    meta.update(root=[0] * n, path=["a.wav", "b.wav", "c.wav"], digest=["0" * 64] * n, size=[1] * n, mtime_ns=[1] * n)
    header = {"model": {"name": "m", "fingerprint": "f"}, "roots": ["."], "roots_abs": ["/a"], "ann": {"type": "exact"}}
    write_index(IndexData(folder=tmp_path / "ix", header=header, embeddings=np.eye(n, 3, dtype=np.float32), meta=meta))
    npz = tmp_path / "ix" / "meta.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    with pytest.raises(SearchIndexError, match="damaged.*rebuild it with"):
        read_index(tmp_path / "ix")
