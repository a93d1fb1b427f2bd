"""The caption audit's score (training.corpus.audit) on tiny synthetic embeddings."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from atr_demo.errors import ConfigError

from training.corpus.audit import audio_stats, audit_scores, flagged_indices, injection_check


def _corpus(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Three sound classes of 6 clips (audio near a class centre, caption near the class's text
    centre); clip 0 sounds like class 0 but is captioned like class 2. One recording group per clip."""
    gen = torch.Generator().manual_seed(seed)
    audio_centres = torch.randn(3, 16, generator=gen) * 3
    text_centres = F.normalize(torch.randn(3, 8, generator=gen), dim=1)
    labels = [c for c in range(3) for _ in range(6)]
    audio = torch.stack([audio_centres[c] + 0.3 * torch.randn(16, generator=gen) for c in labels])
    text_labels = list(labels)
    text_labels[0] = 2
    text = F.normalize(torch.stack([text_centres[c] + 0.1 * torch.randn(8, generator=gen) for c in text_labels]), dim=1)
    return audio, text, [f"g{i}" for i in range(len(labels))]


def test_mismatched_caption_is_flagged_and_consistent_ones_are_not() -> None:
    audio, text, groups = _corpus()
    result = audit_scores(audio, text, groups, k=3)
    ids = [f"clip{i:02d}" for i in range(len(groups))]
    assert flagged_indices(result.score, ids, fraction=1 / 18) == [0]
    assert float(result.score[0]) < 0.2  # at or below chance
    assert float(result.overlap[0]) == 0.0  # its audio and caption neighbours are disjoint
    # consistent clips score well above it (a class-0 clip with clip 0 among its 3 audio
    # neighbours loses a third of its agreement, no more)
    assert all(float(result.score[i]) > 0.3 for i in range(1, 18))
    assert float(torch.sort(result.score).values[1]) - float(result.score[0]) > 1.0
    assert float(result.overlap[1:].min()) > 0
    # audio neighbours of clip 0 are class-0 clips; its caption neighbours are class-2 clips
    assert set(result.audio_neighbours[0].tolist()) <= set(range(1, 6))
    assert set(result.text_neighbours[0].tolist()) <= set(range(12, 18))


def test_score_is_one_when_audio_and_caption_neighbours_coincide() -> None:
    _, text, _ = _corpus()
    both = torch.cat([text, -text])  # zero mean: centring the audio side changes nothing
    groups = [f"g{i}" for i in range(len(both))]
    same = audit_scores(both, both, groups, k=3)
    assert torch.equal(same.audio_neighbours, same.text_neighbours)
    assert torch.allclose(same.score, torch.ones(len(groups), dtype=torch.float64))
    assert torch.allclose(same.overlap, torch.ones(len(groups), dtype=torch.float64))


def test_same_group_clips_are_never_neighbours() -> None:
    audio, text, _ = _corpus()
    groups = [f"g{i // 2}" for i in range(18)]  # pairs of cuts of one recording
    result = audit_scores(audio, text, groups, k=4)
    for i in range(18):
        for j in result.audio_neighbours[i].tolist() + result.text_neighbours[i].tolist():
            assert groups[j] != groups[i]


def test_deterministic_and_checked() -> None:
    audio, text, groups = _corpus(seed=1)
    a, b = audit_scores(audio, text, groups, k=3), audit_scores(audio.clone(), text.clone(), groups, k=3)
    assert torch.equal(a.score, b.score) and torch.equal(a.audio_neighbours, b.audio_neighbours)
    ids = [f"c{i}" for i in range(18)]
    assert flagged_indices(torch.zeros(18), ids, 0.2) == [0, 1, 10, 11]  # ties by id
    with pytest.raises(ConfigError, match="lower --k"):
        audit_scores(audio, text, ["one"] * 17 + ["two"], k=2)
    with pytest.raises(ConfigError, match="fraction"):
        flagged_indices(a.score, ids, 0.0)


