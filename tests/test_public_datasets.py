"""AudioCaps, Clotho and WavCaps in their published layouts (small fake copies generated here),
the loading report, the bad-input errors, and dataset sampling weights."""

from __future__ import annotations

import csv
import json
import logging
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from atr_demo.errors import ConfigError, DataError

from tests.helpers import write_tone
from training.config import TrainConfig
from training.datasets import detect_format, load_dataset, parse_data_spec, read_dataset, split_clips
from training.evaluate import load_eval_clips
from training.formats.audiocaps import name_candidates
from training.prepare import prepare_data
from training.sampling import data_weights, epoch_items

TONE_S = 0.1  # seconds of audio per fake clip: the loaders never decode more than a header


def tone(path: Path, freq: float = 440.0) -> Path:
    return write_tone(path, freq=freq, seconds=TONE_S)


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# -- AudioCaps -----------------------------------------------------------------------------------

AC_HEADER = ["audiocap_id", "youtube_id", "start_time", "caption"]
#: split → [(youtube id, start s, first audiocap id, captions)]; real ids are 11 characters of
#: [A-Za-z0-9_-] (one starts with Y, one is all digits).
AC_CLIPS = {
    "train": [("a-b_cdefghi", 30, 101, 1), ("Yx_9-zzzzzz", 0, 102, 1), ("01234567890", 120, 103, 1)],
    "val": [("vvvvvvvvvv1", 10, 201, 5)],
    "test": [("tttt-tttt_1", 40, 301, 5), ("YYtttttttt2", 250, 311, 5)],
}
AC_SPLIT = {"train": "train", "val": "validation", "test": "test"}


def write_audiocaps_csvs(root: Path) -> None:
    for name, clips in AC_CLIPS.items():
        rows = [[cap + k, yt, start, f"{name} {yt} caption {k}"] for yt, start, cap, n in clips for k in range(n)]
        write_csv(root / f"{name}.csv", AC_HEADER, rows)


def ac_file_name(naming: str, yt: str, start: int, cap_id: int) -> str:
    return {
        "ytid": f"{yt}.wav",
        "Y_ytid": f"Y{yt}.flac",
        "ytid_start": f"{yt}_{start}.wav",
        "ytid_start_end": f"{yt}_{start}_{start + 10}.ogg",
        "ytid_ms": f"{yt}_{start * 1000}_{(start + 10) * 1000}.wav",
        "Y_ytid_decimals": f"Y{yt}_{start}.000_{start + 10}.000.flac",
        "audiocap_id": f"{cap_id}.wav",
    }[naming]


def ac_folder(layout: str, name: str) -> str:
    return {"flat": "", "split": f"{name}/", "audio_split": f"audio/{'validation' if name == 'val' else name}/",
            "audio": "audio/"}[layout]


@pytest.mark.parametrize("layout", ["flat", "split", "audio_split"])
@pytest.mark.parametrize(
    "naming", ["ytid", "Y_ytid", "ytid_start", "ytid_start_end", "ytid_ms", "Y_ytid_decimals", "audiocap_id"]
)
def test_audiocaps_namings_and_layouts(tmp_path: Path, naming: str, layout: str) -> None:
    write_audiocaps_csvs(tmp_path)
    for name, clips in AC_CLIPS.items():
        for yt, start, cap, n in clips:
            # a val/test clip named by an audiocap id is named by its 4th one (of 5)
            file = ac_file_name(naming, yt, start, cap + 3 if n == 5 else cap)
            tone(tmp_path / (ac_folder(layout, name) + file))
    loaded = read_dataset(tmp_path)
    clips, report = loaded.clips, loaded.report
    assert report.format == "audiocaps"
    for name, expected in AC_CLIPS.items():
        split = AC_SPLIT[name]
        got = {c.clip_id: c for c in split_clips(clips, split)}
        assert sorted(got) == sorted(f"{yt}_{start}" for yt, start, _, _ in expected)
        for yt, start, _, n in expected:
            clip = got[f"{yt}_{start}"]
            assert len(clip.captions) == n and Path(clip.audio).is_file() and clip.group == yt
        assert report.splits[split].clips == len(expected)
        assert report.splits[split].captions == sum(n for *_, n in expected)
        assert report.splits[split].skipped_total == 0
    # every test clip keeps its five captions: 2 clips → 10 captions, not 2 + 5 − 1
    test = load_eval_clips([str(tmp_path)], "test")
    assert sum(len(c.captions) for c in test) == 10


