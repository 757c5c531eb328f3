"""A real ``bentoml serve bentos.service:Tailor`` on a free loopback port, and the demo page
driven in headless Debian chromium (screenshot kept under test-artifacts/)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pipelines.services import free_port
from pipelines.settings import PROJECT_ROOT
from tests.helpers import missing, wait_until
from tests.helpers.serving import jpeg, png_bomb

pytestmark = pytest.mark.services
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def closet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served closets (TAILOR_CLOSET_DIR of the server), never the project's var/."""
    return tmp_path_factory.mktemp("closets")


@pytest.fixture(scope="module")
def server(serve_bundle: Path, closet_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    home = tmp_path_factory.mktemp("bentoml-home")
    log = (tmp_path_factory.mktemp("serve-log") / "serve.log").open("wb")
    env = {
        **os.environ,
        "TAILOR_BUNDLE_DIR": str(serve_bundle),
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONPATH": str(PROJECT_ROOT),
        "TAILOR_CLOSET_DIR": str(closet_dir),
    }
    bentoml = str(Path(sys.executable).parent / "bentoml")
    proc = subprocess.Popen(
        [bentoml, "serve", "bentos.service:Tailor", "--host", "127.0.0.1", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, Path(log.name).read_text()[-3000:]
            assert time.monotonic() < deadline, "bentoml serve not ready in 300 s"
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def test_e2e_search_health_openapi(server: str, small_world: Path):
    assert httpx.get(f"{server}/healthz").status_code == 200
    assert httpx.get(f"{server}/readyz").status_code == 200
    spec = httpx.get(f"{server}/docs.json").json()
    assert "/search" in spec["paths"]
    assert httpx.get(f"{server}/demo").status_code == 200
    pid = "p00010"
    img = (small_world / "images" / "shop" / f"{pid}.jpg").read_bytes()
    r = httpx.post(f"{server}/search", files={"image": ("p.jpg", img, "image/jpeg")}, data={"k": "5"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["versions"]["detector"] == "fresh-s0"
    assert pid in [m["product_id"] for m in body["garments"][0]["matches"]]


@pytest.mark.parametrize(
    "kw,status",
    [
        ({"files": {"image": ("x.txt", b"not an image", "text/plain")}}, 400),
        ({"files": {"image": ("t.jpg", jpeg((300, 300))[:400], "image/jpeg")}}, 400),
        ({"files": {"image": ("b.png", png_bomb(), "image/png")}}, 413),
        ({"files": {"image": ("x.jpg", jpeg(), "image/jpeg")}, "data": {"k": "101"}}, 422),
        ({"files": {"other": ("x.jpg", jpeg(), "image/jpeg")}}, 422),
        ({"content": b"\x80\x04K\x01.", "headers": {"content-type": "application/vnd.bentoml+pickle"}}, 415),
        ({"files": {"image": ("big.jpg", b"\xff" * (11 * 1024 * 1024), "image/jpeg")}}, 413),
    ],
)
def test_e2e_bad_input(server: str, kw: dict, status: int):
    r = httpx.post(f"{server}/search", timeout=60, **kw)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]


def test_demo_page_in_chromium(server: str, small_world: Path):
    if not CHROMIUM.exists():
        missing("/usr/bin/chromium missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    photo = small_world / "images" / "shop" / "p00007.jpg"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"{server}/demo")
            # Waits poll with page.evaluate (run by the driver): wait_for_function's string
            # predicate is eval'd in the page, which the page's CSP (no 'unsafe-eval') refuses.
            wait_until(
                lambda: "embedder" in page.evaluate("document.querySelector('#versions').textContent"),
                what="the versions line",
            )
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("body[data-state=done]", timeout=60_000)
            cards = page.locator(".card")
            assert cards.count() >= 5
            assert "p00007" in [cards.nth(i).get_attribute("data-product-id") for i in range(cards.count())]
            assert page.locator(".garment .tag").count() >= 2
            # the thumbnails are served by the service itself
            wait_until(
                lambda: page.evaluate(
                    "[...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)"
                ),
                what="the product thumbnails",
            )
            page.screenshot(path=str(ARTIFACTS / "demo-page.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "demo-page.png").stat().st_size > 10_000


def test_demo_page_policy_and_link_protocols(server: str, small_world: Path):
    """The demo page is served with a Content-Security-Policy that forbids inline script, it
    works under that policy (no violation while searching), and a catalog link or image
    that is not http(s) (javascript:, data:) becomes neither a link nor an image."""
    if not CHROMIUM.exists():
        missing("/usr/bin/chromium missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    r = httpx.get(f"{server}/demo", timeout=30)
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert httpx.get(f"{server}/static/app.js", timeout=30).headers["content-security-policy"] == csp
    photo = small_world / "images" / "shop" / "p00007.jpg"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = browser.new_page()
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            page.goto(f"{server}/demo")
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("body[data-state=done]", timeout=60_000)
            assert page.locator(".card[href]").count() >= 1
            assert violations == []
            assert page.evaluate("""[safeUrl('javascript:alert(1)'), safeUrl('data:text/html,<b>x'),
                                     safeUrl(' JavaScript:alert(1)'), safeUrl('https://shop.example/p/1'),
                                     safeUrl('/catalog/images/a.jpg')]""") == [
                "",
                "",
                "",
                "https://shop.example/p/1",
                f"{server}/catalog/images/a.jpg",
            ]
            # a search answer whose stored links are hostile renders without them
            page.evaluate("""async () => {
                const bitmap = await createImageBitmap(new ImageData(8, 8));
                render(bitmap, {garments: [{box: [0, 0, 4, 4], category: 'shirt', score: 0.9, tags: {},
                  mask: {size: [1, 1], counts: '0'},
                  matches: [{url: 'javascript:alert(document.cookie)', image_url: 'data:image/svg+xml,<svg/>',
                             product_id: 'evil', title: 'x', price: 1, currency: 'EUR', mall: 'm', score: 0.5}]}]});
            }""")
            card = page.locator(".card[data-product-id=evil]")
            assert card.count() == 1 and card.get_attribute("href") is None
            assert card.locator("img").get_attribute("src") is None
        finally:
            browser.close()


def _all_blob(images, timeout_s: float = 30.0) -> None:  # noqa: ANN001
    """Wait until every image of the locator shows a blob: URL (closet photos are fetched
    with the bearer token). Polled from Python: the page's CSP forbids evaluated strings."""
    deadline = time.monotonic() + timeout_s
    while True:
        srcs = [images.nth(i).get_attribute("src") or "" for i in range(images.count())]
        if srcs and all(s.startswith("blob:") for s in srcs):
            return
        assert time.monotonic() < deadline, srcs
        time.sleep(0.2)


def _wait_attr(page, attr: str, status: str, timeout_s: float = 60.0) -> None:  # noqa: ANN001
    """Wait until the page sets ``attr`` on <body> (done or error); the status line explains a failure."""
    deadline = time.monotonic() + timeout_s
    while not page.get_attribute("body", attr):
        assert time.monotonic() < deadline, f"{attr} never set; status: {page.locator(status).text_content()!r}"
        time.sleep(0.2)


def _browser(pw):  # noqa: ANN001, ANN202
    return pw.chromium.launch(
        executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    )


def test_shopper_views_in_chromium(server: str, small_world: Path, closet_dir: Path):
    """My closet (upload, browse by category, correct, delete), Complete the look (covered
    and missing garments outlined, closet item and shop cards beside them) and Browse by
    attributes (filters, map, similar by attributes), driven in the demo page."""
    if not CHROMIUM.exists():
        missing("/usr/bin/chromium missing: apt-get install -y chromium")
    from playwright.sync_api import expect, sync_playwright

    from bentos.closet.store import ClosetStore

    store = ClosetStore(f"sqlite:///{closet_dir / 'closet.db'}", closet_dir / "images")
    token = store.add_user("browser")
    shots = small_world / "images" / "shop"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = _browser(pw)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            page.goto(f"{server}/demo")
            page.wait_for_selector("body[data-shopper=ready]", timeout=30_000)
            page.fill("#token", token)
            page.dispatch_event("#token", "change")
            # -- My closet: two uploads, grouped by category, shown with their photos
            page.click("#tabs button[data-view=closet]")
            for pid in ("p00020", "p00031"):
                page.set_input_files("#closet-file", str(shots / f"{pid}.jpg"))
                expect(page.locator("#closet-status")).to_have_text(re.compile("^added"), timeout=60_000)
            page.wait_for_selector("body[data-closet='2']", timeout=30_000)
            _all_blob(page.locator("#closet .item img"))
            assert page.locator("#closet .item").count() == 2
            page.screenshot(path=str(ARTIFACTS / "closet.png"), full_page=True)
            # correct the first item's category by hand
            first = page.locator("#closet .item").first
            item_id = first.get_attribute("data-id")
            first.locator("select[data-head=category]").select_option("blazer")
            expect(page.locator("#closet-status")).to_have_text("corrected category", timeout=30_000)
            assert page.locator("#closet .closet-group[data-category=blazer] .item").count() == 1
            got = store.get_item(store.user_id("browser"), item_id)
            assert got["category"] == "blazer" and got["category_source"] == "user"
            # -- Complete the look with a photo the closet holds (covered) ...
            store.update_item(store.user_id("browser"), item_id, category=got["category"])
            page.click("#tabs button[data-view=look]")
            page.set_input_files("#look-file", str(shots / "p00031.jpg"))
            _wait_attr(page, "data-look", "#look-status")
            assert page.get_attribute("body", "data-look") == "done", page.locator("#look-status").text_content()
            assert page.locator(".look-garment[data-status=covered]").count() >= 1
            _all_blob(page.locator("img[data-owned]"))
            page.screenshot(path=str(ARTIFACTS / "look-covered.png"), full_page=True)
            # -- delete from the closet (the page, then the store agree)
            page.click("#tabs button[data-view=closet]")
            page.wait_for_selector("body[data-closet='2']", timeout=30_000)
            for left in (1, 0):
                page.locator("#closet .item button[data-delete]").first.click()
                page.wait_for_selector(f"body[data-closet='{left}']", timeout=30_000)
                assert len(store.list_items(store.user_id("browser"))) == left
            assert not list((closet_dir / "images").rglob("*.jpg"))  # no item references them any more
            # -- ... and the look again: nothing owned, every garment missing, with shop cards
            page.click("#tabs button[data-view=look]")
            page.evaluate("delete document.body.dataset.look")
            page.set_input_files("#look-file", str(shots / "p00031.jpg"))
            _wait_attr(page, "data-look", "#look-status")
            assert page.get_attribute("body", "data-look") == "done", page.locator("#look-status").text_content()
            missing_garments = page.locator(".look-garment[data-status=missing]")
            assert missing_garments.count() >= 1 and page.locator(".look-garment[data-status=covered]").count() == 0
            assert missing_garments.first.locator(".card[href]").count() >= 1
            page.screenshot(path=str(ARTIFACTS / "look-missing.png"), full_page=True)
            # -- Browse by attributes: filter, page, map, similar by attributes
            page.click("#tabs button[data-view=browse]")
            page.wait_for_selector("body[data-browse=done]", timeout=30_000)
            total = int(page.locator("#browse-status").text_content().split()[0])
            assert total > 0 and page.locator("#products .card").count() == min(24, total)
            cat = page.locator("#products .card .mall").first.text_content().split(" · ")[1]
            page.evaluate("document.body.dataset.browse = ''")
            page.select_option("#f-category", cat)
            page.wait_for_selector("body[data-browse=done]", timeout=30_000)
            cats = {t.split(" · ")[1] for t in page.locator("#products .card .mall").all_text_contents()}
            assert cats == {cat}
            page.set_input_files("#attr-file", str(shots / "p00010.jpg"))
            page.wait_for_selector("body[data-browse=similar]", timeout=60_000)
            assert page.locator("#products .card .shared").count() == 12
            assert "your photo" in page.locator("#map-legend").text_content()
            page.screenshot(path=str(ARTIFACTS / "browse-attributes.png"), full_page=True)
        finally:
            browser.close()
    assert violations == []
    for name in ("closet.png", "look-covered.png", "look-missing.png", "browse-attributes.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000
