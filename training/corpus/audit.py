"""Caption audit of the corpus: flag clips whose caption disagrees with their audio neighbours.

``python -m training audit-captions --corpus DIR --out FILE.md [--config FILE] [--k 10] [--fraction 0.1]``

The corpus captions were written from file names and credits, without listening. This command
asks the frozen backbones whether the sound and its caption fit the rest of the corpus:

* audio side: the frozen aiSFX features of every clip (the feature cache of ``--config``,
  :func:`training.features.audio_features`), centred on the corpus mean and L2-normalised,
  ``x_i`` (D_audio,);
* text side: per clip, ``t_i`` = normalize(mean of the L2-normalised frozen MiniLM features of its
  captions) (:func:`training.features.text_features`, :func:`training.analysis.structure.owner_means`).

With S^A = X Xᵀ and S^T = T Tᵀ (n, n) and the mask M_ij = 1 when clips i and j belong to different
recording groups (cuts of one recording never count as each other's neighbours):

* N_A(i): the k clips j with M_ij = 1 of largest S^A_ij (the clip's audio neighbours);
* N_T(i): the k clips j with M_ij = 1 of largest S^T_ij (its caption's caption neighbours);
* a_i = mean_{j ∈ N_A(i)} S^T_ij — how well the captions of the clip's audio neighbours agree
  with its caption;
* r_i = mean_{j ∈ N_T(i)} S^T_ij — the most a_i can be (the caption's own nearest captions);
* b_i = mean_{j : M_ij = 1} S^T_ij — chance (the caption against every other clip's caption);
* **score** s_i = (a_i − b_i) / max(r_i − b_i, 1e-6): 1 when the audio neighbours are captioned
  as closely as the caption's nearest captions, 0 at chance, below 0 worse than chance;
* overlap o_i = |N_A(i) ∩ N_T(i)| / k, reported beside it.

The normalisation by b_i and r_i makes scores comparable between captions with many close
captions in the corpus (footsteps) and rare ones. Silent clips (:func:`silent_indices`) are left
out of the scoring (neighbours included) and listed apart; of the others, the
``ceil(fraction · n)`` of lowest score are flagged (ties broken by clip id). Neighbours are
ordered by similarity, then by index, and all numbers are printed rounded, so the report is
deterministic for a given corpus and cache.

For the review the report lists each flagged clip's caption, original name, package, the
caption-table row it came from, simple audio statistics (:func:`audio_stats`) and its audio
neighbours' captions. The review itself (what was changed and why) is in ``training/corpus/audit.md``.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from atr_demo.audio import load_audio
from atr_demo.errors import ATRError, ConfigError
from atr_demo.fileio import atomic_write_text, markdown_table
from atr_demo.model import create_model

from training.analysis.structure import owner_means
from training.config import load_train_config
from training.corpus import audio as corpus_audio
from training.corpus.captions import load_rules
from training.datasets import Clip, load_corpus_manifest
from training.features import audio_features, text_features

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = "configs/bundled.yaml"
STATS_SAMPLE_RATE = 22050
_BARS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class AuditScores:
    """Per-clip audit numbers (all (n,) tensors) and the neighbour lists (n, k) of both spaces."""

    score: torch.Tensor
    agreement: torch.Tensor
    ceiling: torch.Tensor
    chance: torch.Tensor
    overlap: torch.Tensor
    audio_neighbours: torch.Tensor
    text_neighbours: torch.Tensor


def _group_mask(groups: Sequence[str]) -> torch.Tensor:
    """(n, n) bool: True where clips i and j belong to different recording groups."""
    ids = {g: i for i, g in enumerate(sorted(set(groups)))}
    g = torch.tensor([ids[x] for x in groups])
    return g.unsqueeze(0) != g.unsqueeze(1)


def _topk(sim: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """(n, k) indices of the k largest ``sim`` per row among ``mask``; ties: lower index first."""
    masked = sim.masked_fill(~mask, float("-inf"))
    order = torch.sort(masked, dim=1, descending=True, stable=True).indices
    return order[:, :k]


def audit_scores(audio: torch.Tensor, text: torch.Tensor, groups: Sequence[str], k: int = 10) -> AuditScores:
    """The audit score of every clip (see the module docstring for the definitions).

    Args:
        audio: (n, D_a) audio features (any scale: they are centred and L2-normalised here).
        text: (n, D_t) unit caption vectors t_i (used as given).
        groups: n recording groups; clips of one group are never neighbours.
        k: neighbours per clip; must leave k clips outside every clip's group.
    """
    n = audio.shape[0]
    if audio.dim() != 2 or text.dim() != 2 or text.shape[0] != n or len(groups) != n:
        raise ConfigError(f"audio (n, D_a), text (n, D_t) and n groups needed, got {tuple(audio.shape)}, "
                          f"{tuple(text.shape)} and {len(groups)} groups")
    mask = _group_mask(groups)
    others = mask.sum(dim=1)
    if k < 1 or int(others.min()) < k:
        raise ConfigError(f"k = {k} needs at least k clips outside every clip's group (fewest: {int(others.min())}); "
                          "lower --k")
    x = F.normalize(audio.double() - audio.double().mean(dim=0, keepdim=True), dim=1)
    t = text.double()
    s_audio, s_text = x @ x.T, t @ t.T
    nn_a, nn_t = _topk(s_audio, mask, k), _topk(s_text, mask, k)
    agreement = s_text.gather(1, nn_a).mean(dim=1)
    ceiling = s_text.gather(1, nn_t).mean(dim=1)
    chance = (s_text * mask).sum(dim=1) / others
    score = (agreement - chance) / (ceiling - chance).clamp_min(1e-6)
    hits = (nn_a.unsqueeze(2) == nn_t.unsqueeze(1)).any(dim=2).sum(dim=1)
    return AuditScores(score=score, agreement=agreement, ceiling=ceiling, chance=chance,
                       overlap=hits.double() / k, audio_neighbours=nn_a, text_neighbours=nn_t)


def flagged_indices(scores: torch.Tensor, ids: Sequence[str], fraction: float) -> list[int]:
    """The ``ceil(fraction · n)`` indices of lowest score, lowest first (ties: by id)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"--fraction must be in (0, 1], got {fraction}")
    count = math.ceil(fraction * len(ids))
    order = sorted(range(len(ids)), key=lambda i: (round(float(scores[i]), 9), ids[i]))
    return order[:count]