def test_audiocaps_name_candidates() -> None:
    assert ("abcdefghijk", ()) in name_candidates("Yabcdefghijk")
    assert ("abc_def-ghi", (30.0, 0.03)) in name_candidates("Yabc_def-ghi_30.000_40.000")
    assert ("abc_def-ghi", (30000.0, 30.0)) in name_candidates("abc_def-ghi_30000_40000")
    assert name_candidates("abc")[0] == ("abc", ())


def test_audiocaps_start_time_picks_the_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", AC_HEADER, [[1, "samevideo01", 30, "first"], [2, "samevideo01", 90, "second"]])
    a = tone(tmp_path / "samevideo01_30000_40000.wav", 300)
    b = tone(tmp_path / "samevideo01_90000_100000.wav", 600)
    tone(tmp_path / "samevideo01_150000_160000.wav", 900)  # a segment no row names
    clips = {c.captions[0]: c for c in load_dataset(tmp_path)}
    assert Path(clips["first"].audio) == a.resolve() and Path(clips["second"].audio) == b.resolve()
    # one file of a youtube id whose start time is off: used (and noted) unless it names another clip
    write_csv(tmp_path / "train.csv", AC_HEADER, [[1, "samevideo01", 30, "first"], [2, "samevideo01", 60, "third"],
                                                  [3, "othervideo1", 30, "other"]])
    (tmp_path / "samevideo01_30000_40000.wav").unlink()
    tone(tmp_path / "othervideo1_31.wav")
    loaded = read_dataset(tmp_path)
    assert [c.captions for c in loaded.clips] == [["other"]]
    assert loaded.report.splits["train"].skipped == Counter({"only other start times on disk": 2})
    assert "othervideo1_30 → othervideo1_31.wav" in loaded.report.table()


