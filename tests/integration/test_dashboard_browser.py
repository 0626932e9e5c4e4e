"""The /admin dashboard in a real headless Chromium (Debian's chromium + chromium-driver).

Log in, see every key, disable one and watch its row change without a reload, see the SVG
charts drawn, fit a phone's width; every asset comes from the gateway itself.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import provider_env

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TOKEN = "browser-admin-token"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
KEYS = ["alpha-key-0000000000", "alpha-key-1111111111", "alpha-key-2222222222"]
HELLO = {"messages": [{"role": "user", "content": "hi"}]}


def _binaries() -> tuple[str, str]:
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    message = (
        "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true: a missing browser is a failure")
    pytest.skip(message)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    binary, driver_path = _binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1280,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: WebDriver, condition, timeout: float = 15.0):
    """The page redraws every few seconds, so an element found a moment ago may be gone."""
    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]
    )
    return wait.until(lambda d: condition(d))


def _texts(driver: WebDriver, selector: str) -> list[str]:
    """Read in one script call, atomically with respect to the page's redraws."""
    script = "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)"
    texts: list[str] = driver.execute_script(script, selector)
    return texts


def _state_of(driver: WebDriver, key: str) -> str:
    cells = _texts(driver, f'tr[data-key="{key}"] .state')
    return cells[0] if cells else ""


def _click(driver: WebDriver, selector: str) -> bool:
    driver.find_element(By.CSS_SELECTOR, selector).click()
    return True


def test_dashboard_login_keys_disable_and_charts(
    make_fake: FakeFactory, make_gateway: GatewayFactory, browser: WebDriver
):
    fake = make_fake({key: {"latency_ms": 5.0} for key in KEYS})
    gateway = make_gateway({**provider_env("alpha", fake, KEYS), "ADMIN_TOKEN": TOKEN})
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        for _ in range(9):
            assert client.post("/api/chat", json=HELLO).status_code == 200
        assert client.get("/").headers["location"] == "/admin"
        page = client.get("/admin")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]

    browser.get(f"{gateway.base_url}/admin")
    token_box = _wait(browser, lambda d: d.find_element(By.ID, "token"))
    token_box.send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()

    _wait(browser, lambda d: all(_state_of(d, f"alpha:{i}") == "active" for i in range(3)))
    assert browser.execute_script("return sessionStorage.getItem('keypool.adminToken')") == TOKEN
    fingerprints = [
        e.text for e in browser.find_elements(By.CSS_SELECTOR, "tr[data-key] td:nth-child(2)")
    ]
    assert fingerprints == ["alpha:0:0000", "alpha:1:1111", "alpha:2:2222"]
    assert all(key not in browser.page_source for key in KEYS)

    # The per-key load chart: one bar per key, and the 9 requests spread over them.
    bars = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#load-svg rect[data-key]"))
    assert len(bars) == 3
    _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, '[data-fact="requests"]').text == "9")
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#latency-svg path"))

    browser.find_element(
        By.CSS_SELECTOR, 'tr[data-key="alpha:1"] button[data-action="disable"]'
    ).click()
    _wait(browser, lambda d: _state_of(d, "alpha:1") == "disabled")
    health = httpx.get(
        f"{gateway.base_url}/api/admin/api-keys/health",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()
    assert health["providers"][0]["keys"][1]["state"] == "disabled"

    # Every resource the page loaded came from the gateway itself (no CDN).
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert urls
    assert all(url.startswith(gateway.base_url) for url in urls), urls

    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))

    # A phone's width: the page must not scroll sideways (wide tables scroll inside their card).
    browser.set_window_size(390, 844)
    _wait(
        browser,
        lambda d: d.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1"
        ),
    )
    assert browser.save_screenshot(str(ARTIFACTS / "dashboard-phone.png"))