def silent_indices(clips: Sequence[Clip]) -> list[int]:
    """Indices of clips the corpus builder would call unusable (:func:`training.corpus.audio.is_usable`:
    empty, < 0.1 s, or peak < −60 dBFS) — e.g. silent segments of a long recording. Their audio
    features are those of silence, so the neighbour score cannot judge them: :func:`main` leaves them
    out of the scoring and lists them apart."""
    out = []
    for i, clip in enumerate(clips):
        samples, rate = corpus_audio.read_mono(Path(clip.audio))
        if not corpus_audio.is_usable(samples, rate):
            out.append(i)
    return out


def injection_check(
    audio: torch.Tensor, text: torch.Tensor, groups: Sequence[str], ids: Sequence[str],
    k: int, fraction: float, noise: float, seed: int,
) -> tuple[int, int, int]:
    """How many known caption errors the audit flags: the caption vectors of m = round(noise · n)
    clips drawn with ``seed`` are rotated among them (clip idx[j] gets the captions of idx[j+1]),
    then the clips are scored and flagged as usual.

    Returns:
        (m, how many of the m are flagged, how many clips are flagged). Recall = 2nd / 1st; a
        random flagging has recall ``fraction``; precision = 2nd / 3rd.
    """
    n = len(ids)
    m = max(2, round(noise * n))
    idx = random.Random(seed).sample(range(n), m)
    swapped = text.clone()
    swapped[idx] = text[idx[1:] + idx[:1]]
    flagged = set(flagged_indices(audit_scores(audio, swapped, groups, k).score, ids, fraction))
    return m, sum(i in flagged for i in idx), len(flagged)


