"""Cache of frozen-backbone features, so that training the heads on a CPU takes minutes.

Layout of the cache folder::

    <cache>/audio-<fingerprint>.safetensors   key "<sha256 of file bytes>@<start>+<duration>" → (D_audio,)
    <cache>/text-<fingerprint>.safetensors    key "<sha256 of caption utf-8>" → (D_text,)

The fingerprint digests the tower's config (kind, name, revision, dims, pooling), its front-end
config and its weights, so a changed backbone never reads stale features. A mixture's key
composes its sources' keys and the gain. The files are :class:`atr_demo.fileio.TensorStore` files,
rewritten atomically when they grew; an interrupted run keeps what was last written.

Command: ``python -m training features --config FILE [--set key=value ...]`` caches the audio of
every clip (and the configured mixtures) and the text of every caption of the run's data: the
captions of every configured language (:func:`training.prepare.clip_captions`), the texts training reads.
With ``finetune_blocks: N`` it also fills the block-activation cache (:mod:`training.block_cache`).
A model whose audio features were never cached (fine-tuned top blocks) gets the features of the
clips a matching block cache holds from it (not stored; :func:`audio_features`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from atr_demo.errors import ATRError, AudioError
from atr_demo.fileio import TensorStore, cache_home, file_digest
from atr_demo.model import ATRModel, create_model

from training.block_cache import build_block_cache, features_from_block_cache
from training.config import load_train_config
from training.datasets import Clip, load_clip_audio
from training.prepare import caption_texts, prepare_data

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``<cache home>/features`` (see :func:`atr_demo.fileio.cache_home`)."""
    return cache_home() / "features"


