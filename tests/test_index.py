"""The persistent search index and the shared embedding cache: concurrency, progress, incremental
updates, bad input, and sharded indexing under torchrun (tiny model, a handful of clips)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from atr_demo.errors import SearchIndexError
from atr_demo.fileio import TensorStore
from atr_demo.gallery import embed_into_cache, encode_waves, open_cache
from atr_demo.index import build_index, open_index, read_index, search_text_index
from atr_demo.model import create_model, tiny_config

from tests.helpers import write_tone

REPO = Path(__file__).resolve().parents[1]


def _writer(path: str, prefix: str, n: int) -> None:
    store = TensorStore(path, "embedding cache")
    for i in range(n):
        store.put(f"{prefix}{i}", torch.full((4,), float(i)))
        if i % 5 == 4:
            store.checkpoint()
    store.save()


@pytest.mark.slow
def test_two_processes_sharing_a_cache_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "embeddings.safetensors"
    path.parent.mkdir()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), p, 40)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    store = TensorStore(path)
    assert len(store) == 80 and torch.equal(store.get("b39"), torch.full((4,), 39.0))
    assert not store.segment_dir.exists()  # every segment folded into the main file


def test_a_killed_indexer_keeps_what_it_checkpointed(tmp_path: Path) -> None:
    model = create_model(tiny_config())
    files = [write_tone(tmp_path / f"t{i}.wav", 200 + 50 * i, 0.3) or tmp_path / f"t{i}.wav" for i in range(6)]
    cache = open_cache(model, tmp_path / "cache")
    calls = []
    original = model.encode_audio

    def dying(waves):  # the third batch "kills" the run
        calls.append(len(waves))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(waves)

    model.encode_audio = dying  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        embed_into_cache(model, files, [f"k{i}" for i in range(6)], cache, batch_size=2, progress=False,
                         checkpoint_s=0.0, precision="fp32")
    again = open_cache(model, tmp_path / "cache")
    assert sorted(again.entries) == ["k0", "k1", "k2", "k3"]  # the first two batches survived


def test_bf16_embeddings_stay_close_to_fp32() -> None:
    model = create_model(tiny_config())
    g = torch.Generator().manual_seed(0)
    waves = [torch.randn(16000, generator=g) * 0.1 for _ in range(4)]
    a, b = encode_waves(model, waves, "fp32"), encode_waves(model, waves, "bf16")
    assert float((a * b).sum(-1).min()) > 0.999


@pytest.fixture()
def library(tmp_path: Path) -> Path:
    root = tmp_path / "home" / "library"
    for i in range(5):
        write_tone(root / f"sub{i % 2}" / f"c{i}.wav", 200 + 90 * i, 0.4)
    (root / "gallery.jsonl").write_text('{"audio": "sub0/c0.wav", "caption": "a low tone", "licence": "CC0"}\n')
    return root


def test_index_builds_updates_and_searches(library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model(tiny_config())
    out = tmp_path / "home" / "index"
    first = build_index(model, [library], out, cache_dir=tmp_path / "cache", progress=False)
    assert first["clips"] == 5 and first["embedded"] == 5 and first["ann"]["type"] == "exact"
    data = read_index(out)
    assert data.meta["path"][0] == "sub0/c0.wav" and data.meta["caption"][0] == "a low tone"
    assert data.meta["duration"][0] == pytest.approx(0.4, abs=0.01)
    assert data.meta["licence"][0] == "CC0" and data.potentials is not None and data.potentials.shape == (5,)
    assert isinstance(data.embeddings, np.memmap)
    # unchanged: recognised by size + mtime, nothing hashed
    import atr_demo.index.build as build_mod

    monkeypatch.setattr(build_mod, "file_digest", lambda p: pytest.fail(f"hashed {p}"))
    assert build_index(model, [library], out, cache_dir=tmp_path / "cache", progress=False)["up_to_date"]
    monkeypatch.undo()
    # one file changed, one deleted, one added
    write_tone(library / "sub0" / "c0.wav", 1000, 0.7)
    (library / "sub1" / "c1.wav").unlink()
    write_tone(library / "new.wav", 600, 0.4)
    update = build_index(model, [library], out, cache_dir=tmp_path / "cache", progress=False)
    assert update["clips"] == 5 and update["embedded"] == 2 and update["reused"] == 3
    data = read_index(out)
    row = data.meta["path"].index("sub0/c0.wav")
    fresh = model.embed_files([library / "sub0" / "c0.wav"])[0]
    assert np.allclose(data.embeddings[row], fresh.numpy(), atol=1e-2)  # re-embedded, not stale
    assert "sub1/c1.wav" not in data.meta["path"]
    # search through the index agrees with exact search and names clips relative to the library
    searcher = open_index(model, out)
    for mode in ("cosine", "metric", "transport"):
        hits = search_text_index(model, searcher, ["a tone"], k=3, mode=mode)[0]["results"]
        assert len(hits) == 3 and not Path(hits[0]["file"]).is_absolute()
        assert Path(hits[0]["path"]).is_file()
    # the library and its index move together: relative roots keep working
    moved = tmp_path / "moved"
    shutil.move(str(tmp_path / "home"), moved)
    data = read_index(moved / "index")
    assert all(data.file(i).is_file() for i in range(len(data)))


def test_index_bad_input(library: Path, tmp_path: Path) -> None:
    model = create_model(tiny_config())
    out = tmp_path / "index"
    build_index(model, [library], out, cache_dir=tmp_path / "cache", progress=False)
    other = create_model(tiny_config(), seed=1)
    with pytest.raises(SearchIndexError, match="built by model tiny") as err:
        open_index(other, out)
    from atr_demo.gallery import model_fingerprint

    assert model_fingerprint(model) in str(err.value) and model_fingerprint(other) in str(err.value)
    emb = out / "embeddings.npy"
    emb.write_bytes(emb.read_bytes()[:-20])
    with pytest.raises(SearchIndexError, match="damaged.*rebuild it with: python -m atr_demo index"):
        read_index(out)
    rebuilt = build_index(model, [library], out, cache_dir=tmp_path / "cache", progress=False)
    assert rebuilt["clips"] == 5 and len(read_index(out)) == 5


def test_cli_index_search_and_label(library: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from atr_demo import cli

    out = str(tmp_path / "index")
    common = ["--model", "tiny", "--cache-dir", str(tmp_path / "cache"), "--json"]
    assert cli.main(["index", str(library), "--out", out, *common]) == 0
    capsys.readouterr()
    assert cli.main(["search", "a tone", "--index", out, "--k", "2", *common]) == 0
    import json

    results = json.loads(capsys.readouterr().out)
    assert len(results[0]["results"]) == 2 and results[0]["results"][0]["file"].endswith(".wav")
    assert cli.main(["label", "--index", out, "--top", "1", *common]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5


@pytest.mark.slow
def test_torchrun_shards_into_the_same_index(library: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ATR_DEMO_PRECISION": "fp32"}
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    base = ["-m", "atr_demo", "index", str(library), "--model", "tiny", "--json", "--batch-size", "2"]
    subprocess.run([sys.executable, *base, "--out", str(single), "--cache-dir", str(tmp_path / "c1")],
                   check=True, env=env, cwd=REPO, capture_output=True, timeout=300)
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                          *base, "--out", str(sharded), "--cache-dir", str(tmp_path / "c2")],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = read_index(single), read_index(sharded)
    assert a.meta["path"] == b.meta["path"], run.stdout
    assert {c: v for c, v in a.meta.items() if b.meta[c] != v} == {}
    assert np.allclose(a.embeddings, b.embeddings, atol=1e-6)
    assert np.allclose(a.potentials, b.potentials, atol=1e-5)


def test_ivf_index_and_an_old_hnsw_index(library: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """At the threshold the index holds a memory-mapped IVF; an index of the HNSW release is searched
    exactly (with a warning) until the next `index` run, which rebuilds its IVF and drops the graph."""
    import json

    from atr_demo.index.store import ANN, ann_paths

    model = create_model(tiny_config())
    out = tmp_path / "index"
    summary = build_index(model, [library], out, cache_dir=tmp_path / "cache", progress=False, ann_threshold=2)
    assert summary["ann"]["type"] == "ivf" and list(ann_paths(out)) == ["cosine"]
    searcher = open_index(model, out)
    exact = searcher.search(model.embed_texts(["a tone"]), 3, method="exact")
    assert np.array_equal(searcher.search(model.embed_texts(["a tone"]), 3)[1], exact[1])
    # the HNSW release's layout: one ann.faiss, header type "hnsw"
    header = json.loads((out / "index.json").read_text())
    header["ann"] = {"type": "hnsw", "M": 32}
    (out / "index.json").write_text(json.dumps(header))
    ann_paths(out)["cosine"].rename(out / ANN)
    with caplog.at_level("WARNING"):
        old = open_index(model, out)
    assert not old.ann and "no longer reads" in caplog.text
    assert np.array_equal(old.search(model.embed_texts(["a tone"]), 3)[1], exact[1])
    again = build_index(model, [library], out, cache_dir=tmp_path / "cache", progress=False, ann_threshold=2)
    assert not again.get("up_to_date") and again["embedded"] == 0 and again["ann"]["type"] == "ivf"
    assert not (out / ANN).exists() and list(ann_paths(out)) == ["cosine"]
