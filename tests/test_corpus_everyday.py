"""Tests of the tier-3 corpus packages of issue 14 (real recordings of everyday sounds):
``scratch``, ``scorched3d-data``, ``lugaru-data`` and ``simutrans-pak64``, and of the
"ESC-50 classes with fewer than 10 training clips" report (``python -m training.corpus.summary``).

Nothing is downloaded: every package tree is written by the tests with short sine tones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import write_tone
from training.corpus import build as corpus_build
from training.corpus.clip import SourceClip
from training.corpus.sources import get_source, lugaru, scorched3d, scratch, simutrans
from training.corpus.splits import split_for_group
from training.corpus.summary import format_few_clips
from training.corpus.summary import main as summary_main

NEW_PACKAGES = ("scratch", "scorched3d-data", "lugaru-data", "simutrans-pak64")

#: Caption-table cases of the tier-3 tables, run by tests/test_corpus.py's table tests.
TIER3_NAMES = [
        ("scratch", "human/babycry.mp3", "crying_baby", "baby"),
        ("scratch", "human/sneeze-female.wav", "sneezing", "sneezes"),
        ("scratch", "human/slurp.mp3", "drinking_sipping", "slurps"),
        ("scratch", "effects/typing.mp3", "keyboard_typing", "keyboard"),
        ("scratch", "effects/doorcreak.wav", "door_wood_creaks", "creaks"),
        ("scratch", "animal/kitten.wav", "cat", "kitten"),
        ("scorched3d-data", "none/data/wav/misc/frogs.wav", "frog", "frogs"),
        ("scorched3d-data", "none/data/wav/misc/oceanwaves.wav", "sea_waves", "waves"),
        ("lugaru-data", "bark3.ogg", "dog", "dog"),
        ("lugaru-data", "footstepsnow2.ogg", "footsteps", "snow"),
        ("simutrans-pak64", "tree-cutting.wav", "chainsaw", "chainsaw"),
        ("simutrans-pak64", "steam.wav", "train", "steam"),
]
TIER3_DROPS = [
        ("scratch", "vocals/come-and-play.mp3"),
        ("scratch", "music loops/drumset1.mp3"),
        ("scratch", "electronic/computerbeeps1.wav"),
        ("scratch", "instruments/trumpet1.wav"),
        ("scorched3d-data", "none/data/wav/misc/beep.wav"),
        ("scorched3d-data", "none/data/wav/shield/activate.wav"),
        ("lugaru-data", "music1grass.ogg"),
        ("lugaru-data", "rabbitchitter.ogg"),
        ("lugaru-data", "consolefail.ogg"),
        ("simutrans-pak64", "click.wav"),
]


def write_sounds(base: Path, names: list[str], seconds: float = 0.5) -> None:
    """One distinct tone per file (distinct bytes, so no file is dropped as a duplicate)."""
    for index, name in enumerate(names):
        write_tone(base / name, freq=220.0 + 37.0 * index, seconds=seconds, sr=22050)


def fake_scratch(root: Path) -> None:
    write_sounds(root / scratch.SOUND_DIR, [
        "Animal/Dog1.wav", "Animal/Dog2.wav", "Animal/Cat.mp3", "Human/BabyCry.mp3", "Human/Sneeze-male.wav",
        "Effects/Typing.mp3", "Electronic/Laser1.wav", "Music Loops/Techno.mp3", "Vocals/Ya.wav",
        "Percussion/HandClap.wav",
    ])
    (root / scratch.SOUND_DIR / "readme.txt").write_text("not a sound\n", encoding="utf-8")


def fake_scorched3d(root: Path) -> None:
    base = root / scorched3d.MODS_DIR
    write_sounds(base, [
        "none/data/wav/misc/frogs.wav", "none/data/wav/misc/oceanwaves.wav", "none/data/wav/misc/thunder.wav",
        "none/data/wav/misc/thunder2.wav", "none/data/wav/misc/teleport.wav", "none/data/wav/shield/hit.wav",
        "none/data/wav/misc/apache_1.wav", "apoc/data/wav/misc/dog.wav", "apoc/data/wav/misc/carhorn1.wav",
    ])
    write_tone(base / "none/data/wav/misc/birds1.wav", freq=900.0, seconds=45.0, sr=8000)  # cut into segments


def fake_lugaru(root: Path) -> None:
    write_sounds(root / lugaru.SOUND_DIR, [
        "Bark.ogg", "Bark2.ogg", "FootStepSnow1.ogg", "Fire.ogg", "Music2.ogg", "RabbitPain.ogg", "Whoosh.ogg",
    ])


def fake_simutrans(root: Path) -> None:
    write_sounds(root / simutrans.SOUND_DIR, ["tree-cutting.wav", "horse.wav", "click.wav", "steam.wav"])


def parse_all(package: str, root: Path) -> tuple[dict[str, SourceClip], dict[str, str]]:
    """Parser output keyed by the file name (last path component)."""
    clips: dict[str, SourceClip] = {}
    dropped: dict[str, str] = {}
    for item in get_source(package).parse(root):
        name = item.original_name.rsplit("/", 1)[-1]
        if isinstance(item, SourceClip):
            clips[name] = item
        else:
            dropped[name] = item.reason
    return clips, dropped


def test_scratch_parser_reads_mp3_and_drops_music_and_synth(tmp_path: Path) -> None:
    fake_scratch(tmp_path)
    clips, dropped = parse_all("scratch", tmp_path)
    assert set(clips) == {"Dog1.wav", "Dog2.wav", "Cat.mp3", "BabyCry.mp3", "Sneeze-male.wav", "Typing.mp3"}
    assert clips["BabyCry.mp3"].esc50 == "crying_baby" and clips["Typing.mp3"].esc50 == "keyboard_typing"
    assert clips["Cat.mp3"].licence == "CC-BY-SA-3.0" and "Massachusetts" in str(clips["Cat.mp3"].author)
    assert clips["Dog1.wav"].group == clips["Dog2.wav"].group == "animal/dog"  # one family, one split
    assert "synthesised" in dropped["Laser1.wav"] and "music" in dropped["Techno.mp3"]
    assert "singing" in dropped["Ya.wav"] and "percussion" in dropped["HandClap.wav"]
    assert "readme.txt" not in dropped


def test_scorched3d_parser_drops_the_mod_of_unknown_origin(tmp_path: Path) -> None:
    fake_scorched3d(tmp_path)
    clips, dropped = parse_all("scorched3d-data", tmp_path)
    assert "unknown origin" in dropped["dog.wav"] and "unknown origin" in dropped["carhorn1.wav"]
    assert "science-fiction" in dropped["teleport.wav"] and "science-fiction" in dropped["hit.wav"]
    assert clips["frogs.wav"].esc50 == "frog" and clips["apache_1.wav"].esc50 == "helicopter"
    assert clips["thunder.wav"].group == clips["thunder2.wav"].group == "misc/thunder"
    assert all(c.licence == "GPL-2+" and c.author == scorched3d.AUTHOR for c in clips.values())
    assert all("/none/" in c.original_name for c in clips.values())


def test_lugaru_and_simutrans_parsers(tmp_path: Path) -> None:
    fake_lugaru(tmp_path / "lugaru")
    clips, dropped = parse_all("lugaru-data", tmp_path / "lugaru")
    assert set(clips) == {"Bark.ogg", "Bark2.ogg", "FootStepSnow1.ogg", "Fire.ogg"}
    assert clips["Bark.ogg"].group == clips["Bark2.ogg"].group and clips["Fire.ogg"].esc50 == "crackling_fire"
    assert clips["Bark.ogg"].licence == "CC-BY-SA-3.0" and clips["Bark.ogg"].author == "Wolfire Games"
    assert "music" in dropped["Music2.ogg"] and "fantasy" in dropped["RabbitPain.ogg"] and "Whoosh.ogg" in dropped
    fake_simutrans(tmp_path / "simutrans")
    clips, dropped = parse_all("simutrans-pak64", tmp_path / "simutrans")
    assert clips["tree-cutting.wav"].esc50 == "chainsaw" and clips["horse.wav"].esc50 is None
    assert clips["steam.wav"].licence == "Artistic-1.0" and "interface" in dropped["click.wav"]


def test_new_packages_are_tier_three_and_extract_only_sounds() -> None:
    for package in NEW_PACKAGES:
        source = get_source(package)
        assert source.tier == 3 and source.package == package
        assert all(p.startswith("./usr/share/") and p.endswith("*") for p in source.patterns)
    assert corpus_build.select_packages(None, "3") == list(NEW_PACKAGES)
    assert not set(NEW_PACKAGES) & set(corpus_build.select_packages(None, "2"))


def test_build_with_the_everyday_packages(tmp_path: Path) -> None:
    makers = {"scratch": fake_scratch, "scorched3d-data": fake_scorched3d,
              "lugaru-data": fake_lugaru, "simutrans-pak64": fake_simutrans}
    roots = {package: tmp_path / package for package in NEW_PACKAGES}
    for package, make in makers.items():
        make(roots[package])
    out = tmp_path / "corpus"
    rows = corpus_build.build(list(NEW_PACKAGES), out, tmp_path / "cache", roots=roots)
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(manifest) == len(rows) and {r["package"] for r in manifest} == set(NEW_PACKAGES)
    ids = {str(r["clip_id"]) for r in manifest}
    assert {"scratch-animal_dog1", "scratch-human_babycry", "scorched3d-wav_misc_frogs", "lugaru-bark",
            "simutrans_pak64-tree_cutting"} <= ids
    segments = sorted(i for i in ids if i.startswith("scorched3d-wav_misc_birds1-seg"))
    assert 2 <= len(segments) <= corpus_build.MAX_SEGMENTS_PER_RECORDING  # 45 s ambience cut into segments
    for row in manifest:
        assert (out / str(row["audio"])).is_file()
        assert row["split"] == split_for_group(str(row["group"]), corpus_build.DEFAULT_SEED)
    birds = {r["split"] for r in manifest if str(r["clip_id"]).startswith("scorched3d-wav_misc_birds1")}
    assert len(birds) == 1  # segments keep their recording's split
    dropped = (out / "dropped.csv").read_text(encoding="utf-8")
    assert "apoc/data/wav/misc/dog.wav" in dropped and "Techno.mp3" in dropped
    licences = (out / "LICENSES.csv").read_text(encoding="utf-8")
    assert "Wolfire Games" in licences and "Artistic-1.0" in licences and "CC-BY-SA-3.0" in licences


def write_manifest(path: Path, rows: list[tuple[str, str, str | None]]) -> Path:
    """A minimal manifest: (package, split, esc50) per row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"clip_id": f"c{i}", "package": p, "split": s, "esc50": e}) for i, (p, s, e) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_few_clip_report_counts_train_rows_before_and_after(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old_rows: list[tuple[str, str, str | None]] = [("a", "train", "dog")] * 3 + [("a", "test", "dog")] * 20
    old_rows += [("a", "train", "rain")] * 12 + [("a", "train", None)]
    new_rows = old_rows + [("b", "train", "dog")] * 8 + [("b", "train", "cat")] * 2
    before = write_manifest(tmp_path / "old.jsonl", old_rows)
    after = write_manifest(tmp_path / "new.jsonl", new_rows)
    text = format_few_clips(before, after)
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert [cell.strip() for cell in lines["dog"].split("|")[2:6]] == ["3", "11", "8", ""]
    assert [cell.strip() for cell in lines["cat"].split("|")[2:6]] == ["0", "2", "2", "yes"]
    assert "rain" not in lines  # 12 training rows before and after
    assert "Before" in text and "49 classes" in text and "new packages: b" in text
    assert summary_main(["--before", str(before), "--after", str(after)]) == 0
    assert capsys.readouterr().out == text
