"""Audio backbones other than aiSFX: any transformers audio encoder, and a tiny debug CNN.

An audio backbone has ``sample_rate`` and ``output_dim`` attributes and maps a list of mono
waveforms (each ``(samples,)`` float32 at ``sample_rate``) to a ``(N, output_dim)`` tensor.
"""

from __future__ import annotations

import torch
from torch import nn

from atr_demo.audio import FrontendConfig, LogMelFrontend
from atr_demo.errors import CheckpointError


class HFAudioBackbone(nn.Module):
    """A transformers audio encoder (AST, wav2vec 2.0, HuBERT, Whisper encoder, CLAP audio…).

    The feature extractor saved with the model turns waveforms into model inputs; the clip
    embedding is the model's ``pooler_output`` when it has one, otherwise the mean of
    ``last_hidden_state`` over time.

    Args:
        name: hub id or local directory holding the feature extractor and the model.
        revision: hub revision to pin.
        pretrained: load pretrained weights (``False``: architecture from config, random weights).
    """

    def __init__(self, name: str, revision: str | None = None, pretrained: bool = True) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        try:
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(name, revision=revision)
            if pretrained:
                self.encoder = AutoModel.from_pretrained(name, revision=revision)
            else:
                self.encoder = AutoModel.from_config(AutoConfig.from_pretrained(name, revision=revision))
        except OSError as exc:
            raise CheckpointError(
                f"cannot load the audio backbone {name!r}: {exc}. Give a local directory, a hub id "
                "that is cached, or go online"
            ) from exc
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        config = self.encoder.config
        self.output_dim = int(getattr(config, "hidden_size", None) or config.d_model)

    def forward(self, waveforms: list[torch.Tensor]) -> torch.Tensor:
        """Encode mono waveforms at ``sample_rate`` → (N, output_dim)."""
        device = next(self.encoder.parameters()).device
        arrays = [w.detach().cpu().float().numpy() for w in waveforms]
        inputs = self.feature_extractor(
            arrays, sampling_rate=self.sample_rate, return_tensors="pt", padding=True
        )
        inputs = {k: v.to(device) for k, v in inputs.items()}
        out = self.encoder(**inputs)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None and pooled.dim() == 2:
            return pooled
        return out.last_hidden_state.mean(dim=1)


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
