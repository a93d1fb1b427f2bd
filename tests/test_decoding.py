"""Tests of atr_demo.decoding: every common container/codec, cut-off and bad files, early stop.

Every file is encoded here with PyAV itself (the library the decoder uses) from a seeded signal:
left channel a 440 Hz tone, right channel a 660 Hz tone, both with a little noise, 1 s long.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

import atr_demo.decoding as decoding
from atr_demo.audio import load_audio
from atr_demo.decoding import decode_audio
from atr_demo.errors import AudioDecodeError, AudioError, AudioTooLongError, EmptyAudioError, InvalidAudioError
from atr_demo.fileio import AUDIO_EXTENSIONS

#: Samples a lossy codec may add (priming, padding to whole frames) or drop (a last partial frame).
LOSSY_LENGTH_TOLERANCE = 2048


def signal(rate: int, channels: int = 2, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """(samples, channels) float32: channel c is a tone at 440 · 1.5^c Hz (amplitude 0.4) plus noise (σ 0.02)."""
    t = np.arange(round(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    tones = [0.4 * np.sin(2 * np.pi * 440.0 * 1.5**c * t) for c in range(channels)]
    return (np.stack(tones, axis=1) + 0.02 * rng.standard_normal((t.size, channels))).astype(np.float32)


def encode(
    path: Path, container: str, codec: str | None, data: np.ndarray | None, rate: int, *, video: bool = False
) -> Path:
    """Write ``data`` (samples, channels) with PyAV; ``video`` adds a 32×32 MPEG-4 track (5 frames)."""
    with av.open(str(path), "w", format=container) as out:
        vstream = astream = None
        if video:
            vstream = out.add_stream("mpeg4", rate=5)
            vstream.width, vstream.height, vstream.pix_fmt = 32, 32, "yuv420p"
        if data is not None and codec is not None:
            layout = {1: "mono", 2: "stereo"}[data.shape[1]]
            astream = out.add_stream(codec, rate=rate, layout=layout)
            if codec == "vorbis":  # FFmpeg's own Vorbis encoder is marked experimental
                astream.codec_context.options = {"strict": "experimental"}
            if codec == "wmav2":
                astream.bit_rate = 128_000
        if vstream is not None:
            for i in range(5):
                image = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8), format="rgb24")
                image.pts, image.time_base = i, Fraction(1, 5)
                out.mux(vstream.encode(image))
            out.mux(vstream.encode(None))
        if astream is not None and data is not None:
            if data.shape[0]:
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.T), format="fltp", layout=layout)
                frame.sample_rate, frame.pts = rate, 0
                out.mux(astream.encode(frame))
            out.mux(astream.encode(None))
    return path


@dataclass(frozen=True)
class Fmt:
    ext: str
    container: str
    codec: str
    rate: int = 44100
    lossless: bool = False
    video: bool = False


FORMATS = [
    Fmt("wav", "wav", "pcm_s16le", lossless=True),
    Fmt("flac", "flac", "flac", lossless=True),
    Fmt("aiff", "aiff", "pcm_s16be", lossless=True),
    Fmt("oga", "ogg", "flac", lossless=True),  # FLAC in Ogg: lossless through FFmpeg
    Fmt("ogg", "ogg", "vorbis"),
    Fmt("opus", "ogg", "libopus", rate=48000),
    Fmt("webm", "webm", "libopus", rate=48000),
    Fmt("mp3", "mp3", "libmp3lame"),
    Fmt("m4a", "ipod", "aac"),
    Fmt("mp4", "mp4", "aac"),
    Fmt("m4v", "mp4", "aac", video=True),  # the audio track of a video
    Fmt("aac", "adts", "aac"),
    Fmt("wma", "asf", "wmav2"),
]


def dominant_hz(x: np.ndarray, rate: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(x)))) * rate / x.size


def test_the_encoders_these_tests_need_are_in_the_wheel() -> None:
    for codec in ("pcm_s16le", "flac", "vorbis", "libopus", "libmp3lame", "aac", "wmav2", "mpeg4"):
        assert av.Codec(codec, "w").name == codec


@pytest.mark.parametrize("fmt", FORMATS, ids=[f.ext for f in FORMATS])
def test_each_format_decodes_with_rate_channels_length_and_content(tmp_path: Path, fmt: Fmt) -> None:
    original = signal(fmt.rate)
    path = encode(tmp_path / f"clip.{fmt.ext}", fmt.container, fmt.codec, original, fmt.rate, video=fmt.video)
    samples, rate = decode_audio(path)
    assert rate == fmt.rate and samples.dtype == np.float32 and samples.shape[1] == 2
    if fmt.lossless:
        assert samples.shape == original.shape
        np.testing.assert_allclose(samples, original, atol=1.5 / 2**15)  # 16-bit quantisation
        for c in range(2):
            assert np.corrcoef(samples[:, c], original[:, c])[0, 1] > 0.99999
    else:
        assert abs(samples.shape[0] - original.shape[0]) <= LOSSY_LENGTH_TOLERANCE
        n = min(samples.shape[0], original.shape[0])
        for c, hz in enumerate((440.0, 660.0)):  # channel order kept, tone where it was
            assert abs(dominant_hz(samples[:n, c], rate) - hz) <= 2.0
            energy_ratio = np.mean(samples[:, c] ** 2) * original.shape[0] / (np.mean(original[:, c] ** 2) * n)
            assert 0.8 < energy_ratio < 1.25, energy_ratio
    # the file's bytes decode to the same samples
    from_bytes, rate_b = decode_audio(path.read_bytes())
    assert rate_b == rate and np.array_equal(from_bytes, samples)
    # and load_audio averages the channels and resamples to the model rate
    wave = load_audio(path, 44100)
    assert abs(wave.shape[0] - samples.shape[0] * 44100 / rate) <= 1


@pytest.mark.parametrize(
    ("ext", "container", "codec", "rate"),
    [("mp3", "mp3", "libmp3lame", 22050), ("m4a", "ipod", "aac", 16000), ("mp3", "mp3", "libmp3lame", 8000),
     ("webm", "webm", "libopus", 48000)],
)
def test_mono_and_other_rates(tmp_path: Path, ext: str, container: str, codec: str, rate: int) -> None:
    original = signal(rate, channels=1)
    path = encode(tmp_path / f"mono.{ext}", container, codec, original, rate)
    samples, got_rate = decode_audio(path)
    assert got_rate == rate and samples.shape[1] == 1
    assert abs(samples.shape[0] - original.shape[0]) <= LOSSY_LENGTH_TOLERANCE
    assert abs(dominant_hz(samples[:, 0], rate) - 440.0) <= 2.0
    wave = load_audio(path, 44100)
    assert abs(wave.shape[0] - samples.shape[0] * 44100 / rate) <= 1


def test_silence_decodes_to_near_zero(tmp_path: Path) -> None:
    path = encode(tmp_path / "silence.mp3", "mp3", "libmp3lame", np.zeros((44100, 1), np.float32), 44100)
    samples, _ = decode_audio(path)
    assert samples.shape[0] > 40000 and np.abs(samples).max() < 1e-3


@pytest.mark.parametrize("fmt", FORMATS, ids=[f.ext for f in FORMATS])
def test_libsndfile_decodes_only_where_it_is_faster(tmp_path: Path, fmt: Fmt, monkeypatch: pytest.MonkeyPatch) -> None:
    path = encode(tmp_path / f"clip.{fmt.ext}", fmt.container, fmt.codec, signal(fmt.rate), fmt.rate, video=fmt.video)
    fast = fmt.ext in ("wav", "flac", "aiff", "ogg")  # ogg here is Vorbis

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the other decoder was used")

    monkeypatch.setattr(decoding.av, "open", refuse) if fast else monkeypatch.setattr(decoding.sf, "SoundFile", refuse)
    samples, _ = decode_audio(path)
    assert samples.shape[0] > 40000


def test_extensions_cover_every_format() -> None:
    wanted = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".m4v", ".webm", ".wma",
              ".aiff", ".aif"}
    assert wanted <= set(AUDIO_EXTENSIONS)
    assert all(ext == ext.lower() and ext.startswith(".") for ext in AUDIO_EXTENSIONS)


# -- files cut off or with a header that overestimates -----------------------------------------


def test_header_frame_count_is_not_a_verdict(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the reported bug: an MP3 whose header announces a little more audio than decodes
    full = encode(tmp_path / "full.mp3", "mp3", "libmp3lame", signal(44100), 44100).read_bytes()
    path = tmp_path / "short.mp3"
    path.write_bytes(full[: int(len(full) * 0.95)])
    with caplog.at_level(logging.WARNING, logger="atr_demo.decoding"):
        samples, rate = decode_audio(path)
    assert 0.9 < samples.shape[0] / rate < 1.0
    assert not caplog.records  # a few % short of the header is its estimate, not damage


@pytest.mark.parametrize("fmt", FORMATS, ids=[f.ext for f in FORMATS])
def test_a_file_cut_in_half_decodes_as_far_as_it_goes_or_fails_in_one_line(
    tmp_path: Path, fmt: Fmt, caplog: pytest.LogCaptureFixture
) -> None:
    original = signal(fmt.rate, seconds=3.0)
    full = encode(tmp_path / f"full.{fmt.ext}", fmt.container, fmt.codec, original, fmt.rate, video=fmt.video)
    path = tmp_path / f"cut.{fmt.ext}"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    try:
        with caplog.at_level(logging.WARNING, logger="atr_demo.decoding"):
            samples, rate = decode_audio(path)
    except AudioDecodeError as exc:  # e.g. MP4 keeps its index at the end: nothing to go on
        text = str(exc)
        assert str(path) in text and "\n" not in text and ("re-download" in text or "convert" in text)
        assert fmt.container in ("mp4", "ipod"), f"{fmt.ext}: only MP4 without its index may be refused: {exc}"
        return
    assert rate == fmt.rate and 0.25 < samples.shape[0] / original.shape[0] < 0.75
    n = min(samples.shape[0], original.shape[0])
    assert abs(dominant_hz(samples[:n, 0], rate) - 440.0) <= 2.0
    # AIFF, ADTS and Ogg (for FFmpeg) state no total length to compare with
    if fmt.ext not in ("aiff", "aac", "oga", "opus"):
        assert any("cut off" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fraction", [0.02, 0.1])
@pytest.mark.parametrize("fmt", FORMATS, ids=[f.ext for f in FORMATS])
def test_a_file_cut_short_gives_a_prefix_or_one_line(tmp_path: Path, fmt: Fmt, fraction: float) -> None:
    full = encode(tmp_path / f"full.{fmt.ext}", fmt.container, fmt.codec, signal(fmt.rate), fmt.rate, video=fmt.video)
    data = full.read_bytes()[: max(1, int(full.stat().st_size * fraction))]
    try:
        samples, _ = decode_audio(data)
    except AudioError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("the audio data")
    else:
        assert 0 < samples.shape[0] <= fmt.rate * 0.5


# -- inputs that are not usable audio -----------------------------------------------------------


def _png() -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x04\x00\x00\x00\x04\x08\x02\x00\x00\x00" + bytes(300)


BAD = {
    "corrupt.mp3": ("random", "not readable audio"),
    "picture.mp3": ("png", "PNG image"),
    "notes.wav": ("text", "not readable audio"),
    "empty.m4a": ("empty", "empty"),
    "header-only.m4a": ("ftyp", "not readable audio"),
    "video-only.mp4": ("video", "no audio stream"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_inputs_raise_one_line_naming_the_file(tmp_path: Path, name: str) -> None:
    kind, message = BAD[name]
    path = tmp_path / name
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "png":
        path.write_bytes(_png())
    elif kind == "text":
        path.write_text("these are not audio samples\n" * 20, encoding="utf-8")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "ftyp":
        path.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A isommp42" + bytes(2000))
    else:
        encode(path, "mp4", None, None, 44100, video=True)
    with pytest.raises(AudioError, match=message) as info:
        load_audio(path, 44100)
    text = str(info.value)
    assert str(path) in text and "\n" not in text
    assert any(word in text for word in ("convert", "give", "re-export", "re-download", "upload"))  # says what to do


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = encode(tmp_path / "locked.mp3", "mp3", "libmp3lame", signal(44100), 44100)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make opening it fail as it does for a user
        real_open = Path.open

        def locked(self: Path, *args: object, **kwargs: object) -> object:
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Path, "open", locked)
    with pytest.raises(AudioDecodeError, match="permission denied") as info:
        load_audio(path, 44100)
    assert str(path) in str(info.value) and "chmod" in str(info.value)


def test_rate_out_of_range_through_ffmpeg(tmp_path: Path) -> None:
    path = encode(tmp_path / "low.oga", "ogg", "flac", signal(4000, channels=1), 4000)
    with pytest.raises(InvalidAudioError, match="4000 Hz"):
        decode_audio(path)


def test_a_stream_without_samples_is_empty(tmp_path: Path) -> None:
    path = encode(tmp_path / "nothing.mka", "matroska", "flac", np.zeros((0, 1), np.float32), 44100)
    with pytest.raises((EmptyAudioError, AudioDecodeError)):
        decode_audio(path)


# -- a long file is never decoded whole to be refused --------------------------------------------


def _count_decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    decoded: list[int] = []
    real = decoding._frame_samples

    def counting(frame: av.AudioFrame) -> np.ndarray:
        block = real(frame)
        decoded.append(block.shape[0])
        return block

    monkeypatch.setattr(decoding, "_frame_samples", counting)
    return decoded


def test_too_long_from_the_header_decodes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = encode(tmp_path / "long.m4a", "ipod", "aac", signal(16000, channels=1, seconds=6.0), 16000)
    decoded = _count_decoded(monkeypatch)
    with pytest.raises(AudioTooLongError, match="longer than the maximum of 2 s"):
        load_audio(path, 44100, max_duration_s=2.0)
    assert decoded == []


def test_too_long_without_a_header_length_stops_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = encode(tmp_path / "long.mp3", "mp3", "libmp3lame", signal(16000, channels=1, seconds=6.0), 16000)
    monkeypatch.setattr(decoding, "_header_seconds", lambda container, stream: None)  # e.g. a live stream
    decoded = _count_decoded(monkeypatch)
    with pytest.raises(AudioTooLongError, match="longer than the maximum of 2 s"):
        load_audio(path, 44100, max_duration_s=2.0)
    assert 2.0 * 16000 < sum(decoded) <= 2.0 * 16000 + 1152  # stopped within one MP3 frame of the limit
    # within the limit the whole file decodes
    whole = load_audio(path, 16000, max_duration_s=10.0)
    assert whole.shape[0] == pytest.approx(6.0 * 16000, abs=LOSSY_LENGTH_TOLERANCE)


def test_soundfile_formats_still_check_the_exact_header(tmp_path: Path) -> None:
    path = tmp_path / "long.flac"
    sf.write(path, np.zeros((8000 * 3, 1), dtype=np.float32), 8000)
    with pytest.raises(AudioTooLongError, match="lasts 3.0 s"):
        decode_audio(path, max_duration_s=2.0)
