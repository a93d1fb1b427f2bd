"""The training input pipeline: which pairs an epoch trains on, in which batches, and how their
audio gets from the files to the model.

::

    clips of the epoch --compose_epoch--> batches of (clip, caption) pairs    (seed, epoch)
          --EpochBatchSampler--> one batch of Items at a time, from a saved position
          --DataLoader(ClipAudioDataset, num_workers)--> decode + crop + resample in workers
          --collate--> Batch (waves, captions, clips; optional mixup) --pin--> the device

* **Composition** (:func:`compose_epoch`): ``captions_per_epoch: one`` draws one caption per clip
  (the anchor language's), ``all`` makes every caption its own pair (Clotho: 5 pairs per clip);
  with ``batching: group`` no batch holds two pairs sharing a recording group or a normalised
  caption in any language (:func:`training.batching.group_batches`). The draw is a function of
  (seed, epoch) alone, so runs and resumptions see the same batches.
* **Sampler** (:class:`EpochBatchSampler`): yields the epoch's batches from a position;
  ``state_dict()`` / ``load_state_dict()`` save and restore (epoch, next batch), so a run can stop
  and resume mid-epoch. The position counts the batches *handed to the training loop* (the
  DataLoader prefetches ahead; :meth:`PairLoader.epoch` advances it as batches come out).
* **Decoding** (:func:`load_clip_window`): only the part of a file that is used is decoded
  (:func:`atr_demo.decoding.decode_window`): at most ``max_duration_s`` seconds of a clip's
  segment, from its start (``train_crop: head``, and always at validation) or from a random
  offset drawn from (seed, epoch, pair index) (``train_crop: random``). Evaluation chunks the
  whole kept waveform exactly as the library embeds a clip: the model's audio backbone does it
  (``ATRModel.audio_features``); nothing here cuts blocks.
* **Workers**: decoding and resampling run in ``num_workers`` DataLoader processes
  (``persistent_workers``, ``prefetch_factor``; pinned memory and non-blocking copies on CUDA).
  Batches are the same for any number of workers (every random choice is seeded per item/batch).
* **Augmentation**: waveform mixup in the collate step (:class:`Collate`, ``mixup_alpha``) and
  SpecAugment masks on the log-mel front-end's output (:func:`spec_augmented`).
* **Bad audio**: a clip that cannot be decoded stops the run with one
  :class:`~atr_demo.errors.AudioDecodeError` naming the clip, its file and the decoder's reason
  (a worker records the error; the main process raises it), so a broken file is never silently
  trained around. The cached-feature path (``training/features.py``) skips such clips with a
  warning before training starts instead.

The cached-feature path draws its batches from the same sampler (no workers: it only looks up
rows), so its batches are those of the original loop, bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from atr_demo.audio import LogMelFrontend, prepare_waveform
from atr_demo.decoding import audio_duration, decode_window
from atr_demo.errors import ATRError, AudioDecodeError, ConfigError

from training.batching import caption_key, group_batches
from training.config import TrainConfig
from training.datasets import Clip, label_captions, language_captions, mix_waveforms
from training.sampling import data_weights, epoch_items


def epoch_rng(seed: int, epoch: int, purpose: str) -> random.Random:
    """A random source that depends only on (seed, epoch, purpose)."""
    return random.Random(f"{seed}:{epoch}:{purpose}")


def seed_of(*parts: object) -> int:
    """A 63-bit seed from any parts (``seed_of(seed, epoch, batch, "mixup")``), stable across runs
    and processes (unlike ``hash``)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# -- composition -----------------------------------------------------------------------------

def language_keys(clip: Clip, languages: Sequence[str]) -> set[str]:
    """:func:`caption_key` of a clip's captions in every language, so that two clips sharing a
    caption in any language ("A duck." / "A drake." are both "Un canard.") never share a batch."""
    return {caption_key(t) for lang in languages for t in language_captions(clip, lang)}