# -- simple audio statistics for the review ------------------------------------------------

def audio_stats(wave: torch.Tensor, sample_rate: int) -> dict[str, float | str]:
    """Descriptive statistics of a mono waveform (samples,), for reviewing a caption by eye.

    * ``rms_db``: 20·log10 of the RMS; ``crest_db``: peak over RMS (high: impulsive);
    * ``centroid_hz``: power-weighted mean frequency over all frames (1024 samples, hop 512);
    * ``flatness``: median over loud frames of the spectral flatness (geometric / arithmetic mean
      of the power spectrum): near 0 tonal, near 1 noise;
    * ``pitched``: fraction of loud frames whose normalised autocorrelation has a peak ≥ 0.7 at a
      lag of 2–20 ms (50–500 Hz fundamental): voices, engines, animal calls, music;
    * ``envelope``: RMS in 8 equal time bins, drawn as bars relative to the loudest.

    Loud frames are those within 30 dB of the loudest frame.
    """
    w = wave.double()
    n_fft, hop = 1024, 512
    if len(w) < n_fft:
        w = F.pad(w, (0, n_fft - len(w)))
    rms = float(w.pow(2).mean().sqrt())
    peak = float(w.abs().max())
    frames = w.unfold(0, n_fft, hop) * torch.hann_window(n_fft, dtype=torch.float64)
    power = torch.fft.rfft(frames, dim=1).abs().pow(2) + 1e-12
    freqs = torch.fft.rfftfreq(n_fft, 1 / sample_rate, dtype=torch.float64)
    energy = power.sum(dim=1)
    loud = energy >= energy.max() * 1e-3
    centroid = float((power * freqs).sum() / energy.sum())
    flatness = torch.exp(torch.log(power).mean(dim=1)) / power.mean(dim=1)
    raw = w.unfold(0, n_fft, hop)
    raw = raw - raw.mean(dim=1, keepdim=True)
    spec = torch.fft.rfft(raw, n=2 * n_fft, dim=1)
    acf = torch.fft.irfft(spec.abs().pow(2), dim=1)[:, :n_fft]
    acf = acf / acf[:, :1].clamp_min(1e-12)
    lo, hi = int(0.002 * sample_rate), min(int(0.02 * sample_rate), n_fft - 1)
    pitched = acf[:, lo:hi].max(dim=1).values >= 0.7
    bins = [chunk.pow(2).mean().sqrt() for chunk in w.tensor_split(8)]
    top = max(float(b) for b in bins) or 1.0
    envelope = "".join(_BARS[min(7, int(float(b) / top * 7.999))] for b in bins)
    return {
        "rms_db": 20 * math.log10(max(rms, 1e-10)),
        "crest_db": 20 * math.log10(max(peak, 1e-10) / max(rms, 1e-10)),
        "centroid_hz": centroid,
        "flatness": float(flatness[loud].median()),
        "pitched": float(pitched[loud].double().mean()),
        "envelope": envelope,
    }


# -- the report ----------------------------------------------------------------------------

def caption_vectors(model: object, clips: Sequence[Clip], cache_dir: str | None) -> torch.Tensor:
    """(n, D_t) unit rows t_i = normalize(mean of the unit frozen text features of clip i's captions)."""
    texts = [t for c in clips for t in c.captions]
    owner = torch.tensor([i for i, c in enumerate(clips) for _ in c.captions], dtype=torch.long)
    feats = F.normalize(text_features(model, texts, cache_dir, progress=False).double(), dim=1)
    return owner_means(feats, owner, len(clips))


