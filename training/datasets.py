"""Training and evaluation data: one :class:`Clip` record, its audio, the loaders for the formats
users bring, and the split, package and class filters (mixtures and caption noise:
:mod:`training.augment`; batches: :mod:`training.batching`).

Formats:

* ``manifest.jsonl`` of the sound corpus (``clip_id, audio, captions, split, group, esc50,
  start_s, duration_s`` …; audio paths relative to the manifest's folder).
* Clotho v2.1 (:mod:`training.formats.clotho`), AudioCaps (:mod:`training.formats.audiocaps`),
  WavCaps (:mod:`training.formats.wavcaps`, training only) in their published layouts.
* ESC-50: ``meta/esc50.csv`` (``filename,fold,target,category,…``), audio in ``audio/``.
* A generic manifest: CSV or JSONL with ``audio,caption[,caption…]``.

Splits are always called ``train``, ``validation`` and ``test``. :func:`read_dataset` returns the
clips with a :class:`~training.formats.common.LoadReport` (clips, captions, skipped rows with
reasons per split; the bad-input policy is in :mod:`training.formats.common`); ``data`` entries
are ``[FORMAT:]PATH[@WEIGHT]`` (:func:`parse_data_spec`; weights: :mod:`training.sampling`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from atr_demo.audio import load_audio
from atr_demo.errors import ConfigError, DataError
from atr_demo.fileio import AUDIO_EXTENSIONS  # noqa: F401 - re-exported: one list of audio suffixes
from atr_demo.zeroshot import ESC50_SOUND_DESCRIPTIONS

from training.analysis.leakage import classes_in_captions
from training.formats.audiocaps import AUDIOCAPS_SPLITS, load_audiocaps
from training.formats.clotho import load_clotho
from training.formats.common import (
    EVAL_SPLITS,
    SHOW,
    SPLITS,
    Clip,
    LoadReport,
    captions_of,
    check_readable,
)
from training.formats.wavcaps import json_root, load_wavcaps

logger = logging.getLogger(__name__)

FORMATS = ("corpus", "clotho", "audiocaps", "wavcaps", "esc50", "manifest")
#: Formats whose audio is probed at load time (``check_audio``): the public datasets, whose
#: downloads are the user's own.
PROBED_FORMATS = ("clotho", "audiocaps", "wavcaps")


#: ``caption_<lang>`` column names: a language tag such as ``fr``, ``pt_BR``, ``zh_CN``,
#: ``sr@latin`` (``caption_1``…``caption_5`` of Clotho are numbered, not languages).
LANG_COLUMN = re.compile(r"^caption_([a-z]{2,3}(?:[_@-][A-Za-z]{2,8})?)$")


def language_captions(clip: Clip, lang: str, default_lang: str = "en") -> list[str]:
    """The captions of ``clip`` in ``lang`` (``default_lang`` is ``clip.captions`` unless the
    manifest gave ``caption_<default_lang>`` explicitly); ``[]`` when it has none."""
    if lang in clip.captions_by_lang:
        return clip.captions_by_lang[lang]
    return list(clip.captions) if lang == default_lang else []


def label_captions(clip: Clip) -> tuple[str, ...]:
    """The sound descriptions of a clip's ESC-50 class (:data:`atr_demo.zeroshot.ESC50_SOUND_DESCRIPTIONS`),
    the captions ``label_captions`` training may use in place of the clip's own; () without a label
    and for a mixture (its caption names both sources)."""
    return ESC50_SOUND_DESCRIPTIONS.get(clip.esc50, ()) if clip.esc50 and not clip.mix_of else ()


def _lang_captions_of(row: dict, where: str) -> dict[str, list[str]]:
    """``caption_<lang>`` keys of a manifest row → ``{lang: [captions]}`` (empty values skipped)."""
    out: dict[str, list[str]] = {}
    for key, value in row.items():
        match = LANG_COLUMN.match(str(key))
        if match is None or value in (None, "", []):
            continue
        captions = captions_of(value, f"{where} ({key})")
        out[match.group(1)] = captions
    return out


# -- audio -----------------------------------------------------------------------------------

def load_clip_audio(clip: Clip, sample_rate: int, max_duration_s: float | None = None) -> torch.Tensor:
    """Mono waveform (samples,) of a clip at ``sample_rate``: its segment, or its mixture."""
    if clip.mix_of is not None:
        a = load_clip_audio(clip.mix_of[0], sample_rate, max_duration_s)
        b = load_clip_audio(clip.mix_of[1], sample_rate, max_duration_s)
        return mix_waveforms(a, b, clip.gain_db)
    wave = load_audio(clip.audio, sample_rate, max_duration_s=None)
    start = int(round(clip.start_s * sample_rate))
    stop = len(wave) if clip.duration_s is None else start + int(round(clip.duration_s * sample_rate))
    wave = wave[start:stop]
    if max_duration_s is not None:
        wave = wave[: int(max_duration_s * sample_rate)]
    if len(wave) == 0:
        raise ConfigError(f"clip {clip.clip_id}: segment {clip.start_s}+{clip.duration_s}s is empty in {clip.audio}")
    return wave


def mix_waveforms(a: torch.Tensor, b: torch.Tensor, gain_db: float) -> torch.Tensor:
    """``a + 10^(gain_db/20) · b`` over the longer length (the shorter is zero-padded), peak ≤ 1.

    Both inputs are peak-normalised first so that the gain is the level of ``b`` relative to ``a``.
    """
    def peak_norm(w: torch.Tensor) -> torch.Tensor:
        peak = w.abs().max()
        return w / peak if peak > 0 else w

    a, b = peak_norm(a), peak_norm(b)
    n = max(len(a), len(b))
    out = torch.zeros(n, dtype=torch.float32)
    out[: len(a)] += a
    out[: len(b)] += float(10 ** (gain_db / 20)) * b
    peak = out.abs().max()
    return out / peak if peak > 1 else out


# -- loaders ---------------------------------------------------------------------------------

def _norm_split(value: str, where: str) -> str:
    aliases = {"val": "validation", "valid": "validation", "dev": "train", "development": "train",
               "eval": "test", "evaluation": "test"}
    split = aliases.get(value, value)
    if split not in SPLITS:
        raise ConfigError(f"{where}: unknown split {value!r}; use one of {SPLITS}")
    return split


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n} is not valid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{n} must be a JSON object")
            rows.append(row)
    return rows


def load_corpus_manifest(path: str | Path) -> list[Clip]:
    """The sound corpus's ``manifest.jsonl`` (audio paths relative to its folder).

    Each row's audio file is the whole clip (segments of long recordings are written as files of
    their own), so clips are read from start to end.
    """
    path = Path(path)
    root = path.parent
    clips = []
    for n, row in enumerate(_read_jsonl(path), 1):
        where = f"{path}:{n}"
        missing = [k for k in ("clip_id", "audio", "captions") if k not in row]
        if missing:
            raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
        clips.append(Clip(
            clip_id=str(row["clip_id"]),
            audio=str((root / row["audio"]).resolve()),
            captions=captions_of(row["captions"], where),
            split=_norm_split(str(row.get("split", "train")), where),
            group=str(row.get("group") or row["clip_id"]),
            esc50=row.get("esc50") or None,
            package=str(row["package"]) if row.get("package") else None,
            captions_by_lang=_lang_captions_of(row, where),
            # the corpus writes every segment as its own file: its ``start_s`` is the offset in
            # the original recording (provenance), not a seek position in ``audio``
        ))
    return clips


def load_generic_manifest(path: str | Path, split: str | None = None) -> list[Clip]:
    """A CSV (header ``audio,caption[,caption…]``) or JSONL (``audio`` and ``caption``/``captions``).

    Optional columns: ``split``, ``group``, ``esc50``, ``start_s``, ``duration_s``, ``clip_id``,
    and ``caption_<lang>`` (e.g. ``caption_fr``, ``caption_pt_BR``) for captions in other languages
    (:attr:`Clip.captions_by_lang`); ``caption_1``, ``caption_2``… are default-language captions.
    Without a split column every clip gets ``split`` (default ``train``).
    """
    path = Path(path)
    root = path.parent
    if path.suffix == ".jsonl":
        rows = _read_jsonl(path)
    else:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header or "audio" not in header:
                raise ConfigError(f"{path}: the first row must be a header with an 'audio' column")
            rows = []
            for values in reader:
                if not any(v.strip() for v in values):
                    continue
                row: dict = {}
                caps = []
                for key, value in zip(header, values, strict=False):  # a short row leaves columns out
                    if key.startswith("caption") and not LANG_COLUMN.match(key):
                        caps.append(value)
                    else:
                        row[key] = value
                row["captions"] = caps
                rows.append(row)
    clips = []
    for n, row in enumerate(rows, 1):
        where = f"{path}:{n}"
        if "audio" not in row:
            raise ConfigError(f"{where}: no 'audio' value")
        caps = row.get("captions", row.get("caption"))
        clip_id = str(row.get("clip_id") or Path(str(row["audio"])).stem)
        clips.append(Clip(
            clip_id=clip_id,
            audio=str((root / str(row["audio"])).resolve()),
            captions=captions_of(caps, where),
            split=_norm_split(str(row.get("split") or split or "train"), where),
            group=str(row.get("group") or clip_id),
            esc50=row.get("esc50") or None,
            start_s=float(row.get("start_s") or 0.0),
            duration_s=float(row["duration_s"]) if row.get("duration_s") not in (None, "") else None,
            captions_by_lang=_lang_captions_of(row, where),
        ))
    return clips


def load_esc50(root: str | Path, test_fold: int | None = None) -> list[Clip]:
    """ESC-50: ``meta/esc50.csv`` and ``audio/``; the caption is "the sound of <category>".

    All clips are ``test`` clips (zero-shot) unless ``test_fold`` is given, in which case that
    fold is ``test`` and the others ``train``.
    """
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise ConfigError(f"no meta/esc50.csv in {root}")
    clips = []
    with open(meta, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            category, fold = row["category"], int(row["fold"])
            split = "test" if test_fold is None or fold == test_fold else "train"
            clips.append(Clip(
                clip_id=row["filename"], audio=str((root / "audio" / row["filename"]).resolve()),
                captions=[f"the sound of {category.replace('_', ' ')}"], split=split,
                group=row.get("src_file") or row["filename"], esc50=category, fold=fold,
            ))
    return clips


def detect_format(path: Path) -> str:
    """Guess the format of a dataset path (see :data:`FORMATS`)."""
    if path.is_file():
        if path.name == "manifest.jsonl":
            return "corpus"
        if path.suffix in (".csv", ".jsonl"):
            return "manifest"
        raise ConfigError(f"{path}: cannot tell the dataset format; pass format explicitly")
    if not path.is_dir():
        raise ConfigError(f"dataset {path} does not exist")
    if (path / "manifest.jsonl").is_file():
        return "corpus"
    if (path / "meta" / "esc50.csv").is_file():
        return "esc50"
    if any(path.glob("clotho_captions_*.csv")):
        return "clotho"
    if any((d / f"{n}.csv").is_file() for d in (path, path / "dataset") for n in AUDIOCAPS_SPLITS):
        return "audiocaps"
    if json_root(path) is not None and any(json_root(path).glob("*/*.json")):  # type: ignore[union-attr]
        return "wavcaps"
    raise ConfigError(f"{path}: no manifest.jsonl, meta/esc50.csv, clotho_captions_*.csv, train/val/test.csv or "
                      "json_files/<source>/*.json found; name the format: FORMAT:PATH with FORMAT one of "
                      + ", ".join(FORMATS))


@dataclass(frozen=True)
class DataSpec:
    """One entry of ``data``: ``[FORMAT:]PATH[@WEIGHT]`` (e.g. ``wavcaps:/d/wc@0.3``).

    Attributes:
        key: the spec without its weight, as written: the :attr:`Clip.dataset` of its clips and
            the key of :func:`training.sampling.epoch_items`' weights.
        format: the format named by the prefix (``None``: detect).
        path: the dataset path (``~`` expanded).
        weight: sampling weight (``None``: not weighted).
    """

    key: str
    format: str | None
    path: Path
    weight: float | None


_SPEC = re.compile(r"^(?:(?P<fmt>" + "|".join(FORMATS) + r"):)?(?P<path>.*?)(?:@(?P<weight>[0-9.eE+-]+))?$")


def parse_data_spec(spec: str | Path) -> DataSpec:
    """Parse ``[FORMAT:]PATH[@WEIGHT]``; a weight must be a number > 0 (ConfigError otherwise)."""
    match = _SPEC.match(str(spec))
    assert match is not None  # the pattern matches every string
    weight = None
    if match.group("weight") is not None:
        try:
            weight = float(match.group("weight"))
        except ValueError:
            raise ConfigError(f"data {spec!r}: weight {match.group('weight')!r} is not a number") from None
        if not weight > 0 or weight != weight or weight == float("inf"):
            raise ConfigError(f"data {spec!r}: the weight must be a finite number > 0, e.g. {match.group('path')}@0.5")
    key = str(spec)[: match.start("weight") - 1] if weight is not None else str(spec)
    if not match.group("path"):
        raise ConfigError(f"data {spec!r}: no path; write [FORMAT:]PATH[@WEIGHT]")
    return DataSpec(key=key, format=match.group("fmt"), path=Path(match.group("path")).expanduser(), weight=weight)


@dataclass
class LoadedDataset:
    """The clips of one dataset (every split) and its :class:`LoadReport`."""

    clips: list[Clip]
    report: LoadReport


def read_dataset(
    spec: str | Path,
    fmt: str | None = None,
    *,
    wavcaps_blacklist: Sequence[str] | None = None,
    check_audio: str = "eval",
) -> LoadedDataset:
    """Load a dataset (:func:`parse_data_spec`: a ``format:`` prefix, or ``fmt``, overrides the
    detection; a weight suffix is ignored here) with its loading report, logged as a table.

    Args:
        wavcaps_blacklist: WavCaps exclusion lists (files or folders) instead of the release's
            ``json_files/blacklist/``.
        check_audio: for :data:`PROBED_FORMATS`, probe the audio headers of the ``eval`` splits
            (validation/test), of ``all`` splits, or ``off``: an unreadable training clip is
            skipped and reported, an unreadable validation/test clip is a DataError.

    Raises:
        ConfigError / DataError: see the loaders; a duplicate clip id.
    """
    parsed = parse_data_spec(spec)
    path = parsed.path
    fmt = parsed.format or fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown dataset format {fmt!r}; use one of {FORMATS}")
    report = None
    if fmt == "corpus":
        clips = load_corpus_manifest(path / "manifest.jsonl" if path.is_dir() else path)
    elif fmt == "clotho":
        clips, report = load_clotho(path, dataset=parsed.key)
    elif fmt == "audiocaps":
        clips, report = load_audiocaps(path, dataset=parsed.key)
    elif fmt == "wavcaps":
        clips, report = load_wavcaps(path, blacklist=wavcaps_blacklist, dataset=parsed.key)
    elif fmt == "esc50":
        clips = load_esc50(path)
    else:
        clips = load_generic_manifest(path)
    if report is None:
        report = LoadReport(parsed.key, fmt)
    for clip in clips:
        clip.dataset = parsed.key
    counts = Counter(c.clip_id for c in clips)
    duplicates = [i for i, n in counts.items() if n > 1]
    if duplicates:
        raise DataError(f"{spec}: duplicate clip id(s) {', '.join(map(repr, duplicates[:SHOW]))}; "
                        "every clip of a dataset needs its own id")
    if check_audio not in ("eval", "all", "off"):
        raise ConfigError(f"check_audio must be eval, all or off, got {check_audio!r}")
    if fmt in PROBED_FORMATS:
        clips = check_readable(clips, report, {"eval": EVAL_SPLITS, "all": SPLITS, "off": ()}[check_audio])
    report.count(clips)
    report.log()
    return LoadedDataset(clips, report)


def load_dataset(
    spec: str | Path,
    fmt: str | None = None,
    *,
    wavcaps_blacklist: Sequence[str] | None = None,
    check_audio: str = "eval",
) -> list[Clip]:
    """The clips (every split) of :func:`read_dataset`."""
    return read_dataset(spec, fmt, wavcaps_blacklist=wavcaps_blacklist, check_audio=check_audio).clips


def split_clips(clips: Sequence[Clip], split: str) -> list[Clip]:
    """The clips of one split, in order."""
    return [c for c in clips if c.split == split]


def cv_split(clips: Sequence[Clip], folds: int, fold: int) -> list[Clip]:
    """Reassign splits for ``folds``-fold cross-validation by recording group.

    Groups are ordered by the SHA-256 of their name and dealt round-robin into ``folds``
    folds (balanced, deterministic, independent of the clip order): fold ``fold`` becomes
    ``test``, fold ``fold + 1`` (mod ``folds``) ``validation`` and the rest ``train``. The
    original splits are ignored, so every clip is tested in exactly one fold, and no recording
    group spans two splits. For small data sets (the multilingual split) where a fixed test
    split would hold a handful of clips.
    """
    if folds < 3:
        raise ConfigError(f"cross-validation needs at least 3 folds (test, validation, train), got {folds}")
    if not 0 <= fold < folds:
        raise ConfigError(f"cv_fold must be in [0, {folds - 1}], got {fold}")
    groups = sorted({c.group for c in clips}, key=lambda g: hashlib.sha256(g.encode("utf-8")).hexdigest())
    if len(groups) < folds:
        raise ConfigError(f"{len(groups)} recording groups cannot fill {folds} folds")
    fold_of = {g: i % folds for i, g in enumerate(groups)}
    names = {fold: "test", (fold + 1) % folds: "validation"}
    return [replace(c, split=names.get(fold_of[c.group], "train")) for c in clips]


def drop_classes(clips: Sequence[Clip], classes: Sequence[str]) -> list[Clip]:
    """The clips that neither name one of ``classes`` in a caption (any language;
    :func:`training.analysis.leakage.classes_in_captions`, with its synonyms) nor carry one of them as
    their ESC-50 label (a mixture: neither source) — a class-disjoint zero-shot control."""
    held = set(classes)
    if not held:
        return list(clips)
    named: dict[tuple[str, ...], bool] = {}

    def names_held(clip: Clip) -> bool:
        if clip.mix_of is not None and any(names_held(c) for c in clip.mix_of):
            return True
        if clip.esc50 in held:
            return True
        captions = tuple(clip.captions) + tuple(t for ts in clip.captions_by_lang.values() for t in ts)
        if captions not in named:
            named[captions] = bool(classes_in_captions(captions, classes=sorted(held)))
        return named[captions]

    return [c for c in clips if not names_held(c)]


def clip_packages(clip: Clip) -> set[str | None]:
    """Source packages of a clip (both sources of a mixture)."""
    if clip.mix_of is not None:
        return clip_packages(clip.mix_of[0]) | clip_packages(clip.mix_of[1])
    return {clip.package}


def filter_packages(
    clips: Sequence[Clip], only: Sequence[str] | None = None, exclude: Sequence[str] | None = None
) -> list[Clip]:
    """Keep the clips whose package(s) are all in ``only`` (when given) and none in ``exclude``.

    A mixture is kept only when both of its sources pass. Clips without a package (other
    formats) are dropped by a non-empty ``only`` and kept by ``exclude``.

    Raises:
        ConfigError: a package of ``only`` / ``exclude`` occurs in none of the clips (a typo).
    """
    only_set, exclude_set = set(only or ()), set(exclude or ())
    if not only_set and not exclude_set:
        return list(clips)
    known = set().union(*(clip_packages(c) for c in clips)) if clips else set()
    unknown = sorted((only_set | exclude_set) - known)
    if unknown:
        names = ", ".join(sorted(p for p in known if p))
        raise ConfigError(f"package(s) {', '.join(unknown)} occur in no clip; known: {names}")
    kept = []
    for clip in clips:
        packages = clip_packages(clip)
        if only_set and not packages <= only_set:
            continue
        if packages & exclude_set:
            continue
        kept.append(clip)
    return kept