def compose_epoch(clips: Sequence[Clip], config: TrainConfig, epoch: int) -> list[list[tuple[Clip, str]]]:
    """This epoch's batches of (clip, caption) pairs, a function of (seed, epoch).

    ``captions_per_epoch: one``: one caption per clip, drawn from the anchor language's captions
    (the first of ``languages``, or ``captions``); ``all``: every such caption is a pair. With
    dataset weights in ``config.data`` the pairs are then drawn by
    :func:`training.sampling.epoch_items` (a mixture counts for its first source's dataset). With
    ``batching: group`` the keys of a pair are its recording group, its caption and the clip's
    captions in every language; otherwise every pair is its own key.
    """
    rng = epoch_rng(config.seed, epoch, "batches")
    anchor = config.languages[0] if config.languages else None

    def anchor_captions(c: Clip) -> list[str]:
        return language_captions(c, anchor) if anchor else c.captions

    if config.captions_per_epoch == "all":
        pairs = [(c, t) for c in clips for t in anchor_captions(c)]
    else:
        pairs = [(c, rng.choice(anchor_captions(c))) for c in clips]
    if config.label_captions > 0:  # draws only when on: runs without it keep their batches
        pairs = [(c, rng.choice(labels)) if (labels := label_captions(c)) and rng.random() < config.label_captions
                 else (c, t) for c, t in pairs]
    weights = data_weights(config.data)
    if weights is not None:
        keys_of = [c.dataset or (c.mix_of[0].dataset if c.mix_of else "") for c, _ in pairs]
        pairs = [pairs[i] for i in epoch_items(keys_of, weights, config.seed, epoch)]
    if config.batching == "group":
        keys = [{"grp:" + c.group, caption_key(t)} | language_keys(c, config.languages) for c, t in pairs]
    else:
        keys = [{f"item:{i}"} for i in range(len(pairs))]
    return [[pairs[i] for i in batch] for batch in group_batches(keys, config.batch_size, rng)]


