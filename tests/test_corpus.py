"""Tests of the corpus builder (``python -m training build-corpus``) on generated fixtures.

Nothing here downloads anything: package trees, the OpenSFX container and the sounds are
all written by the tests.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.test_corpus_everyday import TIER3_DROPS, TIER3_NAMES
from training.corpus import build as corpus_build
from training.corpus import debian
from training.corpus.captions import load_rules, match, parse_rules
from training.corpus.clip import ESC50_CLASSES, SourceClip
from training.corpus.grouping import default_group, stem_family
from training.corpus.segment import segment_bounds
from training.corpus.sources import (
    MODULES,
    flightgear,
    freeciv,
    get_source,
    openclonk,
    opensfx,
    unknown_horizons,
    widelands,
)
from training.corpus.splits import assign_splits, split_for_group

REQUIRED_KEYS = {
    "clip_id", "audio", "captions", "original_name", "package", "licence", "author",
    "group", "split", "esc50", "duration_s", "start_s", "speech",
}


# --------------------------------------------------------------------------- fixtures


def tone(seconds: float, rate: int = 16000, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def wav_bytes(seconds: float, rate: int = 16000, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone(seconds, rate, channels), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_sound(path: Path, seconds: float = 0.5, rate: int = 16000, channels: int = 1, freq: float = 440.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "OGG" if path.suffix == ".ogg" else "WAV"
    subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    sf.write(path, tone(seconds, rate, channels, freq), rate, format=fmt, subtype=subtype)


def make_cat(entries: list[tuple[str, bytes]]) -> bytes:
    """An opensfx.cat: (offset | 0x80000000, size) table, then length byte + name + RIFF data."""
    table_size = 8 * len(entries)
    body = b""
    table = b""
    for name, wav in entries:
        encoded = name.encode("latin-1") + b"\0"
        offset = table_size + len(body)
        table += struct.pack("<II", offset | 0x80000000, len(wav))
        body += bytes([len(encoded)]) + encoded + wav
    return table + body


def fake_tuxpaint(root: Path) -> None:
    stamps = root / "usr/share/tuxpaint/stamps"
    write_sound(stamps / "animals/mammals/bovines/cow.ogg", 0.6)
    write_sound(stamps / "animals/birds/rooster.ogg", 0.8, channels=2)
    write_sound(stamps / "animals/birds/rooster_desc.ogg", 0.8)  # spoken description: skipped
    write_sound(stamps / "symbols/a.ogg", 0.4)  # spoken letter: skipped
    write_sound(stamps / "animals/mammals/rodents/rabbit.ogg", 0.4)  # table says DROP
    (stamps / "animals/mammals/bovines/cow.txt").write_text("A cow.\n", encoding="utf-8")
    doc = root / "usr/share/doc/tuxpaint-stamps-default"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Files: *\nLicense: GPL-2+\n", encoding="utf-8")


WIDELANDS_DOCU = """Widelands Sound Documentation,,,,,,,,,,
,,,,,,,,,,
File Name,Format,Location,Usage,Author,License,reworked,Original File Name,Source,Orig. Format,BZR
,,,,,,,,,,
sawing_00.ogg,22050,sound/atlanteans/saw,x,dobroide,CC-3,yes,102844__dobroide__sawing.wav,http://example.invalid,44100,1
sawing_01.ogg,22050,sound/atlanteans/saw,x,dobroide,CC-3,yes,102844__dobroide__sawing.wav,http://example.invalid,44100,1
boar.ogg,11025,data/sound/animals,,UNKNOWN,personal,yes,Pig.wav,http://example.invalid,11025,1
wolf_00.ogg,11025,data/sound/animals,,UNKNOWN,,,Howl-5.wav,UNKNOWN,11025,1
"""


def fake_widelands(root: Path) -> None:
    data = root / "usr/share/games/widelands/data"
    write_sound(data / "sound/atlanteans/saw/sawing_00.ogg", 0.7)
    write_sound(data / "sound/atlanteans/saw/sawing_01.ogg", 0.7)
    write_sound(data / "sound/animals/boar.ogg", 0.5)
    write_sound(data / "sound/animals/wolf_00.ogg", 0.5)
    write_sound(data / "sound/animals/crickets1_00.ogg", 45.0, rate=8000)  # long: cut into segments
    write_sound(data / "sound/click.ogg", 0.2)
    (data / "sound/wl-sound-docu.csv").write_text(WIDELANDS_DOCU, encoding="utf-8")


@pytest.fixture()
def fake_trees(tmp_path: Path) -> dict[str, Path]:
    roots = {"tuxpaint-stamps-default": tmp_path / "tux", "widelands-data": tmp_path / "wl"}
    fake_tuxpaint(roots["tuxpaint-stamps-default"])
    fake_widelands(roots["widelands-data"])
    return roots


# --------------------------------------------------------------------------- OpenSFX container


def test_opensfx_cat_parses_names_credits_and_audio(tmp_path: Path) -> None:
    entries = [
        ('"Cow". Original "Cow - Moan 2.wav" by "Jarred Gib". Edited by "Wuzzy". '
         "License: Creative Commons Zero 1.0.", wav_bytes(0.5)),
        ('"Wind". Original "wind1.wav" by "Anton". Edited by Janis Lukss. '
         "License: Creative Commons Attribution 3.0 Unported.", wav_bytes(1.0, rate=22050, channels=2)),
        ('"Heavy wind". Original "wind1.wav" by "Anton". Edited by Janis Lukss. '
         "License: Creative Commons Attribution 3.0 Unported.", wav_bytes(1.0)),
    ]
    parsed = opensfx.read_cat(make_cat(entries))
    assert [e.title for e in parsed] == ["Cow", "Wind", "Heavy wind"]
    assert parsed[0].credit.startswith("Original")
    assert parsed[1].wav == entries[1][1]
    samples, rate = sf.read(io.BytesIO(parsed[1].wav))
    assert rate == 22050 and samples.shape == (22050, 2)

    clips = [c for c in opensfx.parse_entries(parsed) if isinstance(c, SourceClip)]
    by_title = {c.original_name.split(":", 1)[1]: c for c in clips}
    assert by_title["Cow"].licence == "CC0-1.0"
    assert by_title["Cow"].author == "Jarred Gib, Wuzzy"
    assert by_title["Cow"].esc50 == "cow"
    assert by_title["Wind"].licence == "CC-BY-3.0"
    # "Wind" and "Heavy wind" are edits of one recording: same group.
    assert by_title["Wind"].group == by_title["Heavy wind"].group != by_title["Cow"].group


def test_opensfx_rejects_entry_without_riff() -> None:
    broken = make_cat([('"X". License: Creative Commons Zero 1.0.', b"JUNKJUNK")])
    with pytest.raises(ValueError, match="RIFF"):
        opensfx.read_cat(broken)


# --------------------------------------------------------------------------- captions


@pytest.mark.parametrize(
    ("package", "name", "esc50", "word"),
    [
        ("0ad-data", "actor/fauna/animal/cattle_03.ogg", "cow", "cow"),
        ("0ad-data", "ambient/weather/rain_11.ogg", "rain", "rain"),
        ("0ad-data", "actor/singlesteps/fs_gravel_3.ogg", "footsteps", "gravel"),
        ("widelands-data", "sound/atlanteans/saw/sawing_01.ogg", "hand_saw", "saw"),
        ("tuxpaint-stamps-default", "animals/birds/rooster.ogg", "rooster", "rooster"),
        ("hedgewars-data", "voices/Default/Laugh.ogg", "laughing", "laugh"),
        ("supertuxkart-data", "sfx/horn.ogg", "car_horn", "horn"),
        ("openttd-opensfx", "steam train station departure", "train", "steam train"),
        ("openclonk-data", "environment/lightning/thunder3.ogg", "thunderstorm", "thunder"),
        ("openclonk-data", "animals/mosquitobuzz.ogg", "insects", "mosquito"),
        ("flightgear-data-base", "sounds/rain-windshield.wav", "rain", "windshield"),
        ("flightgear-data-base", "sounds/rotor.wav", "helicopter", "helicopter"),
        ("unknown-horizons", "chapel.ogg", "church_bells", "bells"),
        ("freeciv-data", "foot3.ogg", "footsteps", "footstep"),
        *TIER3_NAMES,
    ],
)
def test_caption_tables_map_representative_stems(package: str, name: str, esc50: str, word: str) -> None:
    found = match(load_rules(package), name)
    assert not found.dropped and found.rule is not None
    assert found.rule.esc50 == esc50
    assert any(word in caption for caption in found.rule.captions)


@pytest.mark.parametrize(
    ("package", "name"),
    [
        ("0ad-data", "attack/siege/siege_select_10.ogg"),
        ("hedgewars-data", "voices/Robot/Laugh.ogg"),
        ("supertuxkart-data", "sfx/sara_airport_pa.ogg"),
        ("tuxpaint-stamps-default", "space/apollo_lander.ogg"),
        ("tuxpaint-stamps-default", "no/such/stem.ogg"),
        ("openclonk-data", "clonk/skin/steampunk/laughter1.wav"),
        ("openclonk-data", "ui/click.wav"),
        ("openclonk-data", "animals/mooq/snort1.wav"),
        ("flightgear-data-base", "sounds/mk-viii/pull-up.wav"),
        ("flightgear-data-base", "sounds/tcas/female/climb.wav"),
        ("flightgear-data-base", "aircraft/c172p/sounds/checklist1.wav"),
        ("unknown-horizons", "events/scenario/win.ogg"),
        ("freeciv-data", "illegal.ogg"),
        *TIER3_DROPS,
    ],
)
def test_caption_tables_drop_speech_interface_and_unknown(package: str, name: str) -> None:
    assert match(load_rules(package), name).dropped


@pytest.mark.parametrize("package", sorted(MODULES))
def test_every_shipped_table_is_valid(package: str) -> None:
    source = get_source(package)  # every package of DATA.md has a parser
    assert source.package == package
    rules = load_rules(package)
    assert rules
    for rule in rules:
        assert rule.esc50 is None or rule.esc50 in ESC50_CLASSES
        if rule.drop_reason is None:
            assert rule.captions and all(c[0].islower() and len(c.split()) >= 2 for c in rule.captions)


def test_parse_rules_rejects_unknown_esc50_class() -> None:
    with pytest.raises(ValueError, match="ESC-50"):
        parse_rules(["pattern,esc50,cap,captions", "cow,moo_cow,,a cow moos"])


# --------------------------------------------------------------------------- groups and splits


def test_cut_families_share_a_group() -> None:
    assert {default_group(f"data/sound/saw/sawing_{i:02d}.ogg") for i in range(3)} == {"saw/sawing"}
    assert stem_family("bird1_00.ogg") != stem_family("bird2_00.ogg")
    assert stem_family("crash2.ogg") == stem_family("crash.ogg") == "crash"
    assert stem_family("Toyland: Sugar mine (2)") == stem_family("Toyland: Sugar mine (1)")
    assert default_group("a/cow.ogg") != default_group("b/cow.ogg")


def test_split_assignment_is_deterministic_and_roughly_proportional() -> None:
    groups = [f"pkg:group{i}" for i in range(3000)]
    first = assign_splits(groups)
    assert first == assign_splits(list(reversed(groups)))
    counts = Counter(first.values())
    assert abs(counts["train"] / 3000 - 0.8) < 0.03
    assert abs(counts["validation"] / 3000 - 0.1) < 0.03
    assert abs(counts["test"] / 3000 - 0.1) < 0.03
    assert split_for_group("pkg:group1", seed="other") in {"train", "validation", "test"}
    different = sum(split_for_group(g) != split_for_group(g, seed="other") for g in groups)
    assert different > 300  # the seed matters


def test_caps_keep_an_even_deterministic_subset(tmp_path: Path) -> None:
    clips = [
        SourceClip("p", f"steps/fs_{i:02d}.ogg", ["a step"], "CC0-1.0", None, f"g{i}", path=tmp_path,
                   cap_key="row3", cap=3)
        for i in range(10)
    ] + [SourceClip("p", f"cut/x_{i:02d}.ogg", ["a cut"], "CC0-1.0", None, "same", path=tmp_path) for i in range(12)]
    kept, dropped = corpus_build.apply_caps(clips, max_per_group=5)
    names = [c.original_name for c in kept]
    assert [n for n in names if n.startswith("steps/")] == ["steps/fs_00.ogg", "steps/fs_04.ogg", "steps/fs_09.ogg"]
    assert sum(n.startswith("cut/") for n in names) == 5
    assert len(dropped) == 7 + 7
    assert corpus_build.apply_caps(list(reversed(clips)), max_per_group=5)[0] == kept


# --------------------------------------------------------------------------- segmentation


def test_long_clip_is_cut_into_about_ten_second_segments() -> None:
    rate = 8000
    bounds = segment_bounds(45 * rate, rate)
    assert len(bounds) == 4
    assert bounds[0][0] == 0 and bounds[-1][1] == 45 * rate
    assert all(b[0] == a[1] for a, b in zip(bounds, bounds[1:], strict=False))
    assert all(10 * rate <= stop - start < 20 * rate for start, stop in bounds)
    assert segment_bounds(15 * rate, rate) == [(0, 15 * rate)]
    with pytest.raises(ValueError):
        segment_bounds(0, rate)


# --------------------------------------------------------------------------- parsers and build


def test_widelands_drops_unknown_and_personal_licences(fake_trees: dict[str, Path]) -> None:
    items = list(widelands.parse(fake_trees["widelands-data"]))
    clips = {i.original_name.rsplit("/", 1)[-1]: i for i in items if isinstance(i, SourceClip)}
    dropped = {i.original_name.rsplit("/", 1)[-1]: i.reason for i in items if not isinstance(i, SourceClip)}
    assert "personal" in dropped["boar.ogg"] and "unknown" in dropped["wolf_00.ogg"]
    assert "click.ogg" in dropped
    assert clips["sawing_00.ogg"].licence == "CC-BY-3.0" and clips["sawing_00.ogg"].author == "dobroide"
    assert clips["sawing_00.ogg"].group == clips["sawing_01.ogg"].group
    assert clips["crickets1_00.ogg"].licence == "GPL-2+"  # not in the sheet: package licence


def read_manifest(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def test_build_on_fake_trees_writes_complete_manifest(fake_trees: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    corpus_build.build(sorted(fake_trees), out, tmp_path / "cache", roots=fake_trees)
    rows = read_manifest(out)
    assert rows and all(set(row) == REQUIRED_KEYS for row in rows)
    names = {str(row["original_name"]).rsplit("/", 1)[-1] for row in rows}
    assert {"cow.ogg", "rooster.ogg", "sawing_00.ogg", "sawing_01.ogg", "crickets1_00.ogg"} <= names
    assert not names & {"rooster_desc.ogg", "a.ogg", "rabbit.ogg", "boar.ogg", "wolf_00.ogg", "click.ogg"}
    assert len({row["clip_id"] for row in rows}) == len(rows)
    for row in rows:
        assert row["split"] in {"train", "validation", "test"}
        assert row["speech"] is False
        assert isinstance(row["captions"], list) and row["captions"]
        info = sf.info(out / str(row["audio"]))
        assert info.channels == 1 and info.subtype == "PCM_16" and info.format == "FLAC"
        assert abs(info.duration - float(row["duration_s"])) < 0.01
    rooster = next(r for r in rows if str(r["original_name"]).endswith("rooster.ogg"))
    assert rooster["esc50"] == "rooster" and rooster["licence"] == "GPL-2+"
    # The 45 s cricket recording became 4 segments of one group, all in one split.
    crickets = sorted((r for r in rows if "crickets" in str(r["original_name"])), key=lambda r: float(r["start_s"]))
    assert len(crickets) == 4 and len({r["split"] for r in crickets}) == 1 and len({r["group"] for r in crickets}) == 1
    assert [round(float(r["start_s"]), 2) for r in crickets] == [0.0, 11.25, 22.5, 33.75]
    # No group in two splits.
    splits_of_group: dict[str, set[object]] = {}
    for row in rows:
        splits_of_group.setdefault(str(row["group"]), set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_of_group.values())
    # Attribution files.
    assert (out / "licenses" / "tuxpaint-stamps-default.copyright").read_text().startswith("Files: *")
    assert "rooster.ogg" in (out / "LICENSES.csv").read_text(encoding="utf-8")
    assert "boar.ogg" in (out / "dropped.csv").read_text(encoding="utf-8")
    assert "ESC-50 labelled rows" in (out / "SUMMARY.md").read_text(encoding="utf-8")


def test_build_is_idempotent(fake_trees: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    corpus_build.build(sorted(fake_trees), out, tmp_path / "cache", roots=fake_trees)
    first = (out / "manifest.jsonl").read_bytes()
    flac = sorted((out / "audio").rglob("*.flac"))
    mtimes = [p.stat().st_mtime_ns for p in flac]
    stale = out / "audio" / "widelands-data" / "widelands-old_clip.flac"
    shutil.copyfile(flac[0], stale)
    corpus_build.build(sorted(fake_trees), out, tmp_path / "cache", roots=fake_trees)
    assert (out / "manifest.jsonl").read_bytes() == first
    assert [p.stat().st_mtime_ns for p in flac] == mtimes  # existing audio is not rewritten
    assert not stale.exists()  # files of earlier runs that are no longer listed are removed


# --------------------------------------------------------------------------- Debian helpers


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not available")
def test_extract_takes_only_wanted_members_and_is_resumable(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: fake-sounds\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.invalid>\n"
        "Description: fake\n fake\n",
        encoding="utf-8",
    )
    write_sound(pkg / "usr/share/games/fake/sounds/cow.wav", 0.3)
    (pkg / "usr/share/games/fake/big.bin").write_bytes(b"x" * 1000)
    (pkg / "usr/share/doc/fake-sounds").mkdir(parents=True)
    (pkg / "usr/share/doc/fake-sounds/copyright").write_text("License: CC0-1.0\n", encoding="utf-8")
    debs = tmp_path / "debs"
    debs.mkdir()
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(debs / "fake-sounds_1.0_all.deb")],
                   check=True, capture_output=True)
    deb = debian.download("fake-sounds", debs)  # cached: no apt-get call
    target = tmp_path / "extracted"
    debian.extract(deb, target, ["./usr/share/games/fake/sounds/*"])
    assert (target / "usr/share/games/fake/sounds/cow.wav").is_file()
    assert not (target / "usr/share/games/fake/big.bin").exists()
    assert debian.copyright_file(target, "fake-sounds") is not None
    assert debian.is_done(target)
    (target / "usr/share/games/fake/sounds/cow.wav").unlink()
    debian.extract(deb, target, ["./usr/share/games/fake/sounds/*"])  # done marker: skipped
    assert not (target / "usr/share/games/fake/sounds/cow.wav").exists()


def test_very_long_recording_keeps_a_capped_even_set_of_segments(tmp_path: Path) -> None:
    path = tmp_path / "wind.wav"
    write_sound(path, 100.0, rate=8000)
    clip = SourceClip("p", "x/wind.wav", ["wind blows"], "CC0-1.0", None, "wind", esc50="wind", path=path)
    rows = corpus_build.convert_clip(clip, "p-wind", tmp_path / "out", "train")
    assert isinstance(rows, list)
    assert len(rows) == corpus_build.MAX_SEGMENTS_PER_RECORDING
    starts = [row.start_s for row in rows]
    assert starts == sorted(starts) and starts[0] == 0.0 and starts[-1] >= 80.0
    assert len({row.clip_id for row in rows}) == len(rows)
    assert all(row.group == "p:wind" and row.split == "train" and row.esc50 == "wind" for row in rows)


def test_exact_duplicates_are_dropped(tmp_path: Path) -> None:
    for name in ("a/day.wav", "b/day.wav", "c/night.wav"):
        write_sound(tmp_path / name, 0.3, freq=300.0 if "night" in name else 500.0)
    clips = [SourceClip("p", name, ["x y"], "CC0-1.0", None, name, path=tmp_path / name)
             for name in ("b/day.wav", "a/day.wav", "c/night.wav")]
    kept, dropped = corpus_build.drop_exact_duplicates(clips)
    assert [c.original_name for c in kept] == ["a/day.wav", "c/night.wav"]
    assert dropped[0].original_name == "b/day.wav" and "a/day.wav" in dropped[0].reason


def test_clip_ids_are_short_and_stable() -> None:
    clip = SourceClip("0ad-data", "usr/share/games/0ad/mods/public/public.zip:audio/ambient/weather/rain_11.ogg",
                      ["rain falls"], "CC-BY-SA-3.0", None, "g", data=b"x")
    assert corpus_build.clip_id_for(clip) == "0ad-ambient_weather_rain_11"


# --------------------------------------------------------------------------- second-tier parsers

OPENCLONK_SOUNDS = (
    "Animals.ocg/MosquitoBuzz.ogg",
    "Environment.ocg/Lightning.ocg/Thunder1.ogg",
    "Environment.ocg/Lightning.ocg/Thunder2.ogg",
    "Objects.ocg/Balloon.ocg/Pop.wav",
    "Liquids.ocg/Splash1.wav",
    "Liquids.ocg/Swim1.ogg",
    "Liquids.ocg/Bubble1.ogg",
    "Clonk.ocg/Skin.ocg/Adventurer.ocg/Laughter1.wav",
    "UI.ocg/Click.wav",
    "Animals.ocg/Mooq.ocg/Snort1.wav",
)


def fake_openclonk(root: Path) -> None:
    """An extracted tree after ``c4group Sound.ocg -x``: nested ``*.ocg`` folders."""
    base = root / openclonk.DATA_DIR / openclonk.ARCHIVE
    for index, name in enumerate(OPENCLONK_SOUNDS):
        write_sound(base / name, 0.4, freq=200.0 + 40 * index)
    (base / "authors.txt").write_text("If not stated otherwise ... CC Attribution 3.0\n", encoding="utf-8")


def fake_flightgear(root: Path) -> None:
    base = root / flightgear.DATA_DIR
    for index, name in enumerate((
        "Sounds/rain.wav", "Sounds/click2.wav", "Sounds/mk-viii/pull-up.wav", "Sounds/tcas/female/climb.wav",
        "Sounds/beep.wav", "Aircraft/c172p/Sounds/click2.wav", "Aircraft/c172p/Sounds/engine-idle.wav",
        "Aircraft/c172p/Sounds/checklist1.wav",
    )):
        write_sound(base / name, 0.5, freq=300.0 + 30 * index)
    (base / "Sounds/intro.mp3").write_bytes(b"ID3 not really an mp3")


def fake_unknown_horizons(root: Path) -> None:
    base = root / unknown_horizons.SOUND_DIR
    for index, name in enumerate(("chapel.ogg", "lumberjack.ogg", "lumberjack_long.ogg", "click.ogg",
                                  "events/scenario/win.ogg", "sheepfield.ogg")):
        write_sound(base / name, 0.5, freq=250.0 + 50 * index)


FREECIV_SPEC = '''[soundspec]
[info]
artists = "\\
 OpenQuartz - Frank Condello (pox@planetquake.com) [pox]\\
 Warzone - Eidos Entertainment (GPL release) [warzone]"

[files]
;b_generic = ""
f_generic = "stdsounds/woodbrk.ogg" ; [pox]
f_cruiser = "stdsounds/LrgCan.ogg" ; [warzone]
f_battleship = "stdsounds/LrgCan.ogg" ; [warzone]
m_generic = "stdsounds/foot3.ogg" ; [pox]
e_bad_command = "stdsounds/illegal.ogg" ; [fcol]
'''


def fake_freeciv(root: Path) -> None:
    base = root / freeciv.SOUND_DIR
    for index, name in enumerate(("woodbrk.ogg", "LrgCan.ogg", "foot3.ogg", "illegal.ogg")):
        write_sound(base / name, 0.4, freq=350.0 + 60 * index)
    (root / freeciv.SPEC).write_text(FREECIV_SPEC, encoding="utf-8")


def split_items(items: list[object]) -> tuple[dict[str, SourceClip], dict[str, str]]:
    """Parser output keyed by the name below the package's sound folder."""
    clips: dict[str, SourceClip] = {}
    dropped: dict[str, str] = {}
    for item in items:
        key = str(item.original_name).split("Sound.ocg/")[-1].split("flightgear/")[-1].rsplit("sounds/", 1)[-1]
        if isinstance(item, SourceClip):
            clips[key] = item
        else:
            dropped[key] = str(item.reason)
    return clips, dropped


