"""The web page on the --listen address, in a real browser: Debian's headless Chromium, driven
through chromedriver by Selenium.

With FAAS_WEB_SCREENSHOTS=DIR, each view is also saved there as a PNG (docs/web/ holds them).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.integration.conftest import Daemon, daemon_range, first_ip, free_port, http_get

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = os.environ.get("FAAS_WEB_SCREENSHOTS")
# What Chromium needs to run headless as root, with nothing fetched from the network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--window-size=1280,1400",
)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "apt-get install chromium chromium-driver (scripts/prepare.sh)"
    profile = tempfile.mkdtemp(prefix="faasd-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def api(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_for(driver: WebDriver, css: str, text: str, seconds: float = 20) -> None:
    """Until the element at ``css`` is shown and its text holds ``text``."""

    def holds(_driver: WebDriver) -> bool:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return bool(found) and found[0].is_displayed() and text in found[0].text

    WebDriverWait(driver, seconds, poll_frequency=0.1).until(holds, f"{css} never showed {text!r}")


def screenshot(driver: WebDriver, name: str, height: int) -> None:
    """Save the view, ``height`` pixels of it, when FAAS_WEB_SCREENSHOTS names a directory."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        driver.set_window_size(1280, height)
        driver.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))
        driver.set_window_size(1280, 1400)


def test_the_page_needs_the_token_once_and_never_in_a_url(
    make_daemon, busybox_image, python_image: Path, browser: WebDriver
) -> None:
    port, gateway = free_port(), free_port()
    daemon: Daemon = make_daemon(daemon_range(71), "--listen", f"127.0.0.1:{port}", "--gateway", f"127.0.0.1:{gateway}")
    daemon.deploy("hello", busybox_image("hello v1"))
    daemon.deploy("hello", busybox_image("hello v2"), "--memory", "64m")
    daemon.deploy("other", python_image, "--sandbox", "fork")
    ip = first_ip(daemon_range(71))
    token = (daemon.state_dir / "api.token").read_text().strip()
    page = f"http://127.0.0.1:{port}/"

    # The page holds no data; the API behind it wants the token or the page's session.
    assert api(port, "GET", "/ui/")[0] == 200
    assert api(port, "GET", "/v1/functions")[0] == 401
    assert api(port, "GET", "/ui/static/../api.token")[0] == 404

    browser.get(page)
    wait_for(browser, "#login-view", "Log in")
    screenshot(browser, "login", 480)
    browser.find_element(By.ID, "token").send_keys("not-the-token")
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait_for(browser, "#login-error", "not the token")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()

    # The list: address, version, limits, sandbox mode.
    wait_for(browser, "#functions tbody", "other")
    listed = browser.find_elements(By.CSS_SELECTOR, "#functions tbody tr")
    rows = {row.find_elements(By.TAG_NAME, "td")[0].text: row for row in listed}
    cells = [td.text for td in rows["hello"].find_elements(By.TAG_NAME, "td")]
    assert cells[:3] == ["hello", ip, "2"]
    assert cells[4:] == ["64m", "1", "128", "30s", "64m", "4", "1", "runc: a container per connection"]
    screenshot(browser, "functions", 400)
    cookies = {c["name"]: c for c in browser.get_cookies()}
    assert cookies["faasd_session"]["httpOnly"] and cookies["faasd_session"]["sameSite"] == "Strict"
    assert token not in cookies["faasd_session"]["value"]
    session = f"faasd_session={cookies['faasd_session']['value']}"
    assert api(port, "GET", "/v1/functions", {"Cookie": session})[0] == 200
    assert api(port, "POST", "/v1/functions/hello/rollback", {"Cookie": session})[0] == 401, "no page header: refused"

    assert rows["other"].find_elements(By.TAG_NAME, "td")[-1].text == "fork: a child of a template per connection"

    # One function: its versions, with rollback both ways.
    rows["hello"].find_element(By.TAG_NAME, "a").click()
    wait_for(browser, "#function-facts", f"http://hello.localhost:{gateway}/")
    wait_for(browser, "#versions tbody", "Roll back to 1")
    browser.find_element(By.CSS_SELECTOR, "#versions button[data-version='1']").click()
    wait_for(browser, "#version-message", "Rolled back to version 1")
    assert http_get(ip) == (200, b"hello v1\n")
    wait_for(browser, "#versions tbody", "Switch to 2")
    browser.find_element(By.CSS_SELECTOR, "#versions button[data-version='2']").click()
    wait_for(browser, "#version-message", "Switched to version 2")
    assert http_get(ip) == (200, b"hello v2\n")

    # A request from the form, its answer, its line in the live log, and the chart moving.
    Select(browser.find_element(By.ID, "request-method")).select_by_visible_text("GET")
    path = browser.find_element(By.ID, "request-path")
    path.clear()
    path.send_keys("/?from=page")
    browser.find_element(By.CSS_SELECTOR, "#request-form button").click()
    wait_for(browser, "#response-status", "200 OK")
    wait_for(browser, "#response-body", "hello v2")
    wait_for(browser, "#log", "outcome=served")
    for _ in range(5):
        assert http_get(ip)[0] == 200
    wait_for(browser, "#latency-now", " ms")
    WebDriverWait(browser, 20).until(
        lambda driver: (
            len((driver.find_element(By.CSS_SELECTOR, "#rate-chart polyline").get_attribute("points") or "").split())
            >= 2
        ),
        "the rate chart never drew a line",
    )
    screenshot(browser, "function", 1600)

    history = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(token not in url for url in [*history, browser.current_url]), "the token never went into a URL"

    browser.find_element(By.ID, "logout").click()
    wait_for(browser, "#login-view", "Log in")
    browser.get(page)
    wait_for(browser, "#login-view", "Log in")


def test_the_page_is_only_on_the_tcp_listener(daemon: Daemon) -> None:
    """The unix socket serves the API alone: no page, no login."""
    result = daemon.faas("list")
    assert result.returncode == 0
    conn = http.client.HTTPConnection("localhost")
    conn.sock = socket.socket(socket.AF_UNIX)
    conn.sock.connect(str(daemon.socket))
    conn.request("GET", "/ui/")
    response = conn.getresponse()
    assert response.status == 404 and json.loads(response.read()) == {"error": "Not Found"}