# -- sampler ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One pair of a batch, as sent to a worker: the clip, its caption for this epoch and where
    it sits (epoch, batch index, pair index within the epoch: the crop's seed)."""

    clip: Clip
    caption: str
    epoch: int
    batch: int
    index: int


class EpochBatchSampler(Sampler[list[Item]]):
    """The batches of each epoch (:func:`compose_epoch`), resumable mid-epoch.

    Args:
        clips_for_epoch: the clips of an epoch (the training clips, plus that epoch's mixtures or
            a weighted draw over several datasets).
        config: the run's config (seed, batch size, batching, captions_per_epoch, languages).
        num_replicas, rank: with ``num_replicas > 1`` each global batch is trimmed to a multiple
            of ``num_replicas`` and rank ``r`` gets the ``r``-th contiguous shard, so the
            batching constraints hold on the global batch (batches left with fewer than 2 pairs
            are skipped on every rank alike).

    Iterating yields the batches of :attr:`epoch` from :attr:`position` on; :meth:`set_epoch`
    starts an epoch at batch 0 unless :meth:`load_state_dict` restored a position in it.
    """

    def __init__(self, clips_for_epoch: Callable[[int], Sequence[Clip]], config: TrainConfig,
                 num_replicas: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas), got {rank} of {num_replicas}")
        self.clips_for_epoch, self.config = clips_for_epoch, config
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.position = 1, 0
        self._restored: tuple[int, int] | None = None
        self._cache: tuple[int, list[list[tuple[Clip, str]]]] | None = None

    def batches(self, epoch: int) -> list[list[tuple[Clip, str]]]:
        """The global batches of ``epoch`` (memoised for the last epoch asked)."""
        if self._cache is None or self._cache[0] != epoch:
            batches = compose_epoch(self.clips_for_epoch(epoch), self.config, epoch)
            if self.num_replicas > 1:
                batches = [b[: len(b) - len(b) % self.num_replicas] for b in batches]
                batches = [b for b in batches if len(b) >= 2]
            self._cache = (epoch, batches)
        return self._cache[1]

    def set_epoch(self, epoch: int) -> None:
        """Make ``epoch`` current, at its first batch (or at the restored position in it)."""
        self.epoch = epoch
        restored, self._restored = self._restored, None
        self.position = restored[1] if restored is not None and restored[0] == epoch else 0

    def __len__(self) -> int:
        return max(0, len(self.batches(self.epoch)) - self.position)

    def __iter__(self) -> Iterator[list[Item]]:
        epoch, batches = self.epoch, self.batches(self.epoch)
        offsets = [0]
        for b in batches:
            offsets.append(offsets[-1] + len(b))
        for index in range(self.position, len(batches)):
            batch = batches[index]
            lo, hi = 0, len(batch)
            if self.num_replicas > 1:
                width = len(batch) // self.num_replicas
                lo, hi = self.rank * width, (self.rank + 1) * width
            yield [Item(clip, caption, epoch, index, offsets[index] + j)
                   for j, (clip, caption) in enumerate(batch[lo:hi], start=lo)]

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batch"}``: the current epoch and the index of its next batch."""
        return {"epoch": self.epoch, "batch": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at ``state``: the next :meth:`set_epoch` of that epoch starts at its batch."""
        self.epoch, self.position = int(state["epoch"]), int(state["batch"])
        self._restored = (self.epoch, self.position)


# -- decoding --------------------------------------------------------------------------------

def load_clip_window(clip: Clip, sample_rate: int, max_duration_s: float,
                     crop_rng: random.Random | None = None,
                     durations: dict[str, float | None] | None = None) -> torch.Tensor:
    """Mono waveform (samples,) at ``sample_rate`` of at most ``max_duration_s`` seconds of a
    clip's segment, decoding no more of the file than that.

    Without ``crop_rng`` the window starts at the segment's start (what training kept before the
    pipeline existed: the first ``max_duration_s`` seconds). With it, a segment longer than
    ``max_duration_s`` is cropped at an offset drawn uniformly from [0, length − max_duration_s]
    (the length from the file's header: exact for wav/flac/ogg, FFmpeg's estimate otherwise). A
    mixture loads both sources this way (one ``crop_rng`` draw each) and mixes them
    (:func:`training.datasets.mix_waveforms`). ``durations`` memoises the header lengths by path.

    Unlike :func:`training.datasets.load_clip_audio` (whole-file decode, then cut; the feature
    cache's keys and stored results rest on it), the cut happens before resampling, so samples
    within a few filter lengths of a cut can differ from it (identical when nothing is cut or
    no resampling is needed).
    """
    if clip.mix_of is not None:
        a = load_clip_window(clip.mix_of[0], sample_rate, max_duration_s, crop_rng, durations)
        b = load_clip_window(clip.mix_of[1], sample_rate, max_duration_s, crop_rng, durations)
        return mix_waveforms(a, b, clip.gain_db)
    offset = 0.0
    if crop_rng is not None:
        length = clip.duration_s
        if length is None:
            if durations is None:
                durations = {}
            if clip.audio not in durations:
                durations[clip.audio] = audio_duration(clip.audio)
            total = durations[clip.audio]
            length = None if total is None else total - clip.start_s
        if length is not None and length > max_duration_s:
            offset = crop_rng.uniform(0.0, length - max_duration_s)
    duration = max_duration_s if clip.duration_s is None else min(max_duration_s, clip.duration_s - offset)
    samples, rate = decode_window(clip.audio, clip.start_s + offset, duration)
    return prepare_waveform(samples, rate, sample_rate, max_duration_s=None)


@dataclass
class Loaded:
    """A decoded item (``wave``), or the one-line reason it could not be decoded (``error``)."""

    item: Item
    wave: torch.Tensor | None
    error: str | None = None


class ClipAudioDataset(Dataset[Loaded]):
    """Decodes the :class:`Item` it is indexed with (in a DataLoader worker when there are any).

    Args:
        sample_rate: the audio backbone's rate.
        max_duration_s: longest window kept per clip.
        crop: ``head`` (the first ``max_duration_s`` seconds) or ``random`` (seeded by
            (seed, epoch, pair index): reproducible, and the same after a resumption).
        seed: the run's seed.
    """

    def __init__(self, sample_rate: int, max_duration_s: float, crop: str = "head", seed: int = 0) -> None:
        self.sample_rate, self.max_duration_s, self.crop, self.seed = sample_rate, max_duration_s, crop, seed
        self.durations: dict[str, float | None] = {}  # header lengths, per worker process

    def __getitem__(self, item: Item) -> Loaded:  # type: ignore[override]
        rng = random.Random(seed_of(self.seed, item.epoch, item.index, "crop")) if self.crop == "random" else None
        try:
            wave = load_clip_window(item.clip, self.sample_rate, self.max_duration_s, rng, self.durations)
            return Loaded(item, wave)
        except ATRError as exc:
            return Loaded(item, None, str(exc))


@dataclass
class Batch:
    """One batch as the training loop gets it.

    Attributes:
        epoch, index: which batch of which epoch.
        clips, captions: the pairs.
        waves: the decoded mono waveforms (``None`` on the cached-feature path).
    """

    epoch: int
    index: int
    clips: list[Clip]
    captions: list[str]
    waves: list[torch.Tensor] | None = None
    errors: list[tuple[Clip, str]] = field(default_factory=list)

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread (``pin_memory=True``)."""
        if self.waves is None:
            return self
        return replace(self, waves=[w.pin_memory() for w in self.waves])

    def to(self, device: torch.device) -> Batch:
        """The waves on ``device`` (non-blocking copies from pinned memory)."""
        if self.waves is None:
            return self
        return replace(self, waves=[w.to(device, non_blocking=True) for w in self.waves])

    def raise_errors(self) -> None:
        """One AudioDecodeError for the batch's first undecodable clip (the others are counted)."""
        if not self.errors:
            return
        clip, reason = self.errors[0]
        more = f" ({len(self.errors) - 1} more in this batch)" if len(self.errors) > 1 else ""
        raise AudioDecodeError(
            f"training clip {clip.clip_id!r} ({clip.audio}) cannot be used: {reason}{more}. Replace or "
            "remove the file (or drop the clip from the dataset) and resume with --resume"
        )


class Collate:
    """Items → :class:`Batch`, with optional waveform mixup.

    Mixup (``mixup_alpha > 0``): for item ``i`` with partner ``π(i)`` (a random permutation of the
    batch) and ``λ = max(u, 1 − u)``, ``u ~ Beta(α, α)``, the waveform becomes
    ``λ · w_i + (1 − λ) · w_π(i)`` (the partner cut or zero-padded to ``len(w_i)``); the caption
    stays item ``i``'s, which dominates the mix (λ ≥ ½). Drawn from (seed, epoch, batch index),
    so it is the same for any number of workers.
    """

    def __init__(self, seed: int = 0, mixup_alpha: float = 0.0) -> None:
        self.seed, self.mixup_alpha = seed, mixup_alpha

    def __call__(self, loaded: list[Loaded]) -> Batch:
        first = loaded[0].item
        batch = Batch(first.epoch, first.batch, [x.item.clip for x in loaded], [x.item.caption for x in loaded],
                      [x.wave for x in loaded if x.wave is not None],
                      [(x.item.clip, x.error) for x in loaded if x.error is not None])
        if self.mixup_alpha > 0 and not batch.errors and len(batch.waves or []) > 1:
            seed = seed_of(self.seed, first.epoch, first.batch, "mixup")
            batch.waves = mixup(batch.waves or [], self.mixup_alpha, seed)
        return batch


def mixup(waves: Sequence[torch.Tensor], alpha: float, seed: int) -> list[torch.Tensor]:
    """Waveform mixup of a batch (see :class:`Collate`); deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(waves))
    u = rng.beta(alpha, alpha, size=len(waves))
    out = []
    for i, w in enumerate(waves):
        lam = float(max(u[i], 1.0 - u[i]))
        partner = waves[int(perm[i])][: len(w)]
        mixed = lam * w
        mixed[: len(partner)] += (1.0 - lam) * partner
        out.append(mixed)
    return out


# -- loaders ---------------------------------------------------------------------------------

def make_loader(dataset: ClipAudioDataset, batch_sampler: Sampler[list[Item]], config: TrainConfig,
                device: torch.device, collate: Collate) -> DataLoader:
    """A DataLoader with the run's worker settings. Its own seeded generator keeps it from
    drawing on the global torch RNG (so adding the pipeline moves no other random stream)."""
    workers = config.num_workers
    return DataLoader(
        dataset, batch_sampler=batch_sampler, collate_fn=collate, num_workers=workers,
        pin_memory=config.pin_memory and device.type == "cuda",
        persistent_workers=config.persistent_workers and workers > 0,
        prefetch_factor=config.prefetch_factor if workers > 0 else None,
        generator=torch.Generator().manual_seed(config.seed),
    )


class PairLoader:
    """The training batches of every epoch.

    With ``decode`` (raw-audio training) a DataLoader decodes the sampler's batches in workers;
    without (cached features) the sampler's batches are handed out as they are (``waves`` None).

    Args:
        sampler: the run's :class:`EpochBatchSampler` (its position advances as batches come out).
        config: worker, crop and mixup settings.
        sample_rate: the audio backbone's rate.
        device: where the waves go (non-blocking copies from pinned memory on CUDA).
        decode: decode the audio (False on the cached-feature path).
    """

    def __init__(self, sampler: EpochBatchSampler, config: TrainConfig, sample_rate: int,
                 device: torch.device, decode: bool) -> None:
        self.sampler, self.device = sampler, device
        self.loader: DataLoader | None = None
        if decode:
            dataset = ClipAudioDataset(sample_rate, config.max_duration_s, config.train_crop, config.seed)
            self.loader = make_loader(dataset, sampler, config, device, Collate(config.seed, config.mixup_alpha))

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of ``epoch`` from the sampler's position (0, or a restored one) on."""
        self.sampler.set_epoch(epoch)
        if self.loader is None:
            for items in self.sampler:
                self.sampler.position = items[0].batch + 1
                yield Batch(epoch, items[0].batch, [x.clip for x in items], [x.caption for x in items])
            return
        for batch in self.loader:
            batch.raise_errors()
            self.sampler.position = batch.index + 1
            yield batch.to(self.device)


class _FixedBatches(Sampler[list[Item]]):
    def __init__(self, batches: list[list[Item]]) -> None:
        self.fixed = batches

    def __len__(self) -> int:
        return len(self.fixed)

    def __iter__(self) -> Iterator[list[Item]]:
        return iter(self.fixed)


class ClipLoader:
    """The audio of a fixed list of clips, in order and in batches (validation): the first
    ``max_duration_s`` seconds of each, decoded in the run's workers, no augmentation.

    Iterating yields :class:`Batch` objects (``captions`` empty)."""

    def __init__(self, clips: Sequence[Clip], batch_size: int, config: TrainConfig, sample_rate: int,
                 device: torch.device) -> None:
        self.device = device
        batches = [[Item(c, "", 0, b, start + j) for j, c in enumerate(clips[start : start + batch_size])]
                   for b, start in enumerate(range(0, len(clips), batch_size))]
        dataset = ClipAudioDataset(sample_rate, config.max_duration_s, "head", config.seed)
        self.loader = make_loader(dataset, _FixedBatches(batches), config, device, Collate())

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            batch.raise_errors()
            yield batch.to(self.device)


# -- SpecAugment -----------------------------------------------------------------------------

class SpecAugment(nn.Module):
    """A log-mel front-end followed by SpecAugment masks (Park et al., 2019), for training.

    On the front-end's output ``X`` (..., frames T, mel bands F): ``masks`` frequency masks, each
    of a width ``f ~ U{0..freq_width}`` at ``f0 ~ U{0..F − f}``, and ``masks`` time masks of width
    ``t ~ U{0..min(time_width, T)}`` at ``t0 ~ U{0..T − t}``, set to 0 — the value of silence in
    this feature space (``log10(1 + s · 0) = 0``). Every draw comes from ``generator``.
    """

    def __init__(self, frontend: nn.Module, masks: int, freq_width: int, time_width: int,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.frontend = frontend
        self.masks, self.freq_width, self.time_width, self.generator = masks, freq_width, time_width, generator

    def num_frames(self, num_samples: int) -> int:
        return self.frontend.num_frames(num_samples)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mel = self.frontend(wave).clone()
        frames, bands = mel.shape[-2], mel.shape[-1]
        for size, width, axis in ((bands, self.freq_width, -1), (frames, self.time_width, -2)):
            for _ in range(self.masks):
                w = int(torch.randint(0, min(width, size) + 1, (1,), generator=self.generator))
                at = int(torch.randint(0, size - w + 1, (1,), generator=self.generator))
                mel.narrow(axis, at, w).zero_()
        return mel


@contextlib.contextmanager
def spec_augmented(backbone: nn.Module, config: TrainConfig, seed: int) -> Iterator[None]:
    """Within the block, ``backbone``'s log-mel front-end output is masked (:class:`SpecAugment`,
    masks drawn from ``seed``) when ``config.spec_augment`` is on; a no-op otherwise."""
    if not config.spec_augment:
        yield
        return
    frontend = backbone.frontend
    backbone.frontend = SpecAugment(frontend, config.spec_masks, config.spec_freq_width, config.spec_time_width,
                                    torch.Generator().manual_seed(seed))
    try:
        yield
    finally:
        backbone.frontend = frontend


def check_pipeline_options(config: TrainConfig, model: nn.Module) -> None:
    """Refuse options the model cannot honour (SpecAugment needs a log-mel front-end)."""
    if config.spec_augment and not isinstance(getattr(model.audio_backbone, "frontend", None), LogMelFrontend):
        raise ConfigError(
            f"spec_augment masks a log-mel front-end, which the {model.config.audio.kind} audio backbone does not "
            "have (aisfx and tiny_audio do); set spec_augment: false"
        )
