"""report.html in headless Chromium (Debian's chromium driven by Playwright; no browser download):
every section renders, no console errors, every image loads. The screenshot is written under the
test's tmp_path (tests never write into the repository); to refresh the committed one, run with
``NEUROTOMY_SCREENSHOT=benchmarks/results/report_screenshot.png``."""

import os
import shutil

import pytest



@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("Debian chromium not installed (make test installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright  # a dev dependency: missing is a failure, not a skip

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_report_renders_in_chromium(browser, tiny_report_dir, tiny_report, tmp_path):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto((tiny_report_dir / "report.html").as_uri())
    page.wait_for_load_state("load")
    assert problems == []
    verdict = page.locator("#verdict")
    assert verdict.is_visible() and "smaller by" in verdict.inner_text() and "reasons kept" in verdict.inner_text()
    for sec in tiny_report["sections"]:
        element = page.locator(f"#sec-{sec['id']}")
        assert element.is_visible(), sec["id"]
        box = element.bounding_box()
        assert box["height"] > 80 and box["width"] > 600, sec["id"]
        assert element.locator("h2").inner_text() == sec["title"]
        assert element.locator("table").count() == len(sec["tables"])
    widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) == sum(len(s["figures"]) for s in tiny_report["sections"]) and min(widths) > 0
    # nothing wider than the page: no horizontal scrolling on a laptop-sized window
    assert page.evaluate("document.documentElement.scrollWidth") <= 1200
    screenshot = tmp_path / "report_screenshot.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 50_000
    page.close()
    if os.environ.get("NEUROTOMY_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["NEUROTOMY_SCREENSHOT"])