def test_audiocaps_file_in_another_split_folder_is_not_used(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", AC_HEADER, [[1, "trainclip01", 0, "a dog"], [2, "elsewhere01", 0, "a cat"]])
    tone(tmp_path / "train" / "trainclip01.wav")
    tone(tmp_path / "test" / "elsewhere01.wav")
    loaded = read_dataset(tmp_path)
    assert [c.clip_id for c in loaded.clips] == ["trainclip01_0"]
    assert loaded.report.splits["train"].skipped == Counter({"audio not found": 1})
    assert any("1 audio file(s)" in n and "elsewhere01.wav" in n for n in loaded.report.notes)


def test_audiocaps_missing_audio_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_audiocaps_csvs(tmp_path)
    for clips in AC_CLIPS.values():
        for yt, start, _, _ in clips[:1]:  # the second test clip and two train clips are missing
            tone(tmp_path / f"{yt}_{start}.wav")
    with caplog.at_level(logging.INFO):
        loaded = read_dataset(tmp_path)
    assert loaded.report.splits["test"].clips == 1 and loaded.report.splits["test"].skipped == Counter(
        {"audio not found": 5})
    assert loaded.report.splits["train"].skipped_total == 2
    assert "skipped 5 caption row(s) of the test split" in caplog.text and "not comparable" in caplog.text
    table = loaded.report.table()
    assert "| test | 1 | 5 | 5 | audio not found: 5 |" in table and "YYtttttttt2_250" in table


def test_audiocaps_bad_input(tmp_path: Path) -> None:
    root = tmp_path / "missing_column"
    write_csv(root / "train.csv", ["audiocap_id", "youtube_id", "caption"], [[1, "x", "a"]])
    with pytest.raises(DataError, match=r"train\.csv: missing column\(s\) start_time"):
        load_dataset(root)

    root = tmp_path / "duplicate"
    write_csv(root / "train.csv", AC_HEADER, [[1, "aaaaaaaaaaa", 0, "a"], [1, "bbbbbbbbbbb", 0, "b"]])
    tone(root / "aaaaaaaaaaa.wav")
    with pytest.raises(DataError, match=r"train\.csv:3: duplicate audiocap_id 1 \(first at .*train\.csv:2\)"):
        load_dataset(root)

    root = tmp_path / "empty"
    write_csv(root / "train.csv", AC_HEADER, [])
    with pytest.raises(DataError, match="the train split has no rows"):
        load_dataset(root)

    root = tmp_path / "no_audio"
    write_csv(root / "train.csv", AC_HEADER, [[1, "aaaaaaaaaaa", 0, "a"]])
    tone(root / "unrelated.wav")
    with pytest.raises(DataError, match=r"none of the 1 train row\(s\) found its audio; name the files"):
        load_dataset(root)

    root = tmp_path / "four_captions"
    write_csv(root / "test.csv", AC_HEADER, [[i, "ttttttttttt", 0, f"c{i}"] for i in range(4)])
    tone(root / "ttttttttttt.wav")
    with pytest.raises(DataError, match=r"do not have the protocol's 5 captions: ttttttttttt_0 \(4\)"):
        load_dataset(root)

    root = tmp_path / "bad_start"
    write_csv(root / "train.csv", AC_HEADER, [[1, "aaaaaaaaaaa", "soon", "a"]])
    with pytest.raises(DataError, match="start_time 'soon' is not a number"):
        load_dataset(root)


def test_unreadable_clip(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", AC_HEADER, [[1, "good0000000", 0, "a"], [2, "broken00000", 0, "b"]])
    write_csv(tmp_path / "test.csv", AC_HEADER, [[10 + i, "testclip000", 0, f"t{i}"] for i in range(5)])
    tone(tmp_path / "good0000000.wav")
    (tmp_path / "broken00000.wav").write_bytes(b"RIFF....WAVEjunk" * 4)
    (tmp_path / "testclip000.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"1 validation/test clip\(s\) cannot be read: .*testclip000\.wav \(empty"):
        load_dataset(tmp_path)
    tone(tmp_path / "testclip000.wav")
    loaded = read_dataset(tmp_path, check_audio="all")
    assert sorted(c.clip_id for c in loaded.clips) == ["good0000000_0", "testclip000_0"]
    assert loaded.report.splits["train"].skipped == Counter({"unreadable audio": 1})
    assert len(load_dataset(tmp_path)) == 3  # training clips are not probed by default


# -- Clotho --------------------------------------------------------------------------------------

CLOTHO_NAMES = {
    "development": ["plain.wav", "with space, comma (1).wav", 'quote "double" and \'single\'.wav'],
    "validation": ["Café bells.wav"],
    "evaluation": ["rain; drops [loud].wav", "naïve façade.wav"],
}
CLOTHO_HEADER = ["file_name", *(f"caption_{i}" for i in range(1, 6))]


def write_clotho(root: Path, folders: dict[str, str] | None = None) -> None:
    folders = folders or {}
    for split, names in CLOTHO_NAMES.items():
        rows = [[name, *(f"{split} {name} caption {k}" for k in range(1, 6))] for name in names]
        write_csv(root / f"clotho_captions_{split}.csv", CLOTHO_HEADER, rows)
        for name in names:
            # the disk stores decomposed (NFD) names, as macOS writes them; the CSV is NFC
            tone(root / folders.get(split, split) / unicodedata.normalize("NFD", name))


def test_clotho_weird_names_and_folders(tmp_path: Path) -> None:
    write_clotho(tmp_path, {"validation": "clotho_audio_validation",
                            "evaluation": "clotho_audio_evaluation/evaluation"})
    loaded = read_dataset(tmp_path)
    assert loaded.report.format == "clotho"
    by_split = {s: sorted(c.clip_id for c in split_clips(loaded.clips, s)) for s in ("train", "validation", "test")}
    assert by_split == {
        "train": sorted(f"development/{n}" for n in CLOTHO_NAMES["development"]),
        "validation": ["validation/Café bells.wav"],
        "test": sorted(f"evaluation/{n}" for n in CLOTHO_NAMES["evaluation"]),
    }
    assert all(len(c.captions) == 5 and Path(c.audio).is_file() for c in loaded.clips)
    assert loaded.report.splits["test"].captions == 10


def test_clotho_bad_input(tmp_path: Path) -> None:
    write_clotho(tmp_path)
    (tmp_path / "evaluation" / unicodedata.normalize("NFD", "naïve façade.wav")).unlink()
    with pytest.raises(DataError, match=r"clotho_captions_evaluation\.csv: 1 of 2 file\(s\) are not in .*naïve façade"):
        load_dataset(tmp_path)
    tone(tmp_path / "evaluation" / "naïve façade.wav")
    (tmp_path / "development" / "plain.wav").unlink()
    loaded = read_dataset(tmp_path)
    assert loaded.report.splits["train"].skipped == Counter({"audio not found": 1})

    rows = [["rain; drops [loud].wav", "a", "b", "c", "d", ""], ["naïve façade.wav", *"abcde"]]
    write_csv(tmp_path / "clotho_captions_evaluation.csv", CLOTHO_HEADER, rows)
    with pytest.raises(DataError, match=r"protocol's 5 captions: evaluation/rain; drops \[loud\]\.wav \(4\)"):
        load_dataset(tmp_path)

    write_csv(tmp_path / "clotho_captions_evaluation.csv", CLOTHO_HEADER, [rows[1], rows[1]])
    with pytest.raises(DataError, match="duplicate file_name 'naïve façade.wav' \\(first on line 2\\)"):
        load_dataset(tmp_path)

    write_csv(tmp_path / "clotho_captions_evaluation.csv", CLOTHO_HEADER[:5], [r[:5] for r in rows])
    with pytest.raises(DataError, match=r"missing column\(s\) caption_5"):
        load_dataset(tmp_path)

    other = tmp_path / "no_folder"
    write_csv(other / "clotho_captions_validation.csv", CLOTHO_HEADER, [rows[1]])
    with pytest.raises(DataError, match=r"has no audio folder: .*unpack clotho_audio_validation\.7z"):
        load_dataset(other)


# -- WavCaps -------------------------------------------------------------------------------------

WAVCAPS = {  # source → json file, entries (id, caption) and where its audio goes (None: absent)
    "AudioSet_SL": ("as_final.json", [("Yaaaaaaaaaaa.wav", "a dog barks", "AudioSet_SL_flac/Yaaaaaaaaaaa.flac"),
                                      ("Ybbbbbbbbbbb.wav", "rain falls", "as/bbbbbbbbbbb.wav"),
                                      ("Ycccccccccc_.wav", "an engine runs", None)]),
    "FreeSound": ("fsd_final.json", [("123", "a bell rings", "FreeSound_flac/part1/123.flac"),
                                     ("456", "a bird sings", "FreeSound_flac/part2/456.flac")]),
    "SoundBible": ("sb_final.json", [("123", "thunder", "SoundBible_flac/123.flac")]),
    "BBC_Sound_Effects": ("bbc_final.json", [("07070001", "a train passes", "bbc/nested/07070001.wav")]),
}


def write_wavcaps(root: Path, blacklist: bool) -> None:
    for source, (name, entries) in WAVCAPS.items():
        data = [{"id": i, "caption": c, "duration": TONE_S, "description": "x"} for i, c, _ in entries]
        path = root / "json_files" / source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"num_captions_per_audio": 1, "data": data}), encoding="utf-8")
        for _, _, audio in entries:
            if audio:
                tone(root / audio)
    if blacklist:
        folder = root / "json_files" / "blacklist"
        folder.mkdir(parents=True)
        (folder / "blacklist_exclude_test_ac.json").write_text(
            json.dumps({"AudioSet": ["Yaaaaaaaaaaa.wav"], "FreeSound": ["456"]}))
        (folder / "blacklist_exclude_ub8k_esc50_vggsound.json").write_text(
            json.dumps({"AudioSet": ["Yzzzzzzzzzzz.wav"], "FreeSound": []}))


def test_wavcaps_with_the_release_blacklist(tmp_path: Path) -> None:
    write_wavcaps(tmp_path, blacklist=True)
    assert detect_format(tmp_path) == "wavcaps"
    loaded = read_dataset(tmp_path)
    ids = sorted(c.clip_id for c in loaded.clips)
    assert ids == ["AudioSet_SL/Ybbbbbbbbbbb", "BBC_Sound_Effects/07070001", "FreeSound/123", "SoundBible/123"]
    assert {c.split for c in loaded.clips} == {"train"}
    by_id = {c.clip_id: Path(c.audio) for c in loaded.clips}
    assert by_id["FreeSound/123"].parent.name == "part1" and by_id["SoundBible/123"].parent.name == "SoundBible_flac"
    report = loaded.report
    assert report.excluded == {"AudioSet_SL": 1, "FreeSound": 1, "SoundBible": 0, "BBC_Sound_Effects": 0}
    assert report.splits["train"].skipped == Counter({"audio not found": 1})
    assert any("blacklist_exclude_test_ac.json" in n for n in report.notes)
    assert "excluded by exclusion lists: AudioSet_SL 1, BBC_Sound_Effects 0, FreeSound 1" in report.table()


def test_wavcaps_without_blacklist_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_wavcaps(tmp_path, blacklist=False)
    with caplog.at_level(logging.WARNING):
        loaded = read_dataset(f"wavcaps:{tmp_path}")
    assert len(loaded.clips) == 6 and loaded.report.excluded == {}
    assert "NOT excluded from training" in caplog.text
    assert any(n.startswith("WARNING") for n in loaded.report.notes)
    # a list given as an option replaces the release's folder
    given = tmp_path / "my_list.json"
    given.write_text(json.dumps({"FreeSound": ["123"]}))
    clips = load_dataset(tmp_path, wavcaps_blacklist=[str(given)])
    assert "FreeSound/123" not in {c.clip_id for c in clips} and len(clips) == 5
    with pytest.raises(DataError, match="exclusion list .*nope.json does not exist"):
        load_dataset(tmp_path, wavcaps_blacklist=[str(tmp_path / "nope.json")])


def test_wavcaps_bad_input(tmp_path: Path) -> None:
    write_wavcaps(tmp_path, blacklist=True)
    sb = tmp_path / "json_files" / "SoundBible" / "sb_final.json"
    sb.write_text(json.dumps({"num_captions_per_audio": 1, "data": [{"id": "1", "caption": "a"},
                                                                    {"id": "1.wav", "caption": "b"}]}))
    with pytest.raises(DataError, match=r"sb_final\.json entry 1: duplicate id '1\.wav' in SoundBible"):
        load_dataset(tmp_path)
    sb.write_text(json.dumps({"data": [{"caption": "no id"}]}))
    with pytest.raises(DataError, match=r"sb_final\.json entry 0: every entry needs an \"id\""):
        load_dataset(tmp_path)
    sb.write_text("{not json")
    with pytest.raises(DataError, match=r"sb_final\.json is not readable JSON"):
        load_dataset(tmp_path)
    empty = tmp_path / "empty"
    (empty / "json_files" / "FreeSound").mkdir(parents=True)
    (empty / "json_files" / "FreeSound" / "fsd.json").write_text(json.dumps({"data": [{"id": "9", "caption": "x"}]}))
    with pytest.raises(DataError, match=r"none of the 1 train row\(s\) found its audio; unpack the WavCaps"):
        load_dataset(empty, check_audio="off")


# -- several datasets, weights ----------------------------------------------------------------------


def test_parse_data_spec() -> None:
    spec = parse_data_spec("wavcaps:/d/wc@0.3")
    assert (spec.key, spec.format, spec.path, spec.weight) == ("wavcaps:/d/wc", "wavcaps", Path("/d/wc"), 0.3)
    spec = parse_data_spec("/data/me@home/ac")  # an @ inside a path is not a weight
    assert (spec.key, spec.format, spec.weight) == ("/data/me@home/ac", None, None)
    assert parse_data_spec("audiocaps:/d/ac@7").weight == 7.0
    for bad in ("/d/ac@0", "/d/ac@-1", "@0.5"):
        with pytest.raises(ConfigError):
            parse_data_spec(bad)


def test_config_data_entries_and_weights() -> None:
    config = TrainConfig.from_dict({"data": [{"path": "/d/wc", "format": "wavcaps", "weight": 0.3},
                                             {"path": "/d/ac", "format": "audiocaps", "weight": 0.7}]})
    assert config.data == ["wavcaps:/d/wc@0.3", "audiocaps:/d/ac@0.7"]
    assert data_weights(config.data) == {"wavcaps:/d/wc": 0.3, "audiocaps:/d/ac": 0.7}
    assert data_weights(["/d/a", "/d/b"]) is None
    with pytest.raises(ConfigError, match="give a weight to every dataset or to none"):
        TrainConfig.from_dict({"data": ["/d/a@0.5", "/d/b"]})
    with pytest.raises(ConfigError, match="path"):
        TrainConfig.from_dict({"data": [{"format": "wavcaps"}]})


def test_epoch_items_follow_the_weights() -> None:
    datasets = ["big"] * 90 + ["small"] * 10
    weights = {"big": 1.0, "small": 1.0}
    items = epoch_items(datasets, weights, seed=3, epoch=0)
    assert len(items) == 100
    drawn = Counter(datasets[i] for i in items)
    assert drawn == Counter({"big": 50, "small": 50})
    small = Counter(i for i in items if datasets[i] == "small")
    assert set(small.values()) == {5}  # oversampled evenly: each small item 5 times
    assert len({i for i in items if datasets[i] == "big"}) == 50  # undersampled without repeats
    assert items == epoch_items(datasets, weights, seed=3, epoch=0)  # resume: same draw
    assert items != epoch_items(datasets, weights, seed=3, epoch=1)
    assert items != epoch_items(datasets, weights, seed=4, epoch=0)
    assert Counter(datasets[i] for i in epoch_items(datasets, {"big": 0.3, "small": 0.7}, 0, 0, epoch_size=7)) == \
        Counter({"big": 2, "small": 5})
    assert epoch_items(datasets, None, 0, 0) == list(range(100))
    with pytest.raises(ConfigError, match="without a sampling weight: small"):
        epoch_items(datasets, {"big": 1.0}, 0, 0)
    with pytest.raises(ConfigError, match="without training clips: other"):
        epoch_items(datasets, {"big": 1.0, "small": 1.0, "other": 1.0}, 0, 0)


def test_two_weighted_datasets_train_together(tmp_path: Path) -> None:
    ac, wc = tmp_path / "ac", tmp_path / "wc"
    write_audiocaps_csvs(ac)
    for name, clips in AC_CLIPS.items():
        for yt, *_ in clips:
            tone(ac / name / f"Y{yt}.wav")
    write_wavcaps(wc, blacklist=True)
    config = TrainConfig.from_dict({"data": [f"audiocaps:{ac}@0.7", {"path": str(wc), "weight": 0.3}],
                                    "model": "tiny"})
    data = prepare_data(config)
    weights = data_weights(config.data)
    assert weights == {f"audiocaps:{ac}": 0.7, str(wc): 0.3}
    assert {c.dataset for c in data.train} == set(weights)
    items = epoch_items([c.dataset for c in data.train], weights, config.seed, 0)
    assert Counter(data.train[i].dataset for i in items) == Counter({f"audiocaps:{ac}": 5, str(wc): 2})
    assert len(data.test) == 2 and all(len(c.captions) == 5 for c in data.test)


def test_other_published_roots(tmp_path: Path) -> None:
    # the AudioCaps repository keeps its CSVs in dataset/; WavCaps' GitHub copy in data/json_files
    ac = tmp_path / "ac"
    write_csv(ac / "dataset" / "train.csv", AC_HEADER, [[1, "aaaaaaaaaaa", 0, "a dog"]])
    tone(ac / "audio" / "Yaaaaaaaaaaa.wav")
    assert detect_format(ac) == "audiocaps" and [c.clip_id for c in load_dataset(ac)] == ["aaaaaaaaaaa_0"]
    wc = tmp_path / "wc"
    (wc / "data" / "json_files" / "SoundBible").mkdir(parents=True)
    (wc / "data" / "json_files" / "SoundBible" / "sb_final.json").write_text(
        json.dumps([{"id": "7", "caption": "thunder", "duration": 1.0}]))  # an early release: a bare list
    tone(wc / "sb" / "7.flac")
    assert detect_format(wc) == "wavcaps" and [c.clip_id for c in load_dataset(wc)] == ["SoundBible/7"]
