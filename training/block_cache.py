"""Fine-tuning the top conv block(s) of the aiSFX CNN on a CPU, from a cache of the activations
that enter them.

Running the whole CNN forward and backward costs about 1 s per clip on a shared CPU core. The
lower blocks stay frozen, so their output is a function of the clip alone: it is computed once
per clip and kept; each training step runs only the top block(s), the pooling and the heads.

Shapes (aiSFX, 100-frame × 96-mel input blocks, hop 50 frames; :mod:`atr_demo.backbones.aisfx`)::

    clip waveform --log-mel, to_blocks--> (n_blocks, 100, 96)
       --conv blocks 1..4-N (frozen, once)--> cached maps A (n_blocks, C, T', F')
            N = 1: the output of block 3, (n_blocks, 256, 12, 12), 73.7 kB per block in float16
            N = 2: the output of block 2, (n_blocks, 128, 25, 24), 153.6 kB per block
       --top N blocks (trained)--> (n_blocks, 512, 12, 12) --mean over mel, max over time--> (n_blocks, 512)
       --mean over the clip's blocks (the backbone's pooling)--> (512,) clip feature --head--> joint space

Cache layout: ``<cache>/blocks<N>-<fingerprint>/part-*.safetensors``; each part maps
:func:`training.features.clip_key` (file content, segment, truncation; a mixture: its sources and
gain) to A in float16. The fingerprint digests the audio tower's config, its front-end and the
weights of the frozen blocks, so changed lower weights never read stale maps. Parts are written
atomically and only added, so an interrupted build keeps what it wrote. (Not a
:class:`atr_demo.fileio.TensorStore`: that store keeps float32 and rewrites one file on save; this
one holds float16 maps of ~1 GB, read lazily, memory-mapped, key by key.)

Build: ``python -m training features --config FILE --set finetune_blocks=1`` (the clips and the
fixed mixture pool of the config, every split), or on demand by the first training run. The keys
come from the caller (:func:`training.features.clip_keys`), so this module sits below
:mod:`training.features`, which reads the cache for models it never cached.

Augmentation while fine-tuning (the waveform is gone, so only what acts on the maps applies):

* block crop (``block_crop``): k random 100-frame blocks of the clip per step (1: one 2.3 s
  window; the blocks overlap by half, so this is a time shift in steps of 1.16 s);
* SpecAugment-style masks (``block_masks``, ``block_mask_width``): time masks over T' and mel
  masks over F' (one position of block 3's output ≈ 8 frames ≈ 186 ms, or ≈ 8 mel bands), set
  to 0, the post-ReLU value of "no response". Unlike masking the log-mel this is applied after
  three blocks of 3×3 convolutions, whose receptive fields overlap the masked region;
* channel dropout (``block_channel_dropout``): whole channels of A zeroed with probability p,
  the others scaled by 1 / (1 − p).

Not applicable: gain and background noise (the frozen blocks are non-linear, so neither maps to
an operation on A) and fresh mixtures: the mean of two clips' maps is not the map of the mixed
waveform. The fixed pool of waveform mixtures (``mixtures``) is exact: its maps are cached like
any clip's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from atr_demo.backbones.aisfx import CHANNELS, AisfxAudioBackbone, segment_pool
from atr_demo.errors import ATRError, AudioError, ConfigError
from atr_demo.fileio import atomic_write
from atr_demo.model import ATRModel

from training.config import TrainConfig
from training.datasets import Clip, load_clip_audio
from training.pipeline import seed_of

logger = logging.getLogger(__name__)

N_BLOCKS = len(CHANNELS)


def aisfx_backbone(model: ATRModel) -> AisfxAudioBackbone:
    """The model's aiSFX audio backbone, or a ConfigError saying block fine-tuning needs one."""
    backbone = model.audio_backbone
    if not isinstance(backbone, AisfxAudioBackbone):
        raise ConfigError(f"finetune_blocks fine-tunes conv blocks of the aiSFX CNN; the audio tower is "
                          f"{model.config.audio.kind!r}: use model.audio.kind aisfx or finetune_blocks: 0")
    return backbone


