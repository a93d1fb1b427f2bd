"""Audio input: decoding, validation, resampling and the aiSFX log-mel front-end.

Pipeline (all deterministic)::

    file / bytes --decode_audio--> (frames, channels) float32, rate
                 --prepare_waveform--> validated, mono (mean over channels), resampled (samples,)
                 --LogMelFrontend--> (frames, n_mels) log-mel
                 --to_blocks--> (n_blocks, block_frames, n_mels) network input

Decoding lives in :mod:`atr_demo.decoding` (PyAV/FFmpeg for every common container and codec,
libsndfile where it is faster); ``torchaudio.load`` needs torchcodec from torchaudio 2.9 on.
Resampling uses :func:`torchaudio.functional.resample` (windowed-sinc, deterministic).

Every user-caused problem raises a subclass of :class:`atr_demo.errors.AudioError` whose message
says what is wrong and what to do.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torchaudio.functional as AF
from pydantic import ConfigDict, Field, model_validator
from torch import Tensor, nn

from atr_demo.config import ConfigModel
from atr_demo.decoding import (
    MAX_CHANNELS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    SUPPORTED_FORMATS,
    check_audio_format,
    decode_audio,
)
from atr_demo.errors import EmptyAudioError, InvalidAudioError

logger = logging.getLogger(__name__)

__all__ = [
    "FrontendConfig",
    "LogMelFrontend",
    "MAX_CHANNELS",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "SUPPORTED_FORMATS",
    "decode_audio",
    "load_audio",
    "prepare_waveform",
    "to_blocks",
]


# --------------------------------------------------------------------------------------------
# Front-end configuration
# --------------------------------------------------------------------------------------------


class FrontendConfig(ConfigModel):
    """Parameters of the aiSFX log-mel front-end (defaults: the values the network was trained on).

    A frozen :class:`~atr_demo.config.ConfigModel`: unknown keys and non-positive sizes raise
    :class:`~atr_demo.errors.ConfigError` naming the key.

    Attributes:
        sample_rate: rate (Hz) the waveform is resampled to before the STFT.
        n_fft: STFT frame length and FFT size (samples); ``n_fft // 2 + 1`` frequency bins.
        hop_length: STFT hop (samples); 1024 / 44100 Hz ≈ 23.2 ms per frame.
        n_mels: number of mel bands.
        f_min, f_max: frequency range (Hz) of the mel filterbank, 0 <= f_min < f_max <= sample_rate / 2.
        log_scale: ``s`` in ``log10(1 + s · mel)``.
        norm_divisor: the log-mel is divided by this (the training-set maximum, 9.4578).
        block_frames: frames per network input block (100 frames ≈ 2.32 s).
        block_hop_frames: hop between blocks (frames).
    """

    model_config = ConfigDict(frozen=True)
    config_name: ClassVar[str] = "front-end config"

    sample_rate: int = Field(default=44100, gt=0)
    n_fft: int = Field(default=2048, gt=0)
    hop_length: int = Field(default=1024, gt=0)
    n_mels: int = Field(default=96, gt=0)
    f_min: float = Field(default=0.0, ge=0)
    f_max: float = 22050.0
    log_scale: float = Field(default=10000.0, gt=0)
    norm_divisor: float = Field(default=9.4578, gt=0)
    block_frames: int = Field(default=100, gt=0)
    block_hop_frames: int = Field(default=50, gt=0)

    @model_validator(mode="after")
    def _band_fits(self) -> FrontendConfig:
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(
                f"the mel band needs 0 <= f_min < f_max <= sample_rate / 2, got f_min={self.f_min}, "
                f"f_max={self.f_max}, sample_rate={self.sample_rate}"
            )
        return self


# --------------------------------------------------------------------------------------------
# Validation and resampling (decoding: atr_demo.decoding)
# --------------------------------------------------------------------------------------------

_INT_SCALES: dict[torch.dtype, float] = {
    torch.int8: 2.0**7,
    torch.int16: 2.0**15,
    torch.int32: 2.0**31,
}


def prepare_waveform(
    samples: np.ndarray | Tensor,
    sr: int,
    sample_rate: int,
    max_duration_s: float | None = 600.0,
) -> Tensor:
    """Validate an in-memory waveform, downmix it to mono and resample it.

    Accepts what Gradio's microphone/upload components give: ``(sr, array)`` with an int16 array
    of shape (samples,) or (samples, channels). Integer samples are scaled to [-1, 1)
    (int8/16/32: divided by 2^7/2^15/2^31; uint8: ``(x - 128) / 128``); float samples are used
    as they are.

    Args:
        samples: (samples,) or (samples, channels) array/tensor.
        sr: its sample rate (Hz), 8000–192000.
        sample_rate: the rate to resample to (Hz).
        max_duration_s: if given, longer clips raise AudioTooLongError.

    Returns:
        float32 tensor (n,), ``n = ceil(samples * sample_rate / sr)``, on the input's device.

    Raises:
        EmptyAudioError, InvalidAudioError, AudioTooLongError.
    """
    if isinstance(samples, np.ndarray):
        if samples.dtype == np.uint8:
            wave = (torch.from_numpy(samples.astype(np.float32)) - 128.0) / 128.0
        elif samples.dtype.kind in "iuf" and samples.dtype not in (np.uint16, np.uint32, np.uint64):
            wave = torch.from_numpy(np.ascontiguousarray(samples))
        else:
            raise InvalidAudioError(
                f"audio samples of dtype {samples.dtype} are not supported; "
                "use float32 in [-1, 1] or int16/int32 PCM"
            )
    elif isinstance(samples, Tensor):
        wave = samples.detach()
    else:
        raise TypeError(f"prepare_waveform expects a numpy array or a tensor, got {type(samples).__name__}")

    if wave.dtype in _INT_SCALES:
        wave = wave.to(torch.float32) / _INT_SCALES[wave.dtype]
    elif wave.dtype == torch.uint8:
        wave = (wave.to(torch.float32) - 128.0) / 128.0
    elif wave.dtype.is_floating_point:
        wave = wave.to(torch.float32)
    else:
        raise InvalidAudioError(
            f"audio samples of dtype {wave.dtype} are not supported; "
            "use float32 in [-1, 1] or int16/int32 PCM"
        )

    if wave.ndim == 1:
        wave = wave[:, None]
    if wave.ndim != 2:
        raise InvalidAudioError(
            f"audio samples must have shape (samples,) or (samples, channels), got {tuple(wave.shape)}"
        )
    n, channels = wave.shape
    sr = int(sr)
    if channels > MAX_CHANNELS:
        raise InvalidAudioError(
            f"the audio has {channels} channels (shape {tuple(wave.shape)}); at most {MAX_CHANNELS} are "
            "supported — the expected layout is (samples, channels): transpose a (channels, samples) array"
        )
    check_audio_format(channels, sr, n, max_duration_s, "the audio")
    if n == 0:
        raise EmptyAudioError("the audio holds no samples; record or upload a clip with sound")
    if not torch.isfinite(wave).all():
        raise InvalidAudioError("the audio contains NaN or infinite samples")

    mono = wave.mean(dim=1) if channels > 1 else wave[:, 0]
    if sr != sample_rate:
        orig, new = resample_ratio(sr, int(sample_rate))
        mono = AF.resample(mono, orig_freq=orig, new_freq=new)
    return mono.contiguous()


#: Largest number of polyphase filter phases the resampler may build.
MAX_RESAMPLE_PHASES = 1000


def resample_ratio(orig: int, new: int) -> tuple[int, int]:
    """The (orig, new) pair handed to torchaudio's resampler for ``orig`` → ``new`` Hz.

    torchaudio builds one windowed-sinc filter per output phase, ``new / gcd(orig, new)`` of
    them: for coprime rates such as 8363 → 44100 Hz that is 44 100 filters (seconds of work
    and gigabytes of memory for one clip). The ratio is therefore replaced by its closest
    fraction with at most :data:`MAX_RESAMPLE_PHASES` phases. Over every integer rate in
    8–192 kHz the relative rate error is at most 0.05 % (median 2e-6): a pitch and duration
    change below a hundredth of a semitone.
    """
    ratio = Fraction(new, orig)
    if ratio.numerator <= MAX_RESAMPLE_PHASES:
        return ratio.denominator, ratio.numerator
    approx = ratio.limit_denominator(MAX_RESAMPLE_PHASES)
    if approx.numerator > MAX_RESAMPLE_PHASES:  # upsampling: bound the numerator instead
        approx = 1 / (1 / ratio).limit_denominator(MAX_RESAMPLE_PHASES)
    return approx.denominator, approx.numerator


def load_audio(
    source: str | Path | bytes, sample_rate: int, max_duration_s: float | None = 600.0
) -> Tensor:
    """Decode, validate, downmix to mono and resample an audio file.

    With ``max_duration_s`` a longer clip raises AudioTooLongError after decoding at most
    ``max_duration_s`` seconds of it (see :func:`atr_demo.decoding.decode_audio`).

    Returns:
        float32 tensor (samples,) at ``sample_rate``.

    Raises:
        AudioDecodeError, EmptyAudioError, InvalidAudioError, AudioTooLongError
        (see :func:`atr_demo.decoding.decode_audio`).
    """
    samples, rate = decode_audio(source, max_duration_s=max_duration_s)
    return prepare_waveform(samples, rate, sample_rate, max_duration_s=max_duration_s)


# --------------------------------------------------------------------------------------------
# Log-mel front-end
# --------------------------------------------------------------------------------------------


def unit_sum_mel_filterbank(config: FrontendConfig) -> Tensor:
    """HTK mel filterbank with each triangular filter normalised to sum 1.

    Returns:
        float32 tensor (n_fft // 2 + 1, n_mels): ``fb[:, m] = tri_m / sum(tri_m)`` where
        ``tri_m`` is torchaudio's triangle (linear in Hz between HTK-mel-spaced corners).
    """
    fb = AF.melscale_fbanks(
        n_freqs=config.n_fft // 2 + 1,
        f_min=float(config.f_min),
        f_max=float(config.f_max),
        n_mels=config.n_mels,
        sample_rate=config.sample_rate,
        norm=None,
        mel_scale="htk",
    ).to(torch.float64)
    sums = fb.sum(dim=0)
    empty = int((sums == 0).sum())
    if empty:
        logger.warning("%d of %d mel filters cover no FFT bin (n_fft too small for n_mels)", empty, config.n_mels)
    return (fb / sums.clamp_min(1e-12)).to(torch.float32)


class LogMelFrontend(nn.Module):
    """The aiSFX log-mel spectrogram, in torch.

    For a waveform ``x`` (samples,) at ``config.sample_rate``::

        x'      = x / max|x|                      (peak normalisation; all-zero input stays 0)
        P[t, k] = |STFT(x')[t, k]|²               (Hann window n_fft, hop, center=True, zero pad)
        mel     = P @ F                           (F: (n_fft/2+1, n_mels), HTK, each column sums to 1)
        out     = log10(1 + log_scale · mel) / norm_divisor

    With the defaults a clip of ``n`` samples gives ``1 + n // 1024`` frames.

    The network was trained on spectrograms from **Essentia** (aisfx ``spectrogram_essentia``).
    Known differences of this implementation:

    * Essentia's ``EasyLoader`` applies a ReplayGain gain (−6 dB reference), not a peak
      normalisation; we peak-normalise as aisfx's librosa path does (values are then
      divided by a constant anyway; differences show as a constant offset in the log domain).
    * Essentia's ``MelBands(weighting="warping")`` builds the triangles linearly in the mel
      domain; torchaudio's triangles are linear in Hz (same corners, slightly different shape).
    * Essentia's ``FrameCutter`` centres the first frame at t=0 like ``center=True`` but its
      last-frame rule differs, so the frame count can differ by one; its Hann window is
      symmetric while torch's default periodic window is used here (negligible at n_fft 2048).
    * Essentia resamples on load with libsamplerate; we use torchaudio's sinc resampler.
    """

    window: Tensor
    mel_fb: Tensor

    def __init__(self, config: FrontendConfig | None = None) -> None:
        super().__init__()
        self.config = config or FrontendConfig()
        self.register_buffer("window", torch.hann_window(self.config.n_fft), persistent=False)
        self.register_buffer("mel_fb", unit_sum_mel_filterbank(self.config), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples: ``1 + num_samples // hop_length``."""
        return 1 + num_samples // self.config.hop_length

    def forward(self, wave: Tensor) -> Tensor:
        """Log-mel of a mono waveform.

        Args:
            wave: (samples,) or (batch, samples) float tensor at ``config.sample_rate``.

        Returns:
            (frames, n_mels) or (batch, frames, n_mels) float32, ``frames = 1 + samples // hop``.
        """
        if wave.shape[-1] == 0:
            raise EmptyAudioError("the waveform holds no samples")
        cfg = self.config
        wave = wave.to(device=self.window.device, dtype=torch.float32)
        peak = wave.abs().amax(dim=-1, keepdim=True)
        wave = wave / peak.clamp_min(torch.finfo(torch.float32).tiny)
        spec = torch.stft(
            wave,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.n_fft,
            window=self.window.to(torch.float32),
            center=True,
            pad_mode="constant",
            normalized=False,
            onesided=True,
            return_complex=True,
        )  # (..., n_freqs, frames)
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(power.transpose(-1, -2), self.mel_fb.to(torch.float32))  # (..., frames, n_mels)
        return torch.log10(1.0 + cfg.log_scale * mel) / cfg.norm_divisor


def block_count(frames: int, block_frames: int, hop_frames: int) -> int:
    """Blocks :func:`to_blocks` cuts ``frames`` frames into: 1 if ``frames <= block_frames``, else
    ``ceil((frames - block_frames) / hop_frames) + 1`` (block ``i`` starts at ``i · hop_frames``).
    The same policy cuts waveforms into windows for the transformers audio encoders."""
    if frames <= block_frames:
        return 1
    return math.ceil((frames - block_frames) / hop_frames) + 1


def to_blocks(logmel: Tensor, block_frames: int = 100, hop_frames: int = 50) -> Tensor:
    """Cut a log-mel into the network's fixed-size, overlapping blocks.

    Block ``i`` covers frames ``[i · hop, i · hop + block)``. With ``T`` frames:
    ``n_blocks = 1`` if ``T <= block`` else ``ceil((T - block) / hop) + 1``; frames past ``T``
    are zeros (log-mel of silence). No audio is dropped, and the last block always holds more
    than ``block - hop`` real frames (or all of a short clip).

    Args:
        logmel: (frames, n_mels).
        block_frames: frames per block.
        hop_frames: hop between block starts, 1 <= hop.

    Returns:
        (n_blocks, block_frames, n_mels), same dtype and device.
    """
    if logmel.ndim != 2:
        raise ValueError(f"to_blocks expects (frames, n_mels), got shape {tuple(logmel.shape)}")
    if block_frames < 1 or hop_frames < 1:
        raise ValueError(f"block_frames and hop_frames must be >= 1, got {block_frames}, {hop_frames}")
    frames = logmel.shape[0]
    n_blocks = block_count(frames, block_frames, hop_frames)
    total = (n_blocks - 1) * hop_frames + block_frames
    if total > frames:
        logmel = torch.nn.functional.pad(logmel, (0, 0, 0, total - frames))
    # unfold: (n_blocks, n_mels, block_frames) -> (n_blocks, block_frames, n_mels)
    return logmel.unfold(0, block_frames, hop_frames).transpose(1, 2).contiguous()