def test_openclonk_parser_drops_voices_and_credits_each_file(tmp_path: Path) -> None:
    fake_openclonk(tmp_path)
    clips, dropped = split_items(list(openclonk.parse(tmp_path)))
    assert "voice" in dropped["Clonk.ocg/Skin.ocg/Adventurer.ocg/Laughter1.wav"]
    assert "interface" in dropped["UI.ocg/Click.wav"]
    assert "fantasy" in dropped["Animals.ocg/Mooq.ocg/Snort1.wav"]
    mosquito = clips["Animals.ocg/MosquitoBuzz.ogg"]
    assert mosquito.esc50 == "insects" and mosquito.licence == "CC0-1.0" and mosquito.author == "Zywx"
    assert clips["Objects.ocg/Balloon.ocg/Pop.wav"].licence == "CC0-1.0"
    thunder1 = clips["Environment.ocg/Lightning.ocg/Thunder1.ogg"]
    thunder2 = clips["Environment.ocg/Lightning.ocg/Thunder2.ogg"]
    assert thunder1.esc50 == thunder2.esc50 == "thunderstorm" and thunder1.licence == "CC-BY-3.0"
    assert thunder1.group != thunder2.group  # five different freesound recordings
    # Swim1-3 were made from Splash1-3: one recording, one group.
    assert clips["Liquids.ocg/Splash1.wav"].group == clips["Liquids.ocg/Swim1.ogg"].group
    bubble = clips["Liquids.ocg/Bubble1.ogg"]  # not in authors.txt: package licence
    assert bubble.licence == "CC-BY-3.0" and bubble.author == openclonk.DEFAULT_AUTHOR
    assert openclonk.rule_name("Animals.ocg/Bat.ocg/Flutter1.wav") == "animals/bat/flutter1.wav"


