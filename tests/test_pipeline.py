"""The training input pipeline (training/pipeline.py): windowed decoding, epoch composition,
the resumable sampler, DataLoader workers, crops, mixup, SpecAugment and bad audio."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from atr_demo.audio import LogMelFrontend
from atr_demo.decoding import audio_duration, decode_audio, decode_window
from atr_demo.errors import AudioDecodeError, ConfigError
from atr_demo.model import create_model
from atr_demo.zeroshot import ESC50_SOUND_DESCRIPTIONS

from training.batching import caption_key, group_batches_reference
from training.config import TrainConfig
from training.datasets import label_captions, language_captions
from training.pipeline import (
    ClipAudioDataset,
    ClipLoader,
    EpochBatchSampler,
    Item,
    PairLoader,
    SpecAugment,
    check_pipeline_options,
    compose_epoch,
    epoch_rng,
    load_clip_window,
    mixup,
    spec_augmented,
)
from training.prepare import caption_texts, prepare_data
from training.train import epoch_batches, language_keys, train

#: (file, seconds, rate, captions): wav/flac/ogg through libsndfile, mp3 through FFmpeg; 44.1 kHz
#: files are resampled to the tiny model's 16 kHz.
CLIPS = [
    ("a.wav", 2.5, 16000, 5), ("b.flac", 0.7, 16000, 2), ("c.ogg", 3.0, 44100, 5), ("d.mp3", 2.2, 44100, 1),
    ("e.wav", 0.5, 44100, 2), ("f.wav", 1.6, 16000, 3), ("g.ogg", 0.9, 16000, 5), ("h.wav", 2.0, 16000, 2),
    ("i.flac", 1.2, 44100, 1), ("j.wav", 0.8, 16000, 5),
]


def noise(seconds: float, rate: int, seed: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t)
    return (tone[:, None] + 0.05 * rng.standard_normal((t.size, channels))).astype(np.float32)


def write_audio(path: Path, data: np.ndarray, rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix != ".mp3":
        sf.write(str(path), data, rate)
        return path
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mp3", rate=rate, layout="mono" if data.shape[1] == 1 else "stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.T), format="fltp",
                                           layout="mono" if data.shape[1] == 1 else "stereo")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 training clips (mixed formats, rates, lengths, 1–5 captions), 3 validation clips."""
    root = tmp_path_factory.mktemp("pipe")
    rows = []
    for i, (name, seconds, rate, n_caps) in enumerate(CLIPS):
        write_audio(root / "audio" / name, noise(seconds, rate, i), rate)
        rows.append({"clip_id": f"c{i}", "audio": f"audio/{name}", "split": "train", "group": f"g{i}",
                     "captions": [f"sound {i} take {k}" for k in range(n_caps)]})
    for j in range(3):
        write_audio(root / "audio" / f"v{j}.wav", noise(1.0, 16000, 20 + j), 16000)
        rows.append({"clip_id": f"v{j}", "audio": f"audio/v{j}.wav", "split": "validation", "group": f"v{j}",
                     "captions": [f"valid {j}", f"check {j}"]})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def config_for(corpus: Path, tmp: Path | None = None, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(data=[str(corpus)], model="tiny", batch_size=4, seed=3, device="cpu",
                                   use_cached_features=False, max_duration_s=1.0, progress=False, epochs=2,
                                   loss="infonce", lr=3e-3)
    if tmp is not None:
        base.update(out=str(tmp / "run"), features_cache=str(tmp / "features"))
    base.update(kw)
    return TrainConfig.from_dict(base)


# -- decoding --------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_decode_window_reads_the_same_samples_as_a_full_decode(tmp_path: Path, ext: str) -> None:
    rate = 44100
    path = write_audio(tmp_path / f"x.{ext}", noise(4.0, rate, 1, channels=2), rate)
    full, full_rate = decode_audio(path)
    for start, seconds in ((0.0, 1.5), (1.25, 1.0), (2.0, None), (3.5, 2.0)):
        window, r = decode_window(path, start, seconds)
        a = int(round(start * rate))
        b = None if seconds is None else a + int(round(seconds * rate))
        assert r == full_rate == rate
        np.testing.assert_array_equal(window, full[a:b])
    duration = audio_duration(path)
    assert duration is not None and abs(duration - 4.0) < 0.1


def test_decode_window_past_the_end_is_one_clear_error(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "short.wav", noise(0.5, 16000, 0), 16000)
    with pytest.raises(Exception, match="short.wav"):
        decode_window(path, 2.0, 1.0)


# -- composition -----------------------------------------------------------------------------

def old_epoch_batches(clips: list, config: TrainConfig, epoch: int) -> list[tuple[list, list[str]]]:
    """The batch composition of train.py before the pipeline (with the original group_batches)."""
    rng = epoch_rng(config.seed, epoch, "batches")
    anchor = config.languages[0] if config.languages else None
    captions = [rng.choice(language_captions(c, anchor) if anchor else c.captions) for c in clips]
    if config.batching == "group":
        keys = [{"grp:" + c.group, caption_key(t)} | language_keys(c, config.languages)
                for c, t in zip(clips, captions, strict=True)]
    else:
        keys = [{f"item:{i}"} for i in range(len(clips))]
    batches = group_batches_reference(keys, config.batch_size, rng)
    return [([clips[i] for i in b], [captions[i] for i in b]) for b in batches]


@pytest.mark.parametrize("batching", ["group", "none"])
def test_default_composition_is_the_old_one(corpus: Path, batching: str) -> None:
    config = config_for(corpus, batching=batching, use_cached_features=True)
    clips = prepare_data(config).train * 7  # repeats: groups and captions collide
    for epoch in (1, 2, 5):
        assert epoch_batches(clips, config, epoch) == old_epoch_batches(clips, config, epoch)


def test_captions_per_epoch_all_makes_every_caption_a_pair(corpus: Path) -> None:
    config = config_for(corpus, captions_per_epoch="all", batch_size=3)
    clips = prepare_data(config).train
    pairs = {(c.clip_id, t) for c in clips for t in c.captions}
    assert len(pairs) == sum(n for *_, n in CLIPS) == 31
    for epoch in (1, 2):
        batches = compose_epoch(clips, config, epoch)
        seen = [(c.clip_id, t) for b in batches for c, t in b]
        assert len(seen) == len(set(seen)) and set(seen) <= pairs and len(seen) >= len(pairs) - 4
        assert all(len({c.clip_id for c, _ in b}) == len(b) for b in batches)  # one pair per clip per batch
    one = compose_epoch(clips, config_for(corpus, batch_size=3), 1)
    assert len([c for b in one for c, _ in b]) <= len(clips) < len(seen)


# -- sampler and loader ----------------------------------------------------------------------

def run_epoch(config: TrainConfig, epoch: int, state: dict[str, int] | None = None) -> list:
    clips = prepare_data(config).train
    sampler = EpochBatchSampler(lambda e: clips, config)
    if state is not None:
        sampler.load_state_dict(state)
    loader = PairLoader(sampler, config, 16000, torch.device("cpu"), decode=True)
    return list(loader.epoch(epoch))


def same_batches(a: list, b: list) -> None:
    assert [(x.epoch, x.index, [c.clip_id for c in x.clips], x.captions) for x in a] == \
           [(y.epoch, y.index, [c.clip_id for c in y.clips], y.captions) for y in b]
    for x, y in zip(a, b, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(x.waves, y.waves, strict=True))


def test_zero_and_two_workers_give_the_same_batches(corpus: Path) -> None:
    kw = dict(train_crop="random", mixup_alpha=0.4, captions_per_epoch="all")
    for epoch in (1, 2):
        inline = run_epoch(config_for(corpus, num_workers=0, **kw), epoch)
        workers = run_epoch(config_for(corpus, num_workers=2, prefetch_factor=1, **kw), epoch)
        assert len(inline) >= 5
        same_batches(inline, workers)
    assert max(len(w) for b in inline for w in b.waves) <= 16000 + 1  # max_duration_s = 1 s at 16 kHz


def test_sampler_resumes_mid_epoch(corpus: Path) -> None:
    config = config_for(corpus, train_crop="random", captions_per_epoch="all", num_workers=2)
    full = run_epoch(config, 2)
    clips = prepare_data(config).train
    sampler = EpochBatchSampler(lambda e: clips, config)
    loader = PairLoader(sampler, config, 16000, torch.device("cpu"), decode=True)
    seen = []
    for batch in loader.epoch(2):
        seen.append(batch)
        if len(seen) == 3:
            break
    state = json.loads(json.dumps(sampler.state_dict()))
    assert state == {"epoch": 2, "batch": 3}
    rest = run_epoch(config, 2, state)
    same_batches(seen + rest, full)
    # a restored position applies to its epoch only; the next epoch starts at batch 0
    sampler.load_state_dict({"epoch": 1, "batch": 2})
    sampler.set_epoch(2)
    assert sampler.position == 0 and len(sampler) == len(full)


def test_crops_are_seeded_by_seed_epoch_and_pair(corpus: Path) -> None:
    clips = {c.clip_id: c for c in prepare_data(config_for(corpus)).train}
    long = clips["c2"]  # 3 s at 44.1 kHz
    data = ClipAudioDataset(16000, 1.0, "random", seed=3)
    first = data[Item(long, "x", 1, 0, 5)].wave
    assert first is not None and len(first) == 16000
    assert torch.equal(first, data[Item(long, "x", 1, 7, 5)].wave)  # batch index does not matter
    others = [data[Item(long, "x", e, 0, i)].wave for e, i in ((2, 5), (1, 6), (3, 9))]
    assert all(not torch.equal(first, w) for w in others)
    assert not torch.equal(first, ClipAudioDataset(16000, 1.0, "random", seed=4)[Item(long, "x", 1, 0, 5)].wave)
    head = ClipAudioDataset(16000, 1.0, "head")[Item(long, "x", 1, 0, 5)].wave
    assert torch.equal(head, load_clip_window(long, 16000, 1.0))
    short = clips["c4"]  # 0.5 s: shorter than the window, kept whole
    assert len(data[Item(short, "x", 1, 0, 0)].wave) == 8000


def test_validation_loader_keeps_the_first_window_in_order(corpus: Path) -> None:
    config = config_for(corpus, num_workers=2)
    val = prepare_data(config).validation
    batches = list(ClipLoader(val, 2, config, 16000, torch.device("cpu")))
    assert [c.clip_id for b in batches for c in b.clips] == [c.clip_id for c in val]
    waves = [w for b in batches for w in b.waves]
    assert all(torch.equal(w, load_clip_window(c, 16000, 1.0)) for w, c in zip(waves, val, strict=True))


def test_an_unreadable_clip_stops_the_run_naming_the_file(corpus: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file" * 10)
    config = config_for(corpus, batch_size=13)
    clips = prepare_data(config).train
    clips[4] = replace(clips[4], audio=str(broken), clip_id="bad")
    for workers in (0, 2):
        cfg = config_for(corpus, batch_size=13, num_workers=workers)
        sampler = EpochBatchSampler(lambda e: clips, cfg)
        with pytest.raises(AudioDecodeError, match=r"training clip 'bad' \(.*broken\.wav\).*Replace or remove"):
            list(PairLoader(sampler, cfg, 16000, torch.device("cpu"), decode=True).epoch(1))


# -- augmentation ----------------------------------------------------------------------------

def test_mixup_is_seeded_and_keeps_the_dominant_clip() -> None:
    gen = torch.Generator().manual_seed(0)
    waves = [torch.randn(n, generator=gen) for n in (1000, 800, 1200)]
    a, b = mixup(waves, 0.4, seed=11), mixup(waves, 0.4, seed=11)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert [len(x) for x in a] == [1000, 800, 1200]
    for w, m in zip(waves, a, strict=True):
        corr = float(torch.dot(w, m) / (w.norm() * m.norm()))
        assert corr > 0.5 and not torch.equal(w, m)  # λ ≥ ½: the item's own clip dominates
    assert not all(torch.equal(x, y) for x, y in zip(a, mixup(waves, 0.4, seed=12), strict=True))


def test_spec_augment_masks_the_log_mel_and_is_undone_after_the_block(corpus: Path) -> None:
    frontend = LogMelFrontend()
    wave = torch.randn(44100 * 2, generator=torch.Generator().manual_seed(0))
    plain = frontend(wave)
    masked = SpecAugment(frontend, 2, 12, 20, torch.Generator().manual_seed(5))(wave)
    again = SpecAugment(frontend, 2, 12, 20, torch.Generator().manual_seed(5))(wave)
    assert torch.equal(masked, again) and masked.shape == plain.shape
    zero_bands = (masked == 0).all(dim=0) & ~(plain == 0).all(dim=0)
    zero_frames = (masked == 0).all(dim=1) & ~(plain == 0).all(dim=1)
    assert 0 < int(zero_bands.sum()) <= 24 and int(zero_frames.sum()) <= 40
    kept = (masked != 0)
    assert torch.equal(masked[kept], plain[kept])

    model = create_model(config_for(corpus, spec_augment=True).run_model_config())
    backbone = model.audio_backbone
    original = backbone.frontend
    with spec_augmented(backbone, config_for(corpus, spec_augment=True), seed=1):
        assert isinstance(backbone.frontend, SpecAugment)
    assert backbone.frontend is original
    with spec_augmented(backbone, config_for(corpus), seed=1):
        assert backbone.frontend is original  # off by default


def test_options_that_cannot_apply_are_refused(corpus: Path) -> None:
    for option in ({"train_crop": "random"}, {"mixup_alpha": 0.2}, {"spec_augment": True}):
        with pytest.raises(ConfigError, match="use_cached_features: false"):
            config_for(corpus, use_cached_features=True, **option)
    with pytest.raises(ConfigError, match="captions_per_epoch"):
        config_for(corpus, captions_per_epoch="some")

    class NoFrontend(torch.nn.Module):
        pass

    model = create_model(config_for(corpus).run_model_config())
    model.audio_backbone = NoFrontend()
    with pytest.raises(ConfigError, match="spec_augment"):
        check_pipeline_options(config_for(corpus, spec_augment=True), model)


# -- end to end ------------------------------------------------------------------------------

@pytest.mark.slow
def test_raw_audio_training_is_the_same_with_workers(corpus: Path, tmp_path: Path) -> None:
    kw = dict(captions_per_epoch="all", train_crop="random", spec_augment=True, spec_time_width=4,
              mixup_alpha=0.3, mixtures=2)
    a = train(config_for(corpus, tmp_path / "w0", num_workers=0, **kw))
    b = train(config_for(corpus, tmp_path / "w2", num_workers=2, **kw))
    wa, wb = load_file(str(a / "last" / "model.safetensors")), load_file(str(b / "last" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    log = [json.loads(line) for line in (a / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all(r["train_loss"] == r["train_loss"] for r in log)
    # the cached-feature path still trains next to it (its batches: test_default_composition_is_the_old_one)
    c = train(config_for(corpus, tmp_path / "cached", use_cached_features=True, epochs=1))
    assert (c / "last" / "model.safetensors").is_file()


def test_sampler_shards_global_batches_across_replicas(corpus: Path) -> None:
    config = config_for(corpus, batch_size=5, captions_per_epoch="all")
    clips = prepare_data(config).train
    shards = [EpochBatchSampler(lambda e: clips, config, num_replicas=2, rank=r) for r in (0, 1)]
    whole = compose_epoch(clips, config, 1)
    for s in shards:
        s.set_epoch(1)
    merged = [a + b for a, b in zip(*(list(s) for s in shards), strict=True)]
    expected = [b[: len(b) - len(b) % 2] for b in whole]
    expected = [b for b in expected if len(b) >= 2]
    assert [[(x.clip.clip_id, x.caption) for x in m] for m in merged] == \
           [[(c.clip_id, t) for c, t in b] for b in expected]
    assert all(len(m) % 2 == 0 for m in merged)


def test_dataset_weights_shape_each_epoch(corpus: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    for row in rows:
        row.update(clip_id="o" + row["clip_id"], group="o" + row["group"], audio=str(corpus / row["audio"]),
                   captions=[f"other {t}" for t in row["captions"]])
    other.mkdir()
    (other / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = config_for(corpus, data=[f"{corpus}@0.8", f"{other}@0.2"], batch_size=2)
    clips = prepare_data(config).train
    assert len(clips) == 20
    for epoch in (1, 2):
        pairs = [c for b in compose_epoch(clips, config, epoch) for c, _ in b]
        from_other = sum(c.clip_id.startswith("o") for c in pairs)
        assert len(pairs) >= 18 and 2 <= from_other <= 4  # 20 items per epoch: 16 + 4
    unweighted = config_for(corpus, data=[str(corpus), str(other)], batch_size=2)
    assert sum(c.clip_id.startswith("o") for b in compose_epoch(clips, unweighted, 1) for c, _ in b) >= 9


def test_label_captions_stand_in_for_the_captions_of_labelled_clips(corpus: Path) -> None:
    base = config_for(corpus, batch_size=3)
    clips = [replace(c, esc50="dog") if i % 2 == 0 else c for i, c in enumerate(prepare_data(base).train)]
    dog = set(ESC50_SOUND_DESCRIPTIONS["dog"])

    def pairs(config: TrainConfig, epoch: int) -> list[tuple[str, str]]:
        return [(c.clip_id, t) for b in compose_epoch(clips, config, epoch) for c, t in b]

    labelled = {c.clip_id for c in clips if c.esc50}
    own = {c.clip_id: set(c.captions) for c in clips}
    assert all(t in own[i] for i, t in pairs(base, 1))  # off by default: the clips' own captions
    always = pairs(config_for(corpus, batch_size=3, label_captions=1.0), 1)
    assert always and all((t in dog) if i in labelled else (t in own[i]) for i, t in always)
    half = [p for e in (1, 2, 3) for p in pairs(config_for(corpus, batch_size=3, label_captions=0.5), e)]
    assert {t in dog for i, t in half if i in labelled} == {True, False}
    # the texts whose features a cached run reads include them only when asked
    assert dog <= set(caption_texts(clips, (), with_labels=True)) and not dog & set(caption_texts(clips, ()))
    # a mixture's caption names both sources: it keeps it
    mixture = replace(clips[0], mix_of=(clips[0], clips[1]))
    assert label_captions(clips[0]) == ESC50_SOUND_DESCRIPTIONS["dog"] and label_captions(mixture) == ()
