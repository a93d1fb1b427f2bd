"""Small generators shared by the tests (audio files, tiny transformers models)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf


def write_tone(
    path: Path,
    freq: float = 440.0,
    seconds: float = 1.0,
    sr: int = 16000,
    channels: int = 1,
    noise: float = 0.0,
    seed: int = 0,
) -> Path:
    """Write a sine tone (plus optional seeded noise) to ``path`` (format from the suffix)."""
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.5 * np.sin(2 * np.pi * freq * t)
    if noise:
        wave = wave + noise * np.random.default_rng(seed).standard_normal(len(t))
    data = np.repeat(wave[:, None], channels, axis=1) if channels > 1 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data.astype(np.float32), sr)
    return path


def write_caption_corpus(
    root: Path,
    words: Sequence[str],
    split_of: Callable[[int], str],
    freq: tuple[float, float] = (150.0, 90.0),
    seconds: tuple[float, float] = (0.4, 0.05),
    extra: Callable[[int], dict[str, Any]] | None = None,
) -> Path:
    """A small seeded corpus under ``root``: ``audio/<i>.wav`` and ``manifest.jsonl``.

    Clip ``i`` is a tone of ``freq[0] + freq[1]·i`` Hz lasting ``seconds[0] + seconds[1]·i`` s with
    seeded noise, captioned "a <words[i]>" and "the <words[i]> loudly", in split ``split_of(i)``,
    recording group ``g<i>``; ``extra(i)`` adds manifest fields.
    """
    rows = []
    for i, text in enumerate(words):
        write_tone(root / "audio" / f"{i}.wav", freq=freq[0] + freq[1] * i, seconds=seconds[0] + seconds[1] * i,
                   noise=0.05, seed=i)
        rows.append({"clip_id": f"c{i}", "audio": f"audio/{i}.wav", "captions": [f"a {text}", f"the {text} loudly"],
                     "split": split_of(i), "group": f"g{i}", **(extra(i) if extra else {})})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def make_tiny_bert(directory: Path, extra_words: Sequence[str] = ()) -> Path:
    """Save a randomly initialised 2-layer BERT with a 60-word vocabulary (plus ``extra_words``,
    e.g. words of other languages for a tiny multilingual encoder) to ``directory``."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = (
        "a the dog barks cat meows rain falls water bird sings engine runs car horn train wind fire sound of this is"
    ).split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *[f"w{i}" for i in range(60 - len(words) - 5)]]
    vocab += [w for w in dict.fromkeys(w.lower() for w in extra_words) if w not in vocab]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 takes the vocabulary as ``vocab`` (``vocab_file`` is silently ignored and
    # would leave a 5-token vocabulary in which every word is [UNK])
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    assert tokenizer.vocab_size == len(vocab)
    tokenizer.save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(directory)
    return directory


def make_tiny_wav2vec2(directory: Path) -> Path:
    """Save a randomly initialised tiny wav2vec 2.0 encoder with its feature extractor."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
    )
    Wav2Vec2Model(config).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True).save_pretrained(directory)
    return directory


def offline_hub_cache(
    monkeypatch: pytest.MonkeyPatch,
    cache: Path,
    repo_id: str,
    source: Path,
    names: Sequence[str] | None = None,
    commit: str = "0123456789abcdef0123456789abcdef01234567",
) -> Path:
    """Put ``source``'s files (or only ``names``) into a hub cache at ``cache`` as ``repo_id``'s
    ``main`` snapshot, and point the hub client at it in offline mode; returns the snapshot."""
    import shutil

    import huggingface_hub.constants as hf_constants

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        if path.is_file() and (names is None or path.name in names):
            shutil.copy(path, snapshot / path.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return snapshot


def make_tiny_roberta(directory: Path) -> Path:
    """Save a randomly initialised 2-layer RoBERTa with a byte-level BPE tokenizer (the 256
    byte symbols, no merges) to ``directory``: roberta-base's architecture and tokenizer type."""
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    # GPT-2's byte-level alphabet: printable bytes stand for themselves, the others for chr(256 + i)
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    symbols = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for symbol in sorted(symbols):
        vocab.setdefault(symbol, len(vocab))
    directory.mkdir(parents=True, exist_ok=True)
    RobertaTokenizerFast(vocab=vocab, merges=[]).save_pretrained(directory)
    config = RobertaConfig(
        vocab_size=len(vocab), hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
        max_position_embeddings=80,
    )
    RobertaModel(config).save_pretrained(directory)
    return directory


def make_tiny_ast(directory: Path) -> Path:
    """Save a randomly initialised 1-layer Audio Spectrogram Transformer whose feature extractor
    keeps 64 fbank frames (10 480 samples ≈ 0.65 s at 16 kHz) to ``directory``."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    config = ASTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, patch_size=16,
        num_mel_bins=32, max_length=64, frequency_stride=16, time_stride=16,
    )
    ASTModel(config).save_pretrained(directory)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64, sampling_rate=16000).save_pretrained(directory)
    return directory


def make_tiny_clap(directory: Path) -> Path:
    """Save a randomly initialised tiny CLAP (HTSAT audio tower + RoBERTa text tower, as
    ``laion/clap-htsat-unfused`` holds) with its feature extractor to ``directory``: 48 kHz,
    16 mel bands, 1 s windows (``nb_max_samples`` 48 000), random-crop truncation, repeat-padding."""
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig

    audio = ClapAudioConfig(
        window_size=4, num_mel_bins=16, spec_size=64, patch_size=4, patch_stride=(4, 4), depths=[1, 1],
        num_heads=[1, 2], patch_embeds_hidden_size=8, hidden_size=16, enable_fusion=False, projection_dim=8,
    )
    text = ClapTextConfig(
        vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        projection_dim=8, max_position_embeddings=40,
    )
    ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=8)).save_pretrained(
        directory
    )
    ClapFeatureExtractor(
        feature_size=16, sampling_rate=48000, hop_length=480, max_length_s=1, fft_window_size=1024,
        truncation="rand_trunc", padding="repeatpad",
    ).save_pretrained(directory)
    return directory