def tower_fingerprint(model: ATRModel, tower: str) -> str:
    """Digest of one tower (``audio`` | ``text``): its config, front-end config and weights."""
    cfg = getattr(model.config, tower).to_dict()
    cfg.pop("trainable", None)
    backbone = getattr(model, f"{tower}_backbone")
    frontend = (
        getattr(backbone, "frontend_config", None)
        or getattr(getattr(backbone, "frontend", None), "config", None)
    )
    payload = {"tower": cfg, "frontend": frontend.to_dict() if frontend is not None else None,
               "sample_rate": getattr(backbone, "sample_rate", None)}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    for key, tensor in sorted(backbone.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class _Digests:
    """Memoised SHA-256 of files."""

    def __init__(self) -> None:
        self.cache: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        if path not in self.cache:
            self.cache[path] = file_digest(path)
        return self.cache[path]


def clip_key(clip: Clip, digest: _Digests, max_duration_s: float | None) -> str:
    """Cache key of a clip's audio: file content, segment and truncation (mixtures: both sources)."""
    if clip.mix_of is not None:
        a, b = (clip_key(c, digest, max_duration_s) for c in clip.mix_of)
        return f"mix({a},{b},{clip.gain_db:.4f})"
    return f"{digest(clip.audio)}@{clip.start_s:.3f}+{clip.duration_s}|{max_duration_s}"


def clip_keys(clips: Sequence[Clip], max_duration_s: float | None) -> list[str]:
    """:func:`clip_key` of every clip (file digests computed once per file)."""
    digest = _Digests()
    return [clip_key(c, digest, max_duration_s) for c in clips]


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def audio_features(
    model: ATRModel,
    clips: Sequence[Clip],
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
    max_duration_s: float | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, list[int]]:
    """Frozen audio-backbone features of ``clips``, from and into the cache.

    Returns:
        (features (n_ok, D_audio) float32 on the CPU, indices of the clips they belong to).
        Clips whose audio cannot be decoded are skipped with a warning.
    """
    folder = Path(cache_dir or default_cache_dir())
    store = TensorStore(folder / f"audio-{tower_fingerprint(model, 'audio')}.safetensors", "feature cache")
    digest = _Digests()
    keys = [clip_key(c, digest, max_duration_s) for c in clips]
    todo = [i for i, k in enumerate(keys) if k not in store]
    bad: set[int] = set()
    was_training = model.training
    model.eval()
    from_blocks: dict[int, torch.Tensor] = {}
    if todo and not store.path.exists():  # a model never cached, e.g. fine-tuned top blocks: from the block cache
        from_blocks = features_from_block_cache(model, [clips[i] for i in todo], [keys[i] for i in todo], folder)
        from_blocks = {todo[j]: f for j, f in from_blocks.items()}  # not stored: float16 maps, not the exact path
        todo = [i for i in todo if i not in from_blocks]
    try:
        bar = tqdm(total=len(todo), desc="audio features", unit="clip", disable=not progress or not todo)
        for start in range(0, len(todo), batch_size):
            chunk, waves = [], []
            for i in todo[start : start + batch_size]:
                try:
                    waves.append(load_clip_audio(clips[i], model.sample_rate, max_duration_s))
                    chunk.append(i)
                except (AudioError, ATRError) as exc:
                    logger.warning("skipping clip %s: %s", clips[i].clip_id, exc)
                    bad.add(i)
            if waves:
                with torch.inference_mode():
                    feats = model.audio_features(waves).float().cpu()
                for i, f in zip(chunk, feats, strict=True):
                    store.put(keys[i], f)
            bar.update(len(todo[start : start + batch_size]))
            if (start // batch_size) % 50 == 49:
                store.save()
        bar.close()
    finally:
        model.train(was_training)
        store.save()
    ok = [i for i in range(len(clips)) if i not in bad]
    if not ok:
        return torch.empty(0, model.audio_backbone.output_dim), ok
    return torch.stack([from_blocks[i] if i in from_blocks else store.get(keys[i]) for i in ok]), ok


def text_features(
    model: ATRModel,
    texts: Sequence[str],
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> torch.Tensor:
    """Frozen text-backbone features (n, D_text) of ``texts``, from and into the cache."""
    folder = Path(cache_dir or default_cache_dir())
    store = TensorStore(folder / f"text-{tower_fingerprint(model, 'text')}.safetensors", "feature cache")
    keys = [text_key(t) for t in texts]
    todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in store}.items())
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(todo), batch_size), desc="text features", unit="batch",
                          disable=not progress or not todo):
            chunk = todo[start : start + batch_size]
            with torch.inference_mode():
                feats = model.text_features([t for _, t in chunk]).float().cpu()
            for (k, _), f in zip(chunk, feats, strict=True):
                store.put(k, f)
    finally:
        model.train(was_training)
        store.save()
    if not keys:
        return torch.empty(0, model.text_backbone.output_dim)
    return torch.stack([store.get(k) for k in keys])


def main(argv: list[str] | None = None) -> int:
    """``features --config FILE [--set k=v ...]``: cache the features a training run needs."""
    parser = argparse.ArgumentParser(prog="python -m training features", description=main.__doc__)
    parser.add_argument("--config", default=None, help="training config (YAML or JSON)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted keys reach into model.*); repeatable")
    args = parser.parse_args(argv)
    try:
        config = load_train_config(args.config, args.overrides)
        model = create_model(config.run_model_config(), seed=config.seed)
        data = prepare_data(config)
        clips = data.train + data.mixture_pool + data.validation + data.test
        feats, ok = audio_features(model, clips, config.features_cache, config.feature_batch_size,
                                   config.max_duration_s, progress=config.progress)
        texts = caption_texts(clips, config.languages, with_labels=config.label_captions > 0)
        text_features(model, texts, config.features_cache, progress=config.progress)
        if config.finetune_blocks:
            ordered = data.train + data.validation + data.test + data.mixture_pool  # the real clips first
            build_block_cache(model, ordered, clip_keys(ordered, config.max_duration_s), config.finetune_blocks,
                              config.features_cache or default_cache_dir(), config.max_duration_s,
                              progress=config.progress)
    except ATRError as exc:
        logger.error("%s", exc)
        return 1
    print(f"cached audio features of {len(ok)}/{len(clips)} clips and text features of {len(texts)} captions "
          f"in {config.features_cache or default_cache_dir()}")
    return 0