def lower_fingerprint(model: ATRModel, top_blocks: int) -> str:
    """Digest of what the cached maps depend on: the audio tower's config (without ``trainable``),
    front-end, sample rate, the split point and the weights of conv blocks 1 .. 4 − ``top_blocks``."""
    backbone = aisfx_backbone(model)
    cfg = model.config.audio.to_dict()
    cfg.pop("trainable", None)
    payload = {"tower": cfg, "frontend": backbone.frontend_config.to_dict(), "sample_rate": backbone.sample_rate,
               "top_blocks": top_blocks}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    for block in backbone.cnn.embedding_net.blocks()[: N_BLOCKS - top_blocks]:
        for key, tensor in sorted(block.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class BlockStore:
    """``clip key → cached maps (n_blocks, C, T', F')`` float16, in append-only part files.

    Reads are lazy (memory-mapped safetensors, one tensor per :meth:`get`); :meth:`put` collects
    maps that :meth:`flush` writes as one new part.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.index: dict[str, Path] = {}
        self.pending: dict[str, Tensor] = {}
        self._handles: dict[Path, object] = {}
        if self.folder.is_dir():
            for part in sorted(self.folder.glob("part-*.safetensors")):
                try:
                    with safe_open(str(part), framework="pt") as f:
                        self.index.update(dict.fromkeys(f.keys(), part))
                except Exception as exc:  # noqa: BLE001 - a damaged part is rebuilt, never fatal
                    logger.warning("ignoring damaged block-cache part %s (%s)", part, exc)

    def __contains__(self, key: object) -> bool:
        return key in self.pending or key in self.index

    def __len__(self) -> int:
        return len(set(self.index) | set(self.pending))

    def get(self, key: str) -> Tensor:
        """The maps stored under ``key`` (float16, CPU)."""
        if key in self.pending:
            return self.pending[key]
        part = self.index[key]
        if part not in self._handles:
            self._handles[part] = safe_open(str(part), framework="pt")
        return self._handles[part].get_tensor(key)  # type: ignore[attr-defined]

    def put(self, key: str, maps: Tensor) -> None:
        self.pending[key] = maps.detach().to("cpu", torch.float16).contiguous()

    def flush(self) -> None:
        """Write the pending maps as one new part (atomically, under a unique name)."""
        if not self.pending:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        part = self.folder / f"part-{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.safetensors"
        entries = dict(self.pending)
        atomic_write(part, lambda p: save_file(entries, str(p)))
        self.index.update(dict.fromkeys(entries, part))
        self.pending = {}


def block_store(model: ATRModel, top_blocks: int, cache_dir: str | Path) -> BlockStore:
    """The store of the maps entering the top ``top_blocks`` blocks of ``model``'s CNN, in ``cache_dir``."""
    return BlockStore(Path(cache_dir) / f"blocks{top_blocks}-{lower_fingerprint(model, top_blocks)}")


@torch.inference_mode()
def lower_maps(model: ATRModel, wave: Tensor, top_blocks: int, chunk: int = 8) -> Tensor:
    """One mono waveform (samples,) → the maps entering the top ``top_blocks`` blocks,
    (n_blocks, C, T', F') float32: front-end, blocks of 100 frames, conv blocks 1 .. 4 − N (eval mode)."""
    backbone = aisfx_backbone(model)
    cnn = backbone.cnn
    dtype = cnn.embedding_net.conv_block1.conv1.weight.dtype
    x = backbone.clip_blocks(wave.to(model.device)).to(dtype).unsqueeze(1)  # (n_blocks, 1, 100, 96)
    was_training = cnn.training
    cnn.eval()
    try:
        parts = [cnn.run_blocks(p, 0, N_BLOCKS - top_blocks).contiguous() for p in x.split(chunk)]
    finally:
        cnn.train(was_training)
    return torch.cat(parts).float()


def build_block_cache(model: ATRModel, clips: Sequence[Clip], keys: Sequence[str], top_blocks: int,
                      cache_dir: str | Path, max_duration_s: float | None = None, progress: bool = True,
                      flush_every: int = 100) -> tuple[BlockStore, list[int]]:
    """Fill the block cache with the maps of ``clips`` (the audio :func:`training.features.audio_features`
    reads: :func:`training.datasets.load_clip_audio` cut at ``max_duration_s``), stored under ``keys``
    (:func:`training.features.clip_keys` of the clips and ``max_duration_s``).

    Returns:
        (the store, indices of the clips it holds). Undecodable clips are skipped with a warning.
    """
    store = block_store(model, top_blocks, cache_dir)
    todo = [i for i, k in enumerate(keys) if k not in store]
    bad: set[int] = set()
    began = time.time()
    try:
        for n, i in enumerate(tqdm(todo, desc="block maps", unit="clip", disable=not progress or not todo), 1):
            try:
                wave = load_clip_audio(clips[i], model.sample_rate, max_duration_s)
            except (AudioError, ATRError) as exc:
                logger.warning("skipping clip %s: %s", clips[i].clip_id, exc)
                bad.add(i)
                continue
            store.put(keys[i], lower_maps(model, wave, top_blocks))
            if n % flush_every == 0:
                store.flush()
    finally:
        store.flush()
    if todo:
        logger.info("block cache %s: %d clips computed in %.1fs (%d in all)", store.folder, len(todo) - len(bad),
                    time.time() - began, len(store))
    return store, [i for i in range(len(clips)) if i not in bad]


def unfreeze_top_blocks(model: ATRModel, top_blocks: int) -> list[str]:
    """Make the top ``top_blocks`` conv blocks trainable (the rest of the audio tower stays frozen);
    return the names of the parameters that now train. Their batch norms keep their running
    statistics (the frozen tower stays in eval mode); scale and shift train."""
    cnn = aisfx_backbone(model).cnn
    names = []
    for i, block in enumerate(cnn.embedding_net.blocks()[N_BLOCKS - top_blocks :], start=N_BLOCKS - top_blocks + 1):
        block.requires_grad_(True)
        names += [f"audio_backbone.cnn.embedding_net.conv_block{i}.{n}" for n, _ in block.named_parameters()]
    return names


def augment_maps(maps: Tensor, config: TrainConfig, generator: torch.Generator) -> Tensor:
    """Block crop, time/mel masks and channel dropout of one clip's maps (n_blocks, C, T', F')
    (see the module docstring); every draw from ``generator``. Returns a new tensor."""
    n = maps.shape[0]
    if config.block_crop and n > config.block_crop:
        start = int(torch.randint(0, n - config.block_crop + 1, (1,), generator=generator))
        maps = maps[start : start + config.block_crop]
    maps = maps.clone()
    frames, bands = maps.shape[-2], maps.shape[-1]
    for size, axis in ((frames, -2), (bands, -1)):
        for _ in range(config.block_masks):
            w = int(torch.randint(0, min(config.block_mask_width, size) + 1, (1,), generator=generator))
            at = int(torch.randint(0, size - w + 1, (1,), generator=generator))
            maps.narrow(axis, at, w).zero_()
    p = config.block_channel_dropout
    if p > 0:
        keep = (torch.rand(maps.shape[1], generator=generator) >= p).to(maps.dtype) / (1.0 - p)
        maps = maps * keep[None, :, None, None]
    return maps


class TopBlockFeatures:
    """Audio features of clips through the trainable top block(s), from the block cache.

    ``features(clips, train)``: with ``train`` (a training step), each clip's maps are augmented
    (:func:`augment_maps`, draws seeded by (seed, the batch's clip ids): the same batch gets the
    same draws after a resumption) and the top blocks run with autograd; otherwise every block of
    every clip runs, in chunks, as the full network would (equal up to the float16 storage of
    the maps). Returns (n, D) clip features (D: the backbone's output_dim) on the model's device.
    """

    def __init__(self, model: ATRModel, config: TrainConfig, clips: Sequence[Clip], keys: Sequence[str],
                 cache_dir: str | Path) -> None:
        self.model, self.config = model, config
        self.top = config.finetune_blocks
        self.store, ok = build_block_cache(model, clips, keys, self.top, cache_dir, config.max_duration_s,
                                           progress=config.progress)
        self.keys = {clips[i].clip_id: keys[i] for i in ok}

    def usable(self, clips: Sequence[Clip]) -> list[Clip]:
        return [c for c in clips if c.clip_id in self.keys]

    def features(self, clips: Sequence[Clip], train: bool) -> Tensor:
        maps = [self.store.get(self.keys[c.clip_id]).float() for c in clips]
        if train:
            generator = torch.Generator().manual_seed(seed_of(self.config.seed, "block-augment",
                                                              *(c.clip_id for c in clips)))
            maps = [augment_maps(m, self.config, generator) for m in maps]
        return top_features(self.model, maps, self.top, chunk=None if train else 64)


def top_features(model: ATRModel, maps: Sequence[Tensor], top_blocks: int, chunk: int | None = None) -> Tensor:
    """Per-clip maps [(n_blocks_i, C, T', F')] → clip features (n, output_dim): the top ``top_blocks``
    conv blocks, the CNN's pooling per block, then the backbone's pooling over each clip's blocks
    (:func:`atr_demo.backbones.aisfx.segment_pool`). ``chunk``: blocks per forward (None: one)."""
    backbone = aisfx_backbone(model)
    cnn = backbone.cnn
    counts = [m.shape[0] for m in maps]
    x = torch.cat(list(maps)).to(model.device, cnn.embedding_net.conv_block4.conv1.weight.dtype)
    parts = x.split(chunk) if chunk else [x]
    emb = torch.cat([cnn.pool(cnn.run_blocks(p, N_BLOCKS - top_blocks, N_BLOCKS)) for p in parts])
    return segment_pool(emb, counts, backbone.pooling)


def features_from_block_cache(model: ATRModel, clips: Sequence[Clip], keys: Sequence[str],
                              cache_dir: str | Path) -> dict[int, Tensor]:
    """Clip features (512,) of the clips whose maps a block cache of ``model``'s own lower blocks
    holds (any split point 1–3 whose fingerprint matches): ``{index in clips: feature}``. This is
    how a model with fine-tuned top blocks is evaluated without running its frozen blocks again."""
    if not isinstance(model.audio_backbone, AisfxAudioBackbone):
        return {}
    folder = Path(cache_dir)
    for top in range(1, N_BLOCKS):
        if not (folder / f"blocks{top}-{lower_fingerprint(model, top)}").is_dir():
            continue
        store = block_store(model, top, folder)
        found = [i for i, k in enumerate(keys) if k in store]
        out: dict[int, Tensor] = {}
        with torch.inference_mode():
            for start in range(0, len(found), 16):
                idx = found[start : start + 16]
                feats = top_features(model, [store.get(keys[i]).float() for i in idx], top, chunk=64)
                out.update(zip(idx, feats.float().cpu(), strict=True))
        if out:
            logger.info("%d of %d clips' features from the block cache %s", len(out), len(clips), store.folder)
        return out
    return {}