def table_row(clip: Clip, rules_by_package: dict[str, list]) -> str:
    """The caption-table pattern whose captions are the clip's (first such row), or ``?``."""
    package = clip.package or ""
    if package not in rules_by_package:
        try:
            rules_by_package[package] = load_rules(package)
        except FileNotFoundError:
            rules_by_package[package] = []
    for rule in rules_by_package[package]:
        if list(rule.captions) == list(clip.captions):
            return rule.pattern.pattern
    return "?"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_report(
    clips: Sequence[Clip],
    names: dict[str, str],
    durations: dict[str, float],
    result: AuditScores,
    flagged: Sequence[int],
    k: int,
    fraction: float,
    stats: dict[int, dict[str, float | str]],
    silent: Sequence[Clip] = (),
    extra: Sequence[str] = (),
) -> str:
    """The Markdown report: the per-package score distribution, the silent clips, then one section
    per flagged clip."""
    ids = [c.clip_id for c in clips]
    flagged_set = set(flagged)
    packages = sorted({c.package or "" for c in clips})
    dist_rows = []
    for p in packages:
        idx = [i for i, c in enumerate(clips) if (c.package or "") == p]
        s = result.score[idx]
        dist_rows.append([p, str(len(idx)), f"{float(s.median()):.3f}", f"{float(s.quantile(0.1)):.3f}",
                          f"{float(result.overlap[idx].mean()):.3f}", str(sum(i in flagged_set for i in idx))])
    s = result.score
    dist_rows.append(["**all**", str(len(clips)), f"{float(s.median()):.3f}", f"{float(s.quantile(0.1)):.3f}",
                      f"{float(result.overlap.mean()):.3f}", str(len(flagged))])
    threshold = float(result.score[flagged[-1]]) if flagged else float("nan")
    out = [
        "# Caption audit: flagged clips",
        "",
        "Generated by `python -m training audit-captions` (definitions: `training/corpus/audit.py`).",
        f"k = {k} neighbours outside the clip's recording group; flagged: the {len(flagged)} clips "
        f"({fraction:.0%}) of lowest score (score ≤ {threshold:.3f}).",
        "score = (a − b) / (r − b): a = mean caption similarity to the audio neighbours, "
        "r = to the caption's nearest captions, b = to all clips; overlap = |N_A ∩ N_T| / k.",
        "",
        "## Score by package",
        "",
        markdown_table(["package", "clips", "median score", "10th pct", "mean overlap", "flagged"], dist_rows,
                       right={1, 2, 3, 4, 5}),
        "",
        f"## Silent clips ({len(silent)}: peak below −60 dBFS, left out of the scoring)",
        "",
        *([markdown_table(["clip", "package", "group", "caption"],
                          [[c.clip_id, c.package or "", c.group, _cell(c.captions[0])]
                           for c in silent])] if silent else ["none"]),
        "",
        *extra,
        "",
        "## Flagged clips (lowest score first)",
        "",
        markdown_table(
            ["#", "clip", "package", "caption", "score", "overlap"],
            [[str(n + 1), ids[i], clips[i].package or "", _cell(clips[i].captions[0]),
              f"{float(result.score[i]):.3f}", f"{float(result.overlap[i]):.1f}"] for n, i in enumerate(flagged)],
            right={0, 4, 5}),
        "",
    ]
    rules: dict[str, list] = {}
    for n, i in enumerate(flagged):
        c = clips[i]
        st = stats.get(i, {})
        out += [
            f"### {n + 1}. `{c.clip_id}`",
            "",
            f"* captions: {' | '.join(c.captions)}",
            f"* original: `{names.get(c.clip_id, '?')}` ({c.package}, group `{c.group}`, {c.split}, "
            f"esc50 {c.esc50 or '–'})",
            f"* table row: `{table_row(c, rules)}`",
            f"* score {float(result.score[i]):.3f} (a {float(result.agreement[i]):.3f}, "
            f"r {float(result.ceiling[i]):.3f}, b {float(result.chance[i]):.3f}), "
            f"overlap {float(result.overlap[i]):.1f}",
        ]
        if st:
            out.append(f"* audio: {durations.get(c.clip_id, float('nan')):.2f} s, RMS {st['rms_db']:.1f} dBFS, "
                       f"crest {st['crest_db']:.1f} dB, centroid {st['centroid_hz']:.0f} Hz, "
                       f"flatness {st['flatness']:.3f}, pitched {st['pitched']:.2f}, envelope {st['envelope']}")
        out.append("* audio neighbours:")
        for j in result.audio_neighbours[i].tolist():
            out.append(f"  * `{ids[j]}` ({clips[j].package}): {clips[j].captions[0]}")
        out.append("")
    return "\n".join(out)