def test_openclonk_prepare_runs_the_helper_c4group(tmp_path: Path) -> None:
    root = tmp_path / "extracted" / "openclonk-data"
    archive = root / openclonk.DATA_DIR / openclonk.ARCHIVE
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"packed")
    tool = tmp_path / "extracted" / "openclonk" / "usr" / "bin" / "c4group"
    tool.parent.mkdir(parents=True)
    # A stand-in for c4group: "c4group NAME -x" replaces the packed file by a folder.
    tool.write_text(
        '#!/bin/sh\n[ "$2" = "-x" ] || exit 3\n'
        'rm "$1" && mkdir -p "$1/Fire.ocg" && echo x > "$1/Fire.ocg/Fire.ogg"\n'
    )
    tool.chmod(0o755)
    openclonk.unpack_sounds(root)
    assert (archive / "Fire.ocg" / "Fire.ogg").is_file()
    openclonk.unpack_sounds(root)  # already a folder: nothing to do
    tool.write_text("#!/bin/sh\nexit 1\n")
    broken = tmp_path / "other" / "openclonk-data"
    (broken / openclonk.DATA_DIR).mkdir(parents=True)
    (broken / openclonk.DATA_DIR / openclonk.ARCHIVE).write_bytes(b"packed")
    with pytest.raises((RuntimeError, FileNotFoundError)):
        openclonk.unpack_sounds(broken)
    assert get_source("openclonk-data").extra_debs == ("openclonk",)


