"""Shared file I/O (atr_demo.fileio): atomic writes, the folder swap, the tensor store, the cache home, tables."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from atr_demo.fileio import (
    AUDIO_EXTENSIONS,
    TensorStore,
    atomic_replace_dir,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    cache_home,
    file_digest,
    markdown_table,
)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- atomic writes -----------------------------------------------------------------------------


def test_atomic_write_bytes_and_text(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"\x00\x01old")
    atomic_write_bytes(target, b"\x00\x01new")
    assert target.read_bytes() == b"\x00\x01new"
    text = tmp_path / "out.md"
    atomic_write_text(text, "é\nline two\n")
    assert text.read_bytes() == "é\nline two\n".encode()
    assert _names(tmp_path) == ["out.bin", "out.md"]  # no temporary file left


def test_atomic_write_honours_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}\n")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_atomic_write_passes_a_temp_file_in_the_same_folder(tmp_path: Path) -> None:
    seen: list[Path] = []

    def writer(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp.parent == tmp_path and tmp.name.startswith(".data.json.") and tmp.is_file()
        tmp.write_text("payload", encoding="utf-8")

    atomic_write(tmp_path / "data.json", writer)
    assert (tmp_path / "data.json").read_text(encoding="utf-8") == "payload"
    assert not seen[0].exists()
    assert _names(tmp_path) == ["data.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"complete old content")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"complete old content"
    assert _names(tmp_path) == ["model.safetensors"]

    def interrupted(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt

    fresh = tmp_path / "new.txt"
    with pytest.raises(KeyboardInterrupt):
        atomic_write(fresh, interrupted)
    assert not fresh.exists()
    assert _names(tmp_path) == ["model.safetensors"]


def test_atomic_replace_dir(tmp_path: Path) -> None:
    target = tmp_path / "last"
    new = tmp_path / ".last.tmp-1"
    new.mkdir()
    (new / "weights").write_text("v1")
    atomic_replace_dir(new, target)  # no target yet
    assert (target / "weights").read_text() == "v1" and not new.exists()

    stale = tmp_path / "last.old"  # left by an interrupted earlier swap
    stale.mkdir()
    (stale / "weights").write_text("v0")
    new.mkdir()
    (new / "weights").write_text("v2")
    atomic_replace_dir(new, target)
    assert (target / "weights").read_text() == "v2"
    assert _names(tmp_path) == ["last"]


# -- tensor store ------------------------------------------------------------------------------


def test_tensor_store_round_trip_and_dirty_tracking(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "audio-abc.safetensors"
    store = TensorStore(path, "feature cache")
    assert len(store) == 0 and "k1" not in store and not store.dirty
    store.save()
    assert not path.exists()  # nothing to write

    value = torch.arange(4, dtype=torch.float64).reshape(2, 2).t()  # non-contiguous float64
    store.put("k1", value)
    store.put("k2", torch.ones(3))
    assert store.dirty and "k1" in store
    store.save()
    assert not store.dirty and _names(path.parent) == ["audio-abc.safetensors"]

    again = TensorStore(path)
    assert len(again) == 2 and not again.dirty
    assert again.get("k1").dtype == torch.float32
    assert torch.equal(again.get("k1"), value.float())
    assert torch.equal(again.get("k2"), torch.ones(3))
    with pytest.raises(KeyError):
        again.get("absent")

    before = path.stat().st_mtime_ns
    os.utime(path, ns=(before - 10**9, before - 10**9))
    again.save()  # clean: no rewrite
    assert path.stat().st_mtime_ns == before - 10**9


def test_tensor_store_reads_existing_cache_files(tmp_path: Path) -> None:
    """The gallery's embeddings.safetensors and the feature cache files: plain key → tensor safetensors."""
    digest = hashlib.sha256(b"clip bytes").hexdigest()
    path = tmp_path / "0123456789abcdef" / "embeddings.safetensors"
    path.parent.mkdir()
    legacy = {digest: torch.randn(8, generator=torch.Generator().manual_seed(0)), "x@0.000+None|10.0": torch.zeros(2)}
    save_file(legacy, str(path))
    store = TensorStore(path, "embedding cache")
    assert torch.equal(store.get(digest), legacy[digest]) and "x@0.000+None|10.0" in store

    store.put("new", torch.full((2,), 0.5))
    store.save()
    written = load_file(str(path))  # what the old readers (load_file) see
    assert set(written) == {digest, "x@0.000+None|10.0", "new"}
    assert torch.equal(written[digest], legacy[digest])


