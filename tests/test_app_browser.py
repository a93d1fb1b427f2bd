"""The app in a real browser: Debian's Chromium driven by Playwright.

Screenshots of every tab are saved under ``test-artifacts/`` and copied to ``docs/screenshots/``
(the README shows them) when missing or when ``ATR_UPDATE_SCREENSHOTS=1``. Skipped, with the reason printed, when ``/usr/bin/chromium`` is absent
(``apt-get install chromium chromium-driver`` installs it).
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

    root = make_gallery(tmp_path_factory.mktemp("gallery"))
    state = ui.make_state(load_model("tiny"), [root], cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
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
                pg.gallery_files = list(state.gallery.files)  # type: ignore[attr-defined]
                yield pg
            finally:
                browser.close()
    finally:
        demo.close()


def open_tab(page: object, name: str) -> None:
    page.get_by_role("tab", name=name).click()  # type: ignore[attr-defined]


def test_text_query_shows_audio_results(page: object) -> None:
    open_tab(page, "Text → audio")
    box = page.locator("#query textarea")  # type: ignore[attr-defined]
    box.fill("a low electrical hum")
    box.press("Enter")
    first = page.locator("#text-results .result-slot").first  # type: ignore[attr-defined]
    first.wait_for(state="visible")
    slots = page.locator("#text-results .result-slot:visible")  # type: ignore[attr-defined]
    assert slots.count() == 6  # k = 10 but the gallery holds 6 clips
    assert "score" in slots.first.inner_text()
    assert slots.first.locator("audio, .waveform-container, button").count() >= 1  # a player
    shoot(page, "text-to-audio")


def test_search_as_you_type(page: object) -> None:
    open_tab(page, "Text → audio")
    box = page.locator("#query textarea")  # type: ignore[attr-defined]
    box.fill("")
    box.press_sequentially("someone whistles", delay=20)
    status = page.locator("#results-status")  # type: ignore[attr-defined]
    status.get_by_text("someone whistles").wait_for(state="visible")  # searched without pressing Enter
    assert "cosine" in status.inner_text()
    assert "score" in page.locator("#text-results .result-text").first.inner_text()  # type: ignore[attr-defined]


def test_audio_upload_ranks_captions(page: object) -> None:
    open_tab(page, "Audio → text")
    page.locator("#audio-query input[type=file]").set_input_files(str(page.gallery_files[0]))  # type: ignore[attr-defined]
    page.get_by_role("button", name="Rank captions").click()  # type: ignore[attr-defined]
    table = page.locator("#caption-table")  # type: ignore[attr-defined]
    table.get_by_text("a high beep").first.wait_for(state="visible")
    assert "candidate" not in table.inner_text()  # no candidates typed: only gallery captions
    assert page.locator(".result-slot:visible").count() >= 1  # type: ignore[attr-defined]  # nearest sounds
    shoot(page, "audio-to-text")


def test_zero_shot_upload_shows_chart(page: object) -> None:
    open_tab(page, "Zero-shot ESC-50")
    page.locator("#zs-files input[type=file]").set_input_files(str(page.gallery_files[1]))  # type: ignore[attr-defined]
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
    assert "tiny_audio" in info.inner_text()
    shoot(page, "model")