def test_flightgear_parser_skips_voice_alerts_and_intro(tmp_path: Path) -> None:
    fake_flightgear(tmp_path)
    clips, dropped = split_items(list(flightgear.parse(tmp_path)))
    assert "voice" in dropped["Sounds/mk-viii/pull-up.wav"] and "voice" in dropped["Sounds/tcas/female/climb.wav"]
    assert "music" in dropped["Sounds/intro.mp3"]
    assert "Sounds/beep.wav" in dropped and "Aircraft/c172p/Sounds/checklist1.wav" in dropped
    assert clips["Sounds/rain.wav"].esc50 == "rain" and clips["Sounds/rain.wav"].licence == "GPL-2+"
    assert clips["Aircraft/c172p/Sounds/engine-idle.wav"].esc50 == "airplane"
    # The same file name in two folders is two recordings.
    assert clips["Sounds/click2.wav"].group != clips["Aircraft/c172p/Sounds/click2.wav"].group
    patterns = get_source("flightgear-data-base").patterns
    assert all("/Sounds/" in p for p in patterns)


def test_unknown_horizons_parser(tmp_path: Path) -> None:
    fake_unknown_horizons(tmp_path)
    clips, dropped = split_items(list(unknown_horizons.parse(tmp_path)))
    assert clips["chapel.ogg"].esc50 == "church_bells" and clips["sheepfield.ogg"].esc50 == "sheep"
    assert clips["lumberjack.ogg"].group == clips["lumberjack_long.ogg"].group
    assert "hazure" in str(clips["lumberjack.ogg"].author) and clips["chapel.ogg"].licence == "CC-BY-SA-3.0"
    assert "interface" in dropped["click.ogg"] and "jingle" in dropped["events/scenario/win.ogg"]


