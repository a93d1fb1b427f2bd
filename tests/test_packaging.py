"""Packaging: pyproject.toml declares what the code imports, requirements.txt agrees with it, and a
non-editable install is a working library."""

from __future__ import annotations

import ast
import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
SELF = canonicalize_name(PROJECT["name"])


def _requirements(lines: list[str]) -> dict[str, str]:
    """``{canonical name: specifier}`` of ``lines`` (self-references such as ``atr-demo[app]`` left out);
    a name listed twice must carry the same specifier both times."""
    out: dict[str, str] = {}
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name == SELF:
            continue
        spec = str(req.specifier)
        assert out.get(name, spec) == spec, f"{req.name} is listed with two specifiers: {out[name]!r} and {spec!r}"
        out[name] = spec
    return out


def _requirements_txt() -> list[str]:
    lines = (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def _group(name: str) -> dict[str, str]:
    """The requirements of the core dependencies (``"core"``) or of one extra."""
    if name == "core":
        return _requirements(PROJECT["dependencies"])
    return _requirements(PROJECT["optional-dependencies"][name])


def test_requirements_txt_agrees_with_pyproject() -> None:
    extras = PROJECT["optional-dependencies"]
    declared = _requirements(PROJECT["dependencies"] + [r for name in sorted(extras) for r in extras[name]])
    listed = _requirements(_requirements_txt())
    assert sorted(set(declared) - set(listed)) == [], "in pyproject.toml but not in requirements.txt"
    assert sorted(set(listed) - set(declared)) == [], "in requirements.txt but not in pyproject.toml"
    assert {k: v for k, v in listed.items() if declared[k] != v} == {}, "specifiers differ from pyproject.toml"


def test_dev_extra_is_every_other_extra() -> None:
    extras = PROJECT["optional-dependencies"]
    (dev,) = (Requirement(r) for r in extras["dev"])
    assert canonicalize_name(dev.name) == SELF and dev.extras == set(extras) - {"dev"}


def _third_party_imports(paths: list[Path]) -> dict[str, Path]:
    """Top-level module of every import in ``paths`` (lazy ones included) that is neither the
    standard library nor this project's → the first file importing it."""
    first_party = {"atr_demo", "training", "tests", "app", "benchmarks"}
    found: dict[str, Path] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in first_party and top != "__future__":
                    found.setdefault(top, path)
    return found


@pytest.mark.parametrize(
    ("where", "groups"),
    [
        (["atr_demo"], ["core"]),  # the library minus the app's UI package
        (["atr_demo/ui", "app.py"], ["core", "app"]),
        (["training"], ["core", "train"]),
        (["tests", "benchmarks"], ["core", "app", "train", "test"]),
    ],
    ids=["library", "app", "training", "tests"],
)
def test_imports_are_declared(where: list[str], groups: list[str]) -> None:
    paths: list[Path] = []
    for item in where:
        path = REPO / item
        paths += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    if where == ["atr_demo"]:
        ui = REPO / "atr_demo" / "ui"
        paths = [p for p in paths if p != ui.with_suffix(".py") and ui not in p.parents]
    declared = set().union(*(_group(g) for g in groups))
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module, path in _third_party_imports(paths).items():
        names = {canonicalize_name(d) for d in distributions.get(module, [module])}
        if not names & declared:
            missing[module] = str(path.relative_to(REPO))
    assert missing == {}, f"imported but not declared in pyproject.toml's {groups}"


def test_package_data_globs_match_files() -> None:
    for package, globs in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        folder = REPO.joinpath(*package.split("."))
        for pattern in globs:
            assert list(folder.glob(pattern)), f"package data {package}:{pattern} matches no file"


def test_non_editable_install_is_a_working_library(tmp_path: Path) -> None:
    """A wheel built from a copy of the sources (what ``pip install .`` builds and unpacks), then,
    from another folder, the unpacked copy (not the work tree) imports, reads its package data and
    declares the same requirements as pyproject.toml."""
    source, target, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("atr_demo", "training"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    elsewhere.mkdir()
    build = "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))"
    run = subprocess.run([sys.executable, "-c", build, str(tmp_path / "dist")], check=True, cwd=source,
                         capture_output=True, text=True)
    with zipfile.ZipFile(tmp_path / "dist" / run.stdout.splitlines()[-1]) as wheel:
        names = wheel.namelist()
        wheel.extractall(target)
    assert {n.split("/")[0] for n in names} == {"atr_demo", "training", "atr_demo-0.1.0.dist-info"}
    assert "training/corpus/captions/0ad-data.csv" in names and "atr_demo/ui/__init__.py" in names
    script = (
        "import atr_demo, atr_demo.model, atr_demo.cli, training.corpus.captions as c, importlib.metadata as m\n"
        "print(atr_demo.__file__)\n"
        "print(len(c.load_rules('0ad-data')))\n"
        "print('\\n'.join(m.requires('atr-demo')))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], check=True, cwd=elsewhere, capture_output=True, text=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    location, n_rules, *requires = run.stdout.splitlines()
    assert Path(location).is_relative_to(target)
    assert int(n_rules) > 0
    assert sorted(r for r in requires if "extra ==" not in r) == sorted(
        str(Requirement(r)) for r in PROJECT["dependencies"]
    )
