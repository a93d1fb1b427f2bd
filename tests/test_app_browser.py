"""The app in a real browser: Debian's Chromium driven by Playwright.

Runs on the tiny model and a generated tone gallery. With ``ATR_SCREENSHOT_BUNDLED=1`` (and
``bundled_model/`` and ``bundled_gallery/`` present) it runs on those instead, which is how the
README's screenshots are made::

    ATR_SCREENSHOT_BUNDLED=1 ATR_UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest tests/test_app_browser.py

Screenshots of every tab are saved under ``test-artifacts/`` and copied to ``docs/screenshots/``
(the README shows them) when missing or when ``ATR_UPDATE_SCREENSHOTS=1``. Skipped, with the
reason printed, when ``/usr/bin/chromium`` is absent (``apt-get install chromium chromium-driver``
installs it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from atr_demo import ui
from atr_demo.model import load_model

from tests.test_app_callbacks import make_gallery
from tests.test_app_client import free_port

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
SCREENSHOTS = REPO / "docs" / "screenshots"
TIMEOUT_MS = 20_000


def shoot(page: object, name: str) -> Path:
    """Full-page screenshot into test-artifacts/; copied to docs/screenshots/ when that copy is
    missing or ``ATR_UPDATE_SCREENSHOTS=1`` (so that test runs do not churn tracked images)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    assert path.stat().st_size > 10_000  # a real rendering, not a blank page
    readme_copy = SCREENSHOTS / f"{name}.png"
    if os.environ.get("ATR_UPDATE_SCREENSHOTS") == "1" or not readme_copy.is_file():
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, readme_copy)
    return path


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if not CHROMIUM.is_file():
        print(f"SKIP browser tests: {CHROMIUM} is absent (apt-get install chromium chromium-driver)")
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium to run the browser tests")
    from playwright.sync_api import sync_playwright

    bundled = os.environ.get("ATR_SCREENSHOT_BUNDLED") == "1" and (REPO / "bundled_model" / "config.json").is_file()
    if bundled:
        model, root = load_model(None), REPO / "bundled_gallery"
    else:
        model, root = load_model("tiny"), make_gallery(tmp_path_factory.mktemp("gallery"))
    state = ui.make_state(model, [root], cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    if bundled:
        state.model_ref = "bundled checkpoint"
    demo = ui.build_demo(state)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **ui.launch_options(state))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                pg = browser.new_page(viewport={"width": 1280, "height": 900})
                pg.set_default_timeout(TIMEOUT_MS)
                pg.goto(f"http://127.0.0.1:{port}/")
                pg.wait_for_selector("#query textarea")
                pg.state = state  # type: ignore[attr-defined]
                yield pg
            finally:
                browser.close()
    finally:
        demo.close()


def caption(page: object, i: int) -> str:
    """The ``i``-th clip's caption (the query typed in the tests)."""
    meta = page.state.gallery.metadata  # type: ignore[attr-defined]
    return str([m["caption"] for m in meta if m.get("caption")][i])


def open_tab(page: object, name: str) -> None:
    page.get_by_role("tab", name=name).click()  # type: ignore[attr-defined]


def test_text_query_shows_audio_results(page: object) -> None:
    open_tab(page, "Text → audio")
    box = page.locator("#query textarea")  # type: ignore[attr-defined]
    box.fill(caption(page, 1))
    box.press("Enter")
    first = page.locator("#text-results .result-slot").first  # type: ignore[attr-defined]
    first.wait_for(state="visible")
    slots = page.locator("#text-results .result-slot:visible")  # type: ignore[attr-defined]
    assert slots.count() == min(10, len(page.state.gallery))  # type: ignore[attr-defined]  # k = 10
    assert "score" in slots.first.inner_text()
    assert slots.first.locator("audio, .waveform-container, button").count() >= 1  # a player
    shoot(page, "text-to-audio")


def test_search_as_you_type(page: object) -> None:
    open_tab(page, "Text → audio")
    box = page.locator("#query textarea")  # type: ignore[attr-defined]
    box.fill("")
    query = caption(page, 3)
    box.press_sequentially(query, delay=20)
    status = page.locator("#results-status")  # type: ignore[attr-defined]
    status.get_by_text(query).wait_for(state="visible")  # searched without pressing Enter
    assert "cosine" in status.inner_text()
    assert "score" in page.locator("#text-results .result-text").first.inner_text()  # type: ignore[attr-defined]


def test_audio_upload_ranks_captions(page: object) -> None:
    open_tab(page, "Audio → text")
    clip = str(page.state.gallery.files[0])  # type: ignore[attr-defined]
    page.locator("#audio-query input[type=file]").set_input_files(clip)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Rank captions").click()  # type: ignore[attr-defined]
    table = page.locator("#caption-table")  # type: ignore[attr-defined]
    first_caption = caption(page, 0)
    page.wait_for_function(  # type: ignore[attr-defined]  # ranked gallery captions are shown
        "() => (document.querySelector('#caption-table')?.innerText || '').includes('gallery')"
    )
    text = table.inner_text()
    assert "candidate" not in text  # no candidates typed: only gallery captions
    assert first_caption in text or len(page.state.gallery) > 10  # type: ignore[attr-defined]
    assert page.locator(".result-slot:visible").count() >= 1  # type: ignore[attr-defined]  # nearest sounds
    shoot(page, "audio-to-text")


def test_zero_shot_upload_shows_chart(page: object) -> None:
    open_tab(page, "Zero-shot ESC-50")
    clip = str(page.state.gallery.files[1])  # type: ignore[attr-defined]
    page.locator("#zs-files input[type=file]").set_input_files(clip)  # type: ignore[attr-defined]
    chart = page.locator("#zs-plot img")  # type: ignore[attr-defined]
    chart.wait_for(state="visible")
    assert chart.bounding_box()["height"] > 100
    shoot(page, "zero-shot")


def test_transport_tab_shows_heatmap(page: object) -> None:
    open_tab(page, "Transport plan")
    heatmap = page.locator("#transport-plot img")  # type: ignore[attr-defined]
    heatmap.wait_for(state="visible")
    assert heatmap.bounding_box()["width"] > 300
    assert "Transported mass" in page.locator("#transport-summary").inner_text()  # type: ignore[attr-defined]
    shoot(page, "transport-plan")


def test_library_and_model_tabs(page: object) -> None:
    open_tab(page, "Your library")
    page.get_by_text("Add to my library").wait_for(state="visible")  # type: ignore[attr-defined]
    shoot(page, "library")
    open_tab(page, "Model")
    info = page.locator("#model-info")  # type: ignore[attr-defined]
    info.wait_for(state="visible")
    assert page.state.model.config.audio.kind in info.inner_text()  # type: ignore[attr-defined]
    shoot(page, "model")
