"""The data-quality report opens in a real headless browser (Debian chromium) and its
screenshot shows the key elements; ``tailor quality report`` serves it on 127.0.0.1."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from pipelines.settings import PROJECT_ROOT, Settings
from tests.helpers import missing
from tests.helpers.snapshots import fabricate_snapshot

CHROMIUM = Path("/usr/bin/chromium")
SHOT_DIR = PROJECT_ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    from pipelines.validate.checkpoint import validate_snapshot
    from pipelines.validate.serve import serve_in_thread
    from pipelines.validate.training_set import build_training_set

    root = tmp_path_factory.mktemp("report")
    s = Settings(root=root)

    def mutate(p, i):
        p = p.copy()
        p.loc[p.index % 15 == 0, "category"] = "Not sure"
        p.loc[4, "currency"] = "XYZ"
        return p, i

    snap = fabricate_snapshot(root / "data" / "snapshots" / "report-demo", n=90, mutate=mutate)
    rep = validate_snapshot(snap, s=s, previous_rows=0)
    build_training_set(Path(rep["run_dir"]), s=s)
    srv, url = serve_in_thread(0, s=s)
    yield {"url": url, "rep": rep, "s": s}
    srv.shutdown()
    srv.server_close()


def test_served_on_loopback_with_summary(served) -> None:
    assert served["url"].startswith("http://127.0.0.1:")
    page = urllib.request.urlopen(served["url"], timeout=10).read().decode()
    assert "Tailor data quality" in page and "label not in vocabulary" in page
    assert "histograms" not in page or "<img" in page
    gx_index = urllib.request.urlopen(served["url"].replace("tailor/index.html", "index.html"), timeout=10)
    assert gx_index.status == 200


def test_report_screenshot_in_headless_chromium(served) -> None:
    if not CHROMIUM.exists():
        missing(
            "needs Debian chromium at /usr/bin/chromium (apt-get install -y chromium); no browser is ever downloaded"
        )
    from PIL import Image
    from playwright.sync_api import sync_playwright

    SHOT_DIR.mkdir(exist_ok=True)
    shot = SHOT_DIR / "quality-report.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(served["url"], wait_until="load")
        # Key elements: title, the status badge, the quarantine reasons and the histogram pictures.
        assert page.locator("h1").inner_text() == "Tailor data quality"
        assert page.locator(".status").first.is_visible()
        assert page.get_by_text("label not in vocabulary").first.is_visible()
        imgs = page.locator(".hist img")
        assert imgs.count() >= 2
        widths = page.evaluate("Array.from(document.querySelectorAll('.hist img')).map(i => i.naturalWidth)")
        assert all(w > 100 for w in widths), "histogram images did not load"
        page.screenshot(path=str(shot), full_page=True)
        # A failed expectation's link leads to its GX validation page, which names its column
        # and shows the values that failed it.
        failed = [x for x in served["rep"]["results"] if not x["success"] and x.get("column")]
        assert failed, "the fixture's mutations must fail an expectation on a column"
        link = page.locator("td a", has_text=failed[0]["id"]).first
        assert "validations" in (link.get_attribute("href") or "")
        link.click()
        page.wait_for_load_state("load")
        assert "/validations/" in page.url and page.url.endswith(".html")
        body = page.locator("body").inner_text()
        assert failed[0]["column"] in body and "Unexpected" in body, body[:2000]
        browser.close()
    img = Image.open(shot).convert("RGB")
    assert img.width == 1280 and img.height > 600
    # The screenshot is not blank: the green/amber status badge colours are present.
    colours = {c for _, c in img.getcolors(maxcolors=1 << 20)}
    assert (46, 125, 50) in colours or (237, 143, 3) in colours