def test_tensor_store_with_identical_entries_writes_identical_bytes(tmp_path: Path) -> None:
    tensors = {"b": torch.ones(3), "a": torch.arange(3, dtype=torch.float32)}
    save_file(tensors, str(tmp_path / "direct.safetensors"))
    store = TensorStore(tmp_path / "store.safetensors")
    for key, value in tensors.items():
        store.put(key, value)
    store.save()
    assert (tmp_path / "store.safetensors").read_bytes() == (tmp_path / "direct.safetensors").read_bytes()


def test_a_damaged_store_is_empty_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "embeddings.safetensors"
    path.write_bytes(b"not a safetensors file")
    store = TensorStore(path, "embedding cache")
    assert len(store) == 0
    assert "ignoring damaged embedding cache" in caplog.text
    store.put("k", torch.ones(2))
    store.save()
    assert set(load_file(str(path))) == {"k"}


# -- cache home, digests, extensions -------------------------------------------------------------


def test_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATR_DEMO_HOME", str(tmp_path))
    assert cache_home() == tmp_path
    monkeypatch.setenv("ATR_DEMO_HOME", "")
    assert cache_home() == Path.home() / ".cache" / "atr_demo"
    monkeypatch.delenv("ATR_DEMO_HOME")
    assert cache_home() == Path.home() / ".cache" / "atr_demo"


def test_default_cache_dirs_are_sub_folders_of_the_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from atr_demo.backbones.aisfx import default_weights_path
    from atr_demo.gallery import default_cache_dir as embeddings_dir

    from training.features import default_cache_dir as features_dir

    monkeypatch.setenv("ATR_DEMO_HOME", str(tmp_path))
    monkeypatch.delenv("ATR_DEMO_AISFX_WEIGHTS", raising=False)
    assert embeddings_dir() == tmp_path / "embeddings"
    assert features_dir() == tmp_path / "features"
    assert default_weights_path() == tmp_path / "aisfx" / "aisfx_cnn.safetensors"


def test_file_digest(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # over several 1 MiB chunks
    (tmp_path / "f").write_bytes(data)
    assert file_digest(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_audio_extensions_are_one_list() -> None:
    from atr_demo import gallery

    import training.datasets as datasets

    assert gallery.AUDIO_EXTENSIONS is AUDIO_EXTENSIONS and datasets.AUDIO_EXTENSIONS is AUDIO_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in AUDIO_EXTENSIONS)


# -- Markdown ----------------------------------------------------------------------------------


def test_markdown_table() -> None:
    table = markdown_table(["scoring", "R@1", "note"], [["cosine", "0.123", ""], ["transport", "0.456", "–"]])
    assert table == (
        "| scoring | R@1 | note |\n"
        "|---|---|---|\n"
        "| cosine | 0.123 |  |\n"
        "| transport | 0.456 | – |"
    )
    assert markdown_table(["a", "b"], []) == "| a | b |\n|---|---|"
    assert markdown_table(["package", "clips", "rows"], [("x", "1", "2")], right=range(1, 3)).splitlines()[1] == (
        "|---|---:|---:|"
    )


def test_markdown_table_matches_the_hand_written_form() -> None:
    """The expression five modules used before: header, ``|---|`` per column, one line per row."""
    head = ["comparison", "distance", "k=5", "linear CKA"]
    rows = [["audio-text", "metric", "0.300", "0.900"], ["", "cosine", "0.500", ""]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    assert markdown_table(head, rows) == "\n".join(lines)
