"""Tests of atr_demo.audio: decoding, validation, resampling, log-mel front-end, blocking."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from atr_demo.audio import (
    FrontendConfig,
    LogMelFrontend,
    decode_audio,
    load_audio,
    prepare_waveform,
    to_blocks,
)
from atr_demo.errors import (
    AudioDecodeError,
    AudioError,
    AudioTooLongError,
    ConfigError,
    EmptyAudioError,
    InvalidAudioError,
)

SR = 44100


def tone(freq: float, seconds: float, sr: int = SR, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1)


def wav_bytes(data: np.ndarray, sr: int = SR, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, data, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# FrontendConfig
# ------------------------------------------------------------------------------------------


def test_frontend_config_defaults_and_roundtrip() -> None:
    cfg = FrontendConfig()
    assert (cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels) == (44100, 2048, 1024, 96)
    assert (cfg.block_frames, cfg.block_hop_frames, cfg.norm_divisor) == (100, 50, 9.4578)
    assert FrontendConfig.from_dict(cfg.to_dict()) == cfg
    assert FrontendConfig.from_dict({"n_mels": 64}).n_mels == 64


def test_frontend_config_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="hop_size"):
        FrontendConfig.from_dict({"hop_size": 512})
    with pytest.raises(ConfigError, match="f_max"):
        FrontendConfig(f_max=30000.0)


# ------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------

# files written by libsndfile (the formats PyAV writes are in test_decoding.py)
FORMATS = [
    ("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"), ("mp3", "MP3", "MPEG_LAYER_III"),
]


@pytest.mark.parametrize(("ext", "fmt", "subtype"), FORMATS, ids=[f[0] for f in FORMATS])
def test_decode_each_format(tmp_path: Path, ext: str, fmt: str, subtype: str) -> None:
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}/{subtype}")
    original = tone(440.0, 0.5, channels=2)
    path = tmp_path / f"clip.{ext}"
    sf.write(path, original, SR, format=fmt, subtype=subtype)
    samples, rate = decode_audio(path)
    assert rate == SR and samples.dtype == np.float32 and samples.shape[1] == 2
    assert abs(samples.shape[0] - original.shape[0]) <= 2048  # lossy codecs may pad a frame
    n = min(samples.shape[0], original.shape[0])
    if ext in ("wav", "flac"):
        np.testing.assert_allclose(samples[:n], original[:n], atol=1e-4)
    else:  # lossy: same signal up to codec delay -> compare spectra
        spec_in = np.abs(np.fft.rfft(original[:n, 0]))
        spec_out = np.abs(np.fft.rfft(samples[:n, 0]))
        assert np.argmax(spec_out) == np.argmax(spec_in)
    # bytes input decodes the same
    from_bytes, rate_b = decode_audio(path.read_bytes())
    assert rate_b == rate and np.array_equal(from_bytes, samples)


@pytest.mark.parametrize("channels", range(1, 9))
def test_channels_are_downmixed_by_mean(tmp_path: Path, channels: int) -> None:
    n = 1000
    data = np.stack([np.full(n, (c + 1) / 10, dtype=np.float32) for c in range(channels)], axis=1)
    path = tmp_path / "multi.wav"
    sf.write(path, data, SR, subtype="FLOAT")
    wave = load_audio(path, SR)
    assert wave.shape == (n,) and wave.dtype == torch.float32
    expected = np.mean([(c + 1) / 10 for c in range(channels)])
    torch.testing.assert_close(wave, torch.full((n,), float(expected)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 96000, 192000])
def test_rates_are_resampled_to_the_right_length(tmp_path: Path, rate: int) -> None:
    seconds = 0.25
    data = tone(1000.0, seconds, sr=rate)
    path = tmp_path / "rate.wav"
    sf.write(path, data, rate, subtype="FLOAT")
    wave = load_audio(path, SR)
    assert wave.shape == (math.ceil(data.shape[0] * SR / rate),)
    assert torch.isfinite(wave).all()
    # the tone stays at 1 kHz after resampling
    spectrum = torch.fft.rfft(wave).abs()
    peak_hz = int(torch.argmax(spectrum)) * SR / wave.shape[0]
    assert abs(peak_hz - 1000.0) < 10.0


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="does not exist"):
        decode_audio(tmp_path / "nope.wav")


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty"):
        decode_audio(path)
    with pytest.raises(AudioDecodeError, match="empty"):
        decode_audio(b"")


def test_file_without_samples(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 1), dtype=np.float32), SR)
    with pytest.raises(EmptyAudioError):
        load_audio(path, SR)


def test_random_bytes_name_the_supported_formats() -> None:
    junk = np.random.default_rng(0).bytes(4096)
    with pytest.raises(AudioDecodeError, match="wav, flac"):
        decode_audio(junk)


def test_mp4_without_its_index(tmp_path: Path) -> None:
    # an MP4/M4A header with nothing after it: named as such, with what to do
    path = tmp_path / "clip.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A isommp42" + bytes(2000))
    with pytest.raises(AudioDecodeError, match="not readable audio .*MP4/M4A.*re-download"):
        decode_audio(path)


@pytest.mark.parametrize(("fmt", "subtype"), [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")])
@pytest.mark.parametrize("fraction", [0.5, 0.02])
def test_truncated_file(fmt: str, subtype: str, fraction: float) -> None:
    # decoded as far as it goes (the first part of the tone), or refused in one line
    original = tone(440.0, 1.0, channels=2)
    data = wav_bytes(original, fmt=fmt, subtype=subtype)
    cut = data[: int(len(data) * fraction)]
    try:
        samples, rate = decode_audio(cut)
    except AudioError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("the audio data")
    else:
        assert rate == SR and 0 < samples.shape[0] <= original.shape[0] * max(fraction, 0.1)
        if fmt != "OGG":  # lossless: the decoded part is the start of the original
            np.testing.assert_allclose(samples, original[: samples.shape[0]], atol=1e-4)


def test_nan_samples_are_rejected(tmp_path: Path) -> None:
    data = tone(440.0, 0.1)
    data[10, 0] = np.nan
    with pytest.raises(InvalidAudioError, match="NaN"):
        prepare_waveform(data, SR, SR)
    path = tmp_path / "nan.wav"
    sf.write(path, data, SR, subtype="FLOAT")
    with pytest.raises(InvalidAudioError, match="NaN"):
        decode_audio(path)
    data[10, 0] = np.inf
    with pytest.raises(InvalidAudioError):
        prepare_waveform(torch.from_numpy(data), SR, SR)


def test_nine_channels_are_rejected(tmp_path: Path) -> None:
    data = np.zeros((100, 9), dtype=np.float32)
    path = tmp_path / "nine.wav"
    sf.write(path, data, SR)
    with pytest.raises(InvalidAudioError, match="9 channels"):
        decode_audio(path)
    with pytest.raises(InvalidAudioError, match="9 channels"):
        prepare_waveform(data, SR, SR)


@pytest.mark.parametrize("rate", [4000, 384000])
def test_rate_out_of_range(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "rate.wav"
    sf.write(path, np.zeros((100, 1), dtype=np.float32), rate)
    with pytest.raises(InvalidAudioError, match="sample rate"):
        load_audio(path, SR)
    with pytest.raises(InvalidAudioError, match="sample rate"):
        prepare_waveform(np.zeros(100, dtype=np.float32), rate, SR)


def test_too_long_fails_from_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros((8000 * 10, 1), dtype=np.int16), 8000)  # 10 s
    # the samples must not be read: make reading fail loudly
    def no_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("samples were read before the duration check")

    monkeypatch.setattr(sf.SoundFile, "read", no_read)
    with pytest.raises(AudioTooLongError, match="10.0 s"):
        load_audio(path, SR, max_duration_s=5.0)
    with pytest.raises(AudioTooLongError):
        prepare_waveform(np.zeros(8000 * 10, dtype=np.int16), 8000, SR, max_duration_s=5.0)


def test_prepare_waveform_gradio_int16() -> None:
    stereo = np.zeros((4410, 2), dtype=np.int16)
    stereo[:, 0] = 32767
    stereo[:, 1] = -32768
    wave = prepare_waveform(stereo, 44100, SR)
    assert wave.shape == (4410,) and wave.dtype == torch.float32
    torch.testing.assert_close(wave, torch.full((4410,), (32767 - 32768) / 2 / 32768))
    mono = prepare_waveform(np.full(4410, 16384, dtype=np.int16), 44100, SR)
    torch.testing.assert_close(mono, torch.full((4410,), 0.5))
    with pytest.raises(EmptyAudioError):
        prepare_waveform(np.zeros(0, dtype=np.int16), 44100, SR)
    with pytest.raises(InvalidAudioError, match="dtype"):
        prepare_waveform(np.zeros(10, dtype=np.complex64), 44100, SR)


# ------------------------------------------------------------------------------------------
# Log-mel front-end and blocks
# ------------------------------------------------------------------------------------------


def test_logmel_shape_and_silence() -> None:
    frontend = LogMelFrontend()
    n = 44100
    out = frontend(torch.zeros(n))
    assert out.shape == (1 + n // 1024, 96)
    assert torch.isfinite(out).all() and torch.equal(out, torch.zeros_like(out))


def test_logmel_is_peak_normalised() -> None:
    frontend = LogMelFrontend()
    wave = torch.from_numpy(tone(440.0, 0.5)[:, 0]) + 0.01 * torch.randn(22050)
    torch.testing.assert_close(frontend(wave), frontend(0.01 * wave), atol=1e-5, rtol=1e-5)
    assert 0.0 <= frontend(wave).min() and frontend(wave).max() <= 1.5


def test_mel_filters_sum_to_one() -> None:
    sums = LogMelFrontend().mel_fb.sum(dim=0)
    torch.testing.assert_close(sums, torch.ones(96))


def test_1khz_tone_lands_in_the_band_containing_1khz() -> None:
    frontend = LogMelFrontend()
    wave = torch.from_numpy(tone(1000.0, 1.0)[:, 0])
    band = int(frontend(wave).mean(dim=0).argmax())
    # HTK mel band m spans corners m .. m+2 of 98 mel-equispaced points on 0..22050 Hz
    mel_max = 2595.0 * math.log10(1.0 + 22050.0 / 700.0)
    corners = [700.0 * (10 ** (m / 2595.0) - 1.0) for m in np.linspace(0.0, mel_max, 98)]
    assert corners[band] < 1000.0 < corners[band + 2]
    centre_band = min(range(96), key=lambda m: abs(corners[m + 1] - 1000.0))
    assert abs(band - centre_band) <= 1


@pytest.mark.parametrize(
    ("frames", "n_blocks"),
    [(1, 1), (30, 1), (100, 1), (101, 2), (150, 2), (151, 3), (431, 8)],
)
def test_to_blocks_shapes(frames: int, n_blocks: int) -> None:
    logmel = torch.rand(frames, 96) + 0.5  # strictly positive: padding (zeros) is recognisable
    blocks = to_blocks(logmel, 100, 50)
    assert blocks.shape == (n_blocks, 100, 96)
    for i in range(n_blocks):
        real = logmel[i * 50 : i * 50 + 100]
        assert torch.equal(blocks[i, : real.shape[0]], real)
        assert torch.equal(blocks[i, real.shape[0] :], torch.zeros(100 - real.shape[0], 96))
    # nothing dropped: the last frame is inside the last block
    last_start = (n_blocks - 1) * 50
    assert last_start <= frames - 1 < last_start + 100
    assert torch.equal(to_blocks(logmel), blocks)  # deterministic


def test_coprime_rate_resamples_with_a_bounded_filter(tmp_path: Path) -> None:
    # 8363 Hz (a tracker-module rate) and 44100 Hz are coprime: an exact polyphase filter would
    # need 44 100 phases (gigabytes); the bounded ratio keeps the length within 0.05 %
    from atr_demo.audio import MAX_RESAMPLE_PHASES, resample_ratio

    orig, new = resample_ratio(8363, 44100)
    assert new <= MAX_RESAMPLE_PHASES and abs(new / orig / (44100 / 8363) - 1) < 5e-4
    path = tmp_path / "mod.wav"
    sf.write(str(path), np.sin(np.arange(8363 * 2) * 0.05).astype(np.float32), 8363)
    wave = load_audio(path, 44100)
    assert abs(wave.shape[0] - 88200) <= 88200 * 5e-4 and torch.isfinite(wave).all()
