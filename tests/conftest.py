"""Shared pytest set-up: offline hub, seeded randomness, real backbones only in ``integration`` tests."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _real_backbones_only_in_integration_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail a test that loads a real pretrained backbone (the converted aiSFX weights at their default
    path, or all-MiniLM-L6-v2, e.g. through the bundled model) unless it is marked ``integration``
    (or ``browser``), so that ``make test-fast`` (``-m "not integration and not browser"``) stays fast."""
    if request.node.get_closest_marker("integration") or request.node.get_closest_marker("browser"):
        return
    from atr_demo.backbones import aisfx, text

    def refuse(what: str) -> None:
        pytest.fail(f"{request.node.nodeid} loads {what}: mark it @pytest.mark.integration")

    resolve_text_model = text.resolve_text_model
    load_pretrained_weights = aisfx.load_pretrained_weights

    def guarded_resolve(name: str, revision: str | None = None) -> str:
        if name == text.MINILM_HUB_ID:
            refuse(name)
        return resolve_text_model(name, revision)

    def guarded_load(module: Any, path: str | Path | None = None) -> Path:
        if path is None:
            refuse("the aiSFX weights")
        return load_pretrained_weights(module, path)

    monkeypatch.setattr(text, "resolve_text_model", guarded_resolve)
    monkeypatch.setattr(aisfx, "load_pretrained_weights", guarded_load)
