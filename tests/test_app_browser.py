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
    assert slots.first.locator("audio").get_attribute("preload") == "none"  # a lazy player
    src = slots.first.locator("audio").get_attribute("src")
    assert page.request.get(page.url + src).status == 200  # type: ignore[attr-defined]  # it plays
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
    assert "score" in page.locator("#text-results .result-slot").first.inner_text()  # type: ignore[attr-defined]


def test_audio_upload_ranks_captions(page: object) -> None:
    open_tab(page, "Audio → text")
    clip = str(page.state.gallery.files[0])  # type: ignore[attr-defined]
    page.locator("#audio-query input[type=file]").set_input_files(clip)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Rank captions").click()  # type: ignore[attr-defined]
    table = page.locator("#caption-table")  # type: ignore[attr-defined]
    first_caption = caption(page, 0)
    page.locator("#audio-sounds .result-slot").first.wait_for(state="visible")  # type: ignore[attr-defined]
    text = table.inner_text()
    assert first_caption in text or len(page.state.gallery) > 10  # type: ignore[attr-defined]
    assert not page.locator("#candidate-table").is_visible()  # type: ignore[attr-defined]  # none typed
    assert "Scores:" in page.locator("#audio-note").inner_text()  # type: ignore[attr-defined]
    shoot(page, "audio-to-text")


def test_zero_shot_upload_shows_chart(page: object) -> None:
    open_tab(page, "Zero-shot ESC-50")
    clip = str(page.state.gallery.files[1])  # type: ignore[attr-defined]
    page.locator("#zs-files input[type=file]").set_input_files(clip)  # type: ignore[attr-defined]
    chart = page.locator("#zs-plot img")  # type: ignore[attr-defined]
    chart.wait_for(state="visible")
    assert chart.bounding_box()["height"] > 100
    table = page.locator("#zs-table").inner_text()  # type: ignore[attr-defined]  # a readable table, not JSON
    assert "probability" in table and "%" in table and "{" not in table
    shoot(page, "zero-shot")


def test_transport_tab_shows_heatmap(page: object) -> None:
    open_tab(page, "Transport plan")
    heatmap = page.locator("#transport-plot img")  # type: ignore[attr-defined]
    heatmap.wait_for(state="visible")
    assert heatmap.bounding_box()["width"] > 300
    summary = page.locator("#transport-summary").inner_text()  # type: ignore[attr-defined]
    assert "Transported mass" in summary and "Captions (columns)" in summary  # full labels, keyed
    shoot(page, "transport-plan")


def test_model_tab(page: object) -> None:
    open_tab(page, "Model")
    info = page.locator("#model-info")  # type: ignore[attr-defined]
    info.wait_for(state="visible")
    assert page.state.model.config.audio.kind in info.inner_text()  # type: ignore[attr-defined]
    shoot(page, "model")


def test_metric_mode_offered_only_when_it_differs(page: object) -> None:
    open_tab(page, "Text → audio")
    radios = page.locator("#text-mode input[type=radio]").all()  # type: ignore[attr-defined]
    assert {x.get_attribute("value") for x in radios} == set(page.state.modes)  # type: ignore[attr-defined]
    assert "metric" not in page.state.modes  # type: ignore[attr-defined]  # M = I: metric ranks like cosine


def test_library_kept_across_reload_and_removable(page: object, tmp_path: Path) -> None:
    from tests.helpers import write_tone

    mine = write_tone(tmp_path / "my_tone.wav", freq=500.0, sr=16000)
    open_tab(page, "Your library")
    page.locator("#library-files input[type=file]").set_input_files(str(mine))  # type: ignore[attr-defined]
    page.get_by_role("button", name="Add to my library").click()  # type: ignore[attr-defined]
    status = page.locator("#library-status")  # type: ignore[attr-defined]
    status.get_by_text("Added 1 clip").wait_for(state="visible")
    assert "my_tone.wav" in page.locator("#library-table").inner_text()  # type: ignore[attr-defined]
    page.reload()  # type: ignore[attr-defined]
    page.wait_for_selector("#query textarea")  # type: ignore[attr-defined]
    open_tab(page, "Your library")
    status.get_by_text("Restored your library").wait_for(state="visible")
    assert "my_tone.wav" in page.locator("#library-table").inner_text()  # type: ignore[attr-defined]
    shoot(page, "library")
    picker = page.locator("#library-remove input")  # type: ignore[attr-defined]
    picker.click()
    page.get_by_role("option").first.click()  # type: ignore[attr-defined]
    page.get_by_role("button", name="Remove", exact=True).click()  # type: ignore[attr-defined]
    status.get_by_text("Removed 1 clip").wait_for(state="visible")
    assert "my_tone.wav" not in page.locator("#library-table").inner_text()  # type: ignore[attr-defined]


def test_mobile_results_on_first_screen(page: object) -> None:
    context = page.context  # type: ignore[attr-defined]
    mobile = context.browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        mobile.set_default_timeout(TIMEOUT_MS)
        mobile.goto(page.url)  # type: ignore[attr-defined]
        box = mobile.locator("#query textarea")
        box.fill(caption(page, 2))
        box.press("Enter")
        first = mobile.locator("#text-results .result-slot").first
        first.wait_for(state="visible")
        top = first.bounding_box()["y"]
        assert top < 844, f"the first result starts at y = {top:.0f} px, below the first screen (844 px)"
        shoot(mobile, "text-to-audio-mobile")
    finally:
        mobile.close()


def test_search_as_you_type_never_mislabels(page: object) -> None:
    open_tab(page, "Text → audio")
    box = page.locator("#query textarea")  # type: ignore[attr-defined]
    box.fill("")
    final = caption(page, 4)
    box.press_sequentially(final, delay=5)  # fast typing: many queued searches
    status = page.locator("#results-status")  # type: ignore[attr-defined]
    status.get_by_text(final).wait_for(state="visible")
    html = page.locator("#text-results .atr-results").get_attribute("data-query")  # type: ignore[attr-defined]
    assert html == final  # the results shown are the final query's
