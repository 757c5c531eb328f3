"""A real ``bentoml serve bentos.service:Tailor`` on a free loopback port, and the demo page
driven in headless Debian chromium (screenshot kept under test-artifacts/)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pipelines.settings import PROJECT_ROOT
from tests.conftest import free_port
from tests.test_serve import jpeg, png_bomb, serve_bundle  # noqa: F401  (session fixture)

pytestmark = pytest.mark.services
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def server(serve_bundle: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    port = free_port()
    home = tmp_path_factory.mktemp("bentoml-home")
    log = (tmp_path_factory.mktemp("serve-log") / "serve.log").open("wb")
    env = {**os.environ, "TAILOR_BUNDLE_DIR": str(serve_bundle), "BENTOML_HOME": str(home),
           "BENTOML_DO_NOT_TRACK": "true", "PYTHONPATH": str(PROJECT_ROOT)}
    bentoml = str(Path(sys.executable).parent / "bentoml")
    proc = subprocess.Popen([bentoml, "serve", "bentos.service:Tailor", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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


@pytest.mark.parametrize("kw,status", [
    ({"files": {"image": ("x.txt", b"not an image", "text/plain")}}, 400),
    ({"files": {"image": ("t.jpg", jpeg((300, 300))[:400], "image/jpeg")}}, 400),
    ({"files": {"image": ("b.png", png_bomb(), "image/png")}}, 413),
    ({"files": {"image": ("x.jpg", jpeg(), "image/jpeg")}, "data": {"k": "101"}}, 422),
    ({"files": {"other": ("x.jpg", jpeg(), "image/jpeg")}}, 422),
    ({"content": b"\x80\x04K\x01.", "headers": {"content-type": "application/vnd.bentoml+pickle"}}, 415),
    ({"files": {"image": ("big.jpg", b"\xff" * (11 * 1024 * 1024), "image/jpeg")}}, 413),
])
def test_e2e_bad_input(server: str, kw: dict, status: int):
    r = httpx.post(f"{server}/search", timeout=60, **kw)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]


def test_demo_page_in_chromium(server: str, small_world: Path):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    photo = small_world / "images" / "shop" / "p00007.jpg"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"{server}/demo")
            page.wait_for_function("document.querySelector('#versions').textContent.includes('embedder')")
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("body[data-state=done]", timeout=60_000)
            cards = page.locator(".card")
            assert cards.count() >= 5
            assert "p00007" in [cards.nth(i).get_attribute("data-product-id") for i in range(cards.count())]
            assert page.locator(".garment .tag").count() >= 2
            # the thumbnails are served by the service itself
            page.wait_for_function("[...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(ARTIFACTS / "demo-page.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "demo-page.png").stat().st_size > 10_000


def test_demo_page_policy_and_link_protocols(server: str, small_world: Path):
    """The demo page is served with a Content-Security-Policy that forbids inline script, it
    works under that policy (no violation while searching), and a catalog link or image
    that is not http(s) (javascript:, data:) becomes neither a link nor an image."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    r = httpx.get(f"{server}/demo", timeout=30)
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert httpx.get(f"{server}/static/app.js", timeout=30).headers["content-security-policy"] == csp
    photo = small_world / "images" / "shop" / "p00007.jpg"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
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
                "", "", "", "https://shop.example/p/1", f"{server}/catalog/images/a.jpg"]
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
