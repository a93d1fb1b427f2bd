"""Training and evaluation data: one :class:`Clip` record, its audio, the loaders for the formats
users bring, and the split, package and class filters (mixtures and caption noise:
:mod:`training.augment`; batches: :mod:`training.batching`).

Formats (see DESIGN.md §6):

* ``manifest.jsonl`` of the sound corpus (``clip_id, audio, captions, split, group, esc50,
  start_s, duration_s`` …; audio paths relative to the manifest's folder).
* Clotho: ``clotho_captions_{development,validation,evaluation}.csv`` (``file_name,
  caption_1..5``), audio in a folder named like the split.
* AudioCaps: ``train.csv / val.csv / test.csv`` (``audiocap_id,youtube_id,start_time,caption``),
  audio named by youtube id or audiocap id, any audio extension; missing files are skipped.
* ESC-50: ``meta/esc50.csv`` (``filename,fold,target,category,…``), audio in ``audio/``.
* A generic manifest: CSV or JSONL with ``audio,caption[,caption…]``.

Splits are always called ``train``, ``validation`` and ``test``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from atr_demo.audio import load_audio
from atr_demo.errors import ConfigError
from atr_demo.fileio import AUDIO_EXTENSIONS

from training.analysis.leakage import classes_in_captions

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
CLOTHO_SPLITS = {"development": "train", "validation": "validation", "evaluation": "test"}
AUDIOCAPS_SPLITS = {"train": "train", "val": "validation", "test": "test"}
FORMATS = ("corpus", "clotho", "audiocaps", "esc50", "manifest")


@dataclass
class Clip:
    """One audio clip (or a segment of a file) with its captions.

    Attributes:
        clip_id: unique id within a dataset.
        audio: absolute path of the audio file.
        captions: one or more captions (Clotho has 5).
        split: ``train`` | ``validation`` | ``test``.
        group: recording group: cuts of one recording share it (batches hold one per group).
        esc50: ESC-50 class of the clip, if one applies.
        start_s, duration_s: the segment of the file (``None``: to the end).
        fold: ESC-50 fold (1–5) for ESC-50 data.
        mix_of: for a mixture, the two source clips (the audio is built on the fly).
        gain_db: gain applied to the second source of a mixture.
        package: source package of a corpus clip (``None`` for other formats).
        captions_by_lang: captions in other languages, ``{"fr": [...], "de": [...]}``, from the
            manifest columns ``caption_<lang>`` (``captions`` is the default-language list; see
            :func:`language_captions`).
    """

    clip_id: str
    audio: str
    captions: list[str]
    split: str
    group: str
    esc50: str | None = None
    start_s: float = 0.0
    duration_s: float | None = None
    fold: int | None = None
    mix_of: tuple[Clip, Clip] | None = field(default=None, repr=False)
    gain_db: float = 0.0
    package: str | None = None
    captions_by_lang: dict[str, list[str]] = field(default_factory=dict)


#: ``caption_<lang>`` column names: a language tag such as ``fr``, ``pt_BR``, ``zh_CN``,
#: ``sr@latin`` (``caption_1``…``caption_5`` of Clotho are numbered, not languages).
LANG_COLUMN = re.compile(r"^caption_([a-z]{2,3}(?:[_@-][A-Za-z]{2,8})?)$")


def language_captions(clip: Clip, lang: str, default_lang: str = "en") -> list[str]:
    """The captions of ``clip`` in ``lang`` (``default_lang`` is ``clip.captions`` unless the
    manifest gave ``caption_<default_lang>`` explicitly); ``[]`` when it has none."""
    if lang in clip.captions_by_lang:
        return clip.captions_by_lang[lang]
    return list(clip.captions) if lang == default_lang else []


def _lang_captions_of(row: dict, where: str) -> dict[str, list[str]]:
    """``caption_<lang>`` keys of a manifest row → ``{lang: [captions]}`` (empty values skipped)."""
    out: dict[str, list[str]] = {}
    for key, value in row.items():
        match = LANG_COLUMN.match(str(key))
        if match is None or value in (None, "", []):
            continue
        captions = _captions_of(value, f"{where} ({key})")
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


def _captions_of(value: object, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise ConfigError(f"{where}: captions must be a string or a list of strings")
    captions = [c.strip() for c in value if c.strip()]
    if not captions:
        raise ConfigError(f"{where}: no caption")
    return captions


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
            captions=_captions_of(row["captions"], where),
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
            captions=_captions_of(caps, where),
            split=_norm_split(str(row.get("split") or split or "train"), where),
            group=str(row.get("group") or clip_id),
            esc50=row.get("esc50") or None,
            start_s=float(row.get("start_s") or 0.0),
            duration_s=float(row["duration_s"]) if row.get("duration_s") not in (None, "") else None,
            captions_by_lang=_lang_captions_of(row, where),
        ))
    return clips


def load_clotho(root: str | Path) -> list[Clip]:
    """Clotho: every ``clotho_captions_<split>.csv`` in ``root``; audio in ``root/<split>/``."""
    root = Path(root)
    clips = []
    found = False
    for name, split in CLOTHO_SPLITS.items():
        csv_path = root / f"clotho_captions_{name}.csv"
        if not csv_path.is_file():
            continue
        found = True
        with open(csv_path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                caps = [row[k] for k in sorted(row) if k and k.startswith("caption_") and row[k]]
                file_name = row["file_name"]
                clips.append(Clip(
                    clip_id=f"{name}/{file_name}",
                    audio=str((root / name / file_name).resolve()),
                    captions=_captions_of(caps, f"{csv_path}:{file_name}"),
                    split=split,
                    group=f"{name}/{file_name}",
                ))
    if not found:
        raise ConfigError(f"no clotho_captions_{{development,validation,evaluation}}.csv in {root}")
    return clips


def _index_audio(folder: Path) -> dict[str, Path]:
    """Audio files of ``folder`` (recursive) by stem."""
    return {p.stem: p for p in sorted(folder.rglob("*")) if p.suffix.lower() in AUDIO_EXTENSIONS}


def load_audiocaps(root: str | Path, audio_dir: str | Path | None = None) -> list[Clip]:
    """AudioCaps CSVs in ``root``; audio in ``audio_dir`` (default ``root/audio``, else ``root``).

    A file is found by youtube id, ``<youtube_id>_<start>`` or audiocap id; rows without a file
    are skipped and counted in the log. Captions of one youtube clip are merged (multi-caption).
    """
    root = Path(root)
    folder = Path(audio_dir) if audio_dir else (root / "audio" if (root / "audio").is_dir() else root)
    files = _index_audio(folder)
    by_key: dict[tuple[str, str], Clip] = {}
    missing = 0
    found = False
    for name, split in AUDIOCAPS_SPLITS.items():
        csv_path = root / f"{name}.csv"
        if not csv_path.is_file():
            continue
        found = True
        with open(csv_path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                yt, cap_id, start = row["youtube_id"], row["audiocap_id"], row.get("start_time", "0")
                start_int = str(int(float(start or 0)))
                path = files.get(yt) or files.get(f"{yt}_{start_int}") or files.get(cap_id)
                if path is None:
                    missing += 1
                    continue
                key = (split, str(path))
                if key in by_key:
                    by_key[key].captions.append(row["caption"].strip())
                else:
                    by_key[key] = Clip(
                        clip_id=f"{yt}_{start_int}", audio=str(path.resolve()),
                        captions=_captions_of(row["caption"], f"{csv_path}:{cap_id}"),
                        split=split, group=yt,
                    )
    if not found:
        raise ConfigError(f"no train.csv / val.csv / test.csv in {root}")
    if missing:
        logger.warning("AudioCaps: skipped %d caption row(s) whose audio is not in %s", missing, folder)
    return list(by_key.values())


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
    if any((path / f"{n}.csv").is_file() for n in AUDIOCAPS_SPLITS):
        return "audiocaps"
    raise ConfigError(f"{path}: no manifest.jsonl, meta/esc50.csv, clotho_captions_*.csv or train/val/test.csv found")


def load_dataset(spec: str | Path, fmt: str | None = None) -> list[Clip]:
    """Load a dataset from a path; ``fmt`` (or a ``format:`` prefix, e.g. ``esc50:/data/ESC-50``)
    overrides the detection. Returns clips of every split."""
    text = str(spec)
    match = re.match(r"^(corpus|clotho|audiocaps|esc50|manifest):(.*)$", text)
    if match:
        fmt, text = match.group(1), match.group(2)
    path = Path(text).expanduser()
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown dataset format {fmt!r}; use one of {FORMATS}")
    if fmt == "corpus":
        clips = load_corpus_manifest(path / "manifest.jsonl" if path.is_dir() else path)
    elif fmt == "clotho":
        clips = load_clotho(path)
    elif fmt == "audiocaps":
        clips = load_audiocaps(path)
    elif fmt == "esc50":
        clips = load_esc50(path)
    else:
        clips = load_generic_manifest(path)
    ids = [c.clip_id for c in clips]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError(f"{spec}: duplicate clip id {dup!r}")
    logger.info("loaded %d clips from %s (%s)", len(clips), spec, fmt)
    return clips


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