def _manifest_extras(path: Path) -> tuple[dict[str, str], dict[str, float]]:
    """clip_id → original_name and → duration_s, from the corpus manifest."""
    import json

    names, durations = {}, {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            names[row["clip_id"]] = str(row.get("original_name", "?"))
            durations[row["clip_id"]] = float(row.get("duration_s") or float("nan"))
    return names, durations


def main(argv: list[str] | None = None) -> int:
    """``audit-captions --corpus DIR --out FILE.md``: flag clips whose caption disagrees with their audio neighbours."""
    parser = argparse.ArgumentParser(prog="python -m training audit-captions", description=main.__doc__)
    parser.add_argument("--corpus", required=True, help="corpus folder (its manifest.jsonl)")
    parser.add_argument("--out", required=True, help="Markdown report to write")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"training config naming the backbones and the feature cache (default {DEFAULT_CONFIG})")
    parser.add_argument("--k", type=int, default=10, help="neighbours per clip (default 10)")
    parser.add_argument("--fraction", type=float, default=0.1, help="fraction of clips flagged (default 0.1)")
    parser.add_argument("--inject", type=float, default=0.0, metavar="NOISE",
                        help="also measure the recall of the audit on NOISE (e.g. 0.05) rotated captions")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the --inject check (default 3)")
    args = parser.parse_args(argv)
    try:
        manifest = Path(args.corpus) / "manifest.jsonl"
        if not manifest.is_file():
            raise ConfigError(f"no manifest.jsonl in {args.corpus}: pass the folder build-corpus wrote")
        config = load_train_config(args.config)
        model = create_model(config.run_model_config(), seed=config.seed)
        clips = sorted(load_corpus_manifest(manifest), key=lambda c: c.clip_id)
        feats, ok = audio_features(model, clips, config.features_cache, config.feature_batch_size,
                                   config.max_duration_s, progress=config.progress)
        if len(ok) < len(clips):
            logger.warning("%d clips could not be decoded and are left out", len(clips) - len(ok))
            clips = [clips[i] for i in ok]
        silent_idx = set(silent_indices(clips))
        silent = [c for i, c in enumerate(clips) if i in silent_idx]
        kept = [i for i in range(len(clips)) if i not in silent_idx]
        clips, feats = [clips[i] for i in kept], feats[kept]
        text = caption_vectors(model, clips, config.features_cache)
        groups, ids = [c.group for c in clips], [c.clip_id for c in clips]
        result = audit_scores(feats, text, groups, k=args.k)
        flagged = flagged_indices(result.score, ids, args.fraction)
        extra: list[str] = []
        if args.inject:
            checks = [injection_check(feats, text, groups, ids, args.k, args.fraction, args.inject, seed)
                      for seed in range(args.seeds)]
            rows = [[str(seed), str(m), str(hit), f"{hit / m:.2f}", f"{hit / nf:.2f}"]
                    for seed, (m, hit, nf) in enumerate(checks)]
            extra = [f"## Sensitivity: {args.inject:.0%} of the captions rotated among random clips",
                     "", markdown_table(["seed", "injected", "flagged", "recall", "precision"], rows,
                                        right={0, 1, 2, 3, 4}),
                     "", f"Recall of a random flagging: {args.fraction:.2f}.", ""]
            print("\n".join(extra))
        stats = {i: audio_stats(load_audio(clips[i].audio, STATS_SAMPLE_RATE, max_duration_s=None), STATS_SAMPLE_RATE)
                 for i in flagged}
        names, durations = _manifest_extras(manifest)
        report = render_report(clips, names, durations, result, flagged, args.k, args.fraction, stats, silent, extra)
        atomic_write_text(args.out, report + "\n")
    except ATRError as exc:
        logger.error("%s", exc)
        return 1
    print(f"audited {len(clips)} clips: {len(silent)} silent, {len(flagged)} flagged; wrote {args.out}")
    return 0
