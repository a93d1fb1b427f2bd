"""Audio backbones other than aiSFX: any transformers audio encoder, and a tiny debug CNN.

An audio backbone has ``sample_rate`` and ``output_dim`` attributes and maps a list of mono
waveforms (each ``(samples,)`` float32 at ``sample_rate``) to a ``(N, output_dim)`` tensor.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atr_demo.audio import FrontendConfig, LogMelFrontend, block_count
from atr_demo.backbones.aisfx import segment_pool
from atr_demo.backbones.hub import load_error, pin_source

logger = logging.getLogger(__name__)

#: Windows the encoder runs on at once in eval mode (training mode runs all in one batch).
MAX_WINDOWS_PER_BATCH = 32


def window_samples(feature_extractor: Any) -> int | None:
    """The longest input (samples) ``feature_extractor`` keeps; ``None`` when it keeps any length.

    * CLAP (``nb_max_samples``: 10 s at 48 kHz for the HTSAT models);
    * Whisper (``n_samples``: 30 s at 16 kHz);
    * AST (``max_length`` fbank frames of 25 ms every 10 ms: ``(max_length − 1) · hop + window``
      samples, 1024 frames = 164 080 samples ≈ 10.25 s at 16 kHz);
    * others (wav2vec 2.0, HuBERT…): ``None``.
    """
    if getattr(feature_extractor, "nb_max_samples", None):
        return int(feature_extractor.nb_max_samples)
    if getattr(feature_extractor, "n_samples", None):
        return int(feature_extractor.n_samples)
    if type(feature_extractor).__name__ == "ASTFeatureExtractor":
        rate = int(feature_extractor.sampling_rate)
        hop, win = rate * 10 // 1000, rate * 25 // 1000
        return (int(feature_extractor.max_length) - 1) * hop + win
    return None


def waveform_windows(wave: torch.Tensor, window: int | None) -> list[torch.Tensor]:
    """Cut a mono waveform (samples,) into windows of ``window`` samples, hop ``window // 2``.

    The aiSFX blocks' policy (:func:`atr_demo.audio.block_count`): one window when the clip is no
    longer than ``window``, else ``ceil((samples − window) / hop) + 1`` windows starting every
    ``hop`` samples. No audio is dropped; the last window is cut short (not zero-padded) so that
    the feature extractor pads it its own way, as it pads a short clip. ``window=None``: the
    whole clip.
    """
    if window is None or wave.shape[-1] <= window:
        return [wave]
    hop = max(1, window // 2)
    return [wave[i * hop : i * hop + window] for i in range(block_count(wave.shape[-1], window, hop))]


def _build_encoder(source: str, revision: str | None, pretrained: bool) -> nn.Module:
    """The audio encoder at ``source``: a CLAP checkpoint's audio tower (HTSAT), or ``AutoModel``.

    CLAP checkpoints (``laion/clap-htsat-unfused``…) hold both towers; their audio tower is
    loaded through the whole model, since ``ClapAudioModel.from_pretrained`` on them leaves every
    weight random (transformers 5 matches no key). A stored tower's config is the audio tower's
    own (``clap_audio_model``).
    """
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(source, revision=revision)
    if config.model_type == "clap":
        from transformers import ClapAudioModel, ClapModel

        if pretrained:
            return ClapModel.from_pretrained(source, revision=revision).audio_model
        return ClapAudioModel(config.audio_config)
    if config.model_type == "clap_audio_model":
        from transformers import ClapAudioModel

        if pretrained:
            return ClapAudioModel.from_pretrained(source, revision=revision)
        return ClapAudioModel(config)
    if pretrained:
        return AutoModel.from_pretrained(source, revision=revision)
    return AutoModel.from_config(config)


class HFAudioBackbone(nn.Module):
    """A transformers audio encoder (AST, CLAP's HTSAT, wav2vec 2.0, HuBERT…).

    A clip longer than the feature extractor's input (:func:`window_samples`: ≈10 s for AST and
    CLAP) is cut into windows with 50 % overlap (:func:`waveform_windows`, the aiSFX blocks'
    policy); every window of every clip goes through the encoder (in eval mode
    ``max_windows_per_batch`` at a time), and a clip's embedding is the mean of its windows'
    (:func:`atr_demo.backbones.aisfx.segment_pool`), so all of a long clip counts. A window's
    embedding is the model's ``pooler_output`` when it has one, otherwise the mean of
    ``last_hidden_state`` over time.

    Args:
        name: hub id or local directory holding the feature extractor and the model.
        revision: hub revision to pin.
        pretrained: load pretrained weights (``False``: architecture from config, random weights).
    """

    def __init__(self, name: str, revision: str | None = None, pretrained: bool = True) -> None:
        super().__init__()
        from transformers import AutoFeatureExtractor

        try:
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(name, revision=revision)
            self.encoder = _build_encoder(name, revision, pretrained)
        except OSError as exc:
            raise load_error("audio", name, exc) from exc
        self.name, self.revision = name, revision
        self._pin: tuple[str | None, str | None] | None = None
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.window = window_samples(self.feature_extractor)
        self.max_windows_per_batch = MAX_WINDOWS_PER_BATCH
        config = self.encoder.config
        self.output_dim = int(getattr(config, "hidden_size", None) or config.d_model)

    def source_pin(self) -> tuple[str | None, str | None]:
        """``(revision, source_digest)`` of the files this tower was built from (:func:`pin_source`;
        computed once: a digest reads every file of a local folder)."""
        if self._pin is None:
            self._pin = pin_source(self.name, self.name, self.revision)
        return self._pin

    def save_files(self, directory: str | Path) -> None:
        """Write the encoder's transformers config and the feature extractor into ``directory``
        (the weights live in the checkpoint's ``model.safetensors``)."""
        self.feature_extractor.save_pretrained(str(directory))
        self.encoder.config.save_pretrained(str(directory))

    def _encode(self, windows: list[torch.Tensor]) -> torch.Tensor:
        """Windows (each ≤ ``window`` samples) → (n_windows, output_dim)."""
        device = next(self.encoder.parameters()).device
        arrays = [w.detach().cpu().float().numpy() for w in windows]
        # an extractor with its own padding mode (CLAP: "repeatpad") keeps it; others pad with zeros
        padding = {} if isinstance(getattr(self.feature_extractor, "padding", None), str) else {"padding": True}
        inputs = self.feature_extractor(arrays, sampling_rate=self.sample_rate, return_tensors="pt", **padding)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        out = self.encoder(**inputs)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None and pooled.dim() == 2:
            return pooled
        return out.last_hidden_state.mean(dim=1)

    def forward(self, waveforms: list[torch.Tensor]) -> torch.Tensor:
        """Encode mono waveforms at ``sample_rate`` → (N, output_dim), long clips window by window."""
        if len(waveforms) == 0:
            raise ValueError("HFAudioBackbone needs at least one waveform")
        per_clip = [waveform_windows(w, self.window) for w in waveforms]
        windows = [w for clip in per_clip for w in clip]
        step = self.max_windows_per_batch
        if self.training or len(windows) <= step:
            emb = self._encode(windows)
        else:
            emb = torch.cat([self._encode(windows[i : i + step]) for i in range(0, len(windows), step)])
        counts = [len(clip) for clip in per_clip]
        if max(counts) == 1:
            return emb
        return segment_pool(emb, counts, "mean")


#: Front-end of the tiny debug backbone: 16 kHz, 32 mel bands, 0.5 s blocks.
TINY_FRONTEND = FrontendConfig(
    sample_rate=16000, n_fft=512, hop_length=256, n_mels=32, f_min=0.0, f_max=8000.0,
    block_frames=32, block_hop_frames=16,
)


class TinyAudioBackbone(nn.Module):
    """A two-layer 1-D CNN over a small log-mel, for fast tests (random weights, 16 kHz).

    wave (samples,) → log-mel (frames, 32) → Conv1d(32→dim)·ReLU·Conv1d(dim→dim) → mean over
    time → (dim,). Deterministic; any clip length ≥ 1 sample.
    """

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.frontend = LogMelFrontend(TINY_FRONTEND)
        self.sample_rate = TINY_FRONTEND.sample_rate
        self.output_dim = dim
        self.net = nn.Sequential(
            nn.Conv1d(TINY_FRONTEND.n_mels, dim, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv1d(dim, dim, kernel_size=3, padding=1),
        )

    def forward(self, waveforms: list[torch.Tensor]) -> torch.Tensor:
        """Encode mono 16 kHz waveforms → (N, dim)."""
        device = next(self.net.parameters()).device
        outs = []
        for wave in waveforms:
            mel = self.frontend(wave.to(device))  # (frames, n_mels)
            outs.append(self.net(mel.T.unsqueeze(0)).mean(dim=-1).squeeze(0))
        return torch.stack(outs)