def test_freeciv_parser_takes_authors_from_the_soundspec(tmp_path: Path) -> None:
    fake_freeciv(tmp_path)
    assert freeciv.read_artists(FREECIV_SPEC) == {
        "woodbrk.ogg": "OpenQuartz - Frank Condello",
        "LrgCan.ogg": "Warzone - Eidos Entertainment (GPL release)",
        "foot3.ogg": "OpenQuartz - Frank Condello",
    }
    clips, dropped = split_items(list(freeciv.parse(tmp_path)))
    assert clips["foot3.ogg"].esc50 == "footsteps" and clips["LrgCan.ogg"].licence == "GPL-2+"
    assert clips["woodbrk.ogg"].author == "OpenQuartz - Frank Condello"
    assert "interface" in dropped["illegal.ogg"]


def test_build_with_second_tier_packages(tmp_path: Path) -> None:
    roots = {
        "openclonk-data": tmp_path / "oc", "flightgear-data-base": tmp_path / "fg",
        "unknown-horizons": tmp_path / "uh", "freeciv-data": tmp_path / "fc",
    }
    fake_openclonk(roots["openclonk-data"])
    fake_flightgear(roots["flightgear-data-base"])
    fake_unknown_horizons(roots["unknown-horizons"])
    fake_freeciv(roots["freeciv-data"])
    out = tmp_path / "corpus"
    corpus_build.build(sorted(roots), out, tmp_path / "cache", roots=roots)
    rows = read_manifest(out)
    assert {row["package"] for row in rows} == set(roots)
    ids = {str(row["clip_id"]) for row in rows}
    assert len(ids) == len(rows) and all(len(i) <= 80 for i in ids)
    assert {"openclonk-animals_ocg_mosquitobuzz", "flightgear_base-sounds_rain",
            "flightgear_base-aircraft_c172p_sounds_engine_idle", "unknown_horizons-chapel",
            "freeciv-foot3"} <= ids
    assert not any("pull_up" in i or "laughter" in i or "intro" in i for i in ids)
    dropped = (out / "dropped.csv").read_text(encoding="utf-8")
    assert "Laughter1.wav" in dropped and "pull-up.wav" in dropped and "intro.mp3" in dropped