def test_audio_stats_tell_a_tone_from_noise() -> None:
    sr = 8000
    t = torch.arange(sr) / sr
    tone = 0.5 * torch.sin(2 * math.pi * 220 * t)
    noise = 0.5 * (torch.rand(sr, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    s_tone, s_noise = audio_stats(tone, sr), audio_stats(noise, sr)
    assert s_tone["pitched"] > 0.9 and s_noise["pitched"] < 0.1
    assert s_tone["flatness"] < 0.05 < s_noise["flatness"]
    assert abs(float(s_tone["rms_db"]) - 20 * math.log10(0.5 / math.sqrt(2))) < 0.2
    assert 150 < float(s_tone["centroid_hz"]) < 300 and float(s_noise["centroid_hz"]) > 1500
    decay = tone * torch.linspace(1, 0, sr)
    assert audio_stats(decay, sr)["envelope"][0] == "█"


def test_silent_segments_of_a_long_recording_are_not_kept(tmp_path: Path) -> None:
    """A 100 s recording with sound only in its first 12 s and 60-75 s (game padding, as in
    Unknown Horizons' chapel and Widelands' coyote_00, found by the audit): only the audible
    segments are written."""
    import soundfile as sf

    from training.corpus import build as corpus_build
    from training.corpus.clip import SourceClip

    rate = 8000
    t = torch.arange(100 * rate) / rate
    wave = 0.5 * torch.sin(2 * math.pi * 440 * t)
    wave[(t >= 12) & (t < 60)] = 0
    wave[t >= 75] = 0
    path = tmp_path / "padded.wav"
    sf.write(path, wave.numpy(), rate, subtype="PCM_16")
    clip = SourceClip("p", "x/padded.wav", ["a tone"], "CC0-1.0", None, "padded", path=path)
    rows = corpus_build.convert_clip(clip, "p-padded", tmp_path / "out", "train")
    assert isinstance(rows, list)
    # 10 segments of 10 s; audible: 0-10, 10-20 (to 12 s), 60-70, 70-80 (to 75 s)
    assert [row.clip_id for row in rows] == ["p-padded-seg00", "p-padded-seg01", "p-padded-seg06", "p-padded-seg07"]
    for row in rows:
        data, _ = sf.read(tmp_path / "out" / row.audio)
        assert abs(data).max() > 0.1


def test_injected_caption_errors_are_found() -> None:
    """Rotating the captions of 6 of 60 clips of 3 well-separated classes: every rotated caption
    that names another class than the clip's lands in the flagged 10% (a random flagging finds 10%)."""
    gen = torch.Generator().manual_seed(3)
    audio_centres, text_centres = torch.randn(3, 16, generator=gen) * 3, F.normalize(torch.randn(3, 8, generator=gen))
    labels = [i % 3 for i in range(60)]
    audio = torch.stack([audio_centres[c] + 0.5 * torch.randn(16, generator=gen) for c in labels])
    text = F.normalize(torch.stack([text_centres[c] + 0.2 * torch.randn(8, generator=gen) for c in labels]))
    ids, groups = [f"c{i:02d}" for i in range(60)], [f"g{i}" for i in range(60)]
    total_errors = total_hits = 0
    for seed in range(5):
        m, hit, flagged = injection_check(audio, text, groups, ids, k=5, fraction=0.1, noise=0.1, seed=seed)
        idx = random.Random(seed).sample(range(60), 6)  # the draw injection_check makes
        errors = sum(labels[a] != labels[b] for a, b in zip(idx, idx[1:] + idx[:1], strict=True))
        assert (m, flagged) == (6, 6) and errors <= hit <= 6
        total_errors, total_hits = total_errors + errors, total_hits + hit
    assert total_errors >= 10  # the check is not vacuous
    assert injection_check(audio, text, groups, ids, 5, 0.1, 0.1, 0) == injection_check(audio, text, groups, ids,
                                                                                          5, 0.1, 0.1, 0)
