"""``python -m training compare-suites`` (training/experiments/compare.py): suite results side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atr_demo.errors import ConfigError

from training.__main__ import main as training_main
from training.experiments.compare import compare, load_row, paired_delta, parse_spec, seed_means

LABEL = "m-LTM, ε=0.1 + prompt ensemble"


def suite_file(path: Path, zs: dict[tuple[int, str], float], label: str = LABEL,
               extra_label: str | None = None) -> Path:
    """A suite JSON with one run per (seed, package): ZS top-1 as given, T→A R@5 = ZS / 2."""
    runs = [{"label": label, "group": pkg, "setting": f"{pkg}-x", "seed": seed,
             "metrics": {"cosine/zs.top1": v, "cosine/t2a.R@5": v / 2, "transport/t2a.R@5": v / 2}}
            for (seed, pkg), v in zs.items()]
    if extra_label:
        runs += [dict(r, label=extra_label, metrics={k: v + 0.5 for k, v in r["metrics"].items()}) for r in runs]
    path.write_text(json.dumps({"suite": "hubness", "runs": runs}))
    return path


def test_rows_average_packages_per_seed_and_pair_with_the_baseline(tmp_path: Path) -> None:
    base = suite_file(tmp_path / "a.json", {(0, "p"): 0.4, (0, "q"): 0.6, (1, "p"): 0.5, (1, "q"): 0.7})
    # the change: +0.1 on p for both seeds, q only for seed 0 (+0.2) — seed 1 is paired on p alone
    other = suite_file(tmp_path / "b.json", {(0, "p"): 0.5, (0, "q"): 0.8, (1, "p"): 0.6})
    a, b = load_row(str(base)), load_row(f"{other}=changed")
    assert b.name == "changed" and a.name == LABEL
    assert seed_means(a, "cosine/zs.top1") == pytest.approx([0.5, 0.6])
    assert paired_delta(b, a, "cosine/zs.top1") == pytest.approx([0.15, 0.1])
    row = next(line for line in "\n".join(compare([a, b])).splitlines() if line.startswith("| changed"))
    assert "+0.125 ± 0.035" in row  # mean of (0.15, 0.1), sample std 0.035
    assert "0.625 ± 0.035" in row   # its own ZS top-1: seed means 0.65 and 0.6
    assert row.endswith("| 2 × 2 |")


def test_a_file_of_several_families_needs_a_label(tmp_path: Path) -> None:
    both = suite_file(tmp_path / "ft.json", {(0, "p"): 0.4}, extra_label="fine-tuned")
    with pytest.raises(ConfigError, match="2 setting families"):
        load_row(str(both))
    tuned = load_row(f"{both}::fine-tuned=tuned")
    assert tuned.name == "tuned" and seed_means(tuned, "cosine/zs.top1") == pytest.approx([0.9])
    with pytest.raises(ConfigError, match="no runs labelled"):
        load_row(f"{both}::nope")
    with pytest.raises(ConfigError, match="no such suite result"):
        load_row(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a suite result"):
        load_row(str(tmp_path / "bad.json"))
    with pytest.raises(ConfigError, match="at least two rows"):
        compare([tuned])
    assert parse_spec("x.json::a=b=c") == (Path("x.json"), "a=b", "c")
    assert parse_spec("x.json") == (Path("x.json"), None, None)


def test_cli_prints_and_writes_the_table_with_its_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = suite_file(tmp_path / "a.json", {(0, "p"): 0.4, (1, "p"): 0.5})
    other = suite_file(tmp_path / "b.json", {(0, "p"): 0.6, (1, "p"): 0.6})
    out = tmp_path / "cmp" / "levers.md"
    assert training_main(["compare-suites", str(base), f"{other}=more", "--out", str(out), "--title", "Levers"]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out
    assert text.startswith("## Levers\n\nCommand: `python -m training compare-suites")
    assert "| more |" in text and "+0.150 ± 0.071" in text
    with pytest.raises(SystemExit) as exc:
        training_main(["compare-suites", str(base)])
    assert exc.value.code == 2 and "at least two rows" in capsys.readouterr().err
