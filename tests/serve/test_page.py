"""The chat page in real headless Chromium: type, see the reply stream in, reload, reset."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import PARROT
from tests.serve.services import need


@pytest.fixture
def browser(tmp_path):
    chromium = need(shutil.which("chromium"), "Chromium", "apt-get install chromium")
    driver = need(shutil.which("chromedriver"), "ChromeDriver", "apt-get install chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    b = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    b.set_page_load_timeout(30)
    yield b
    b.quit()


def test_chat_stream_reload_and_reset(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(server.url + "/")
    wait.until(lambda b: b.execute_script("return localStorage.getItem('rejoinder.session')"))
    first_session = browser.execute_script("return localStorage.getItem('rejoinder.session')")
    assert browser.find_element(By.ID, "model").text == "parrot"
    browser.find_element(By.ID, "temperature").send_keys("0")  # greedy: the parrot's own line
    # Every text the reply bubble shows on its way, to see that it arrived in pieces.
    browser.execute_script(
        "window.seen = [];"
        "new MutationObserver(() => {"
        "  const b = document.querySelector('.assistant:last-child');"
        "  if (b) window.seen.push(b.textContent);"
        "}).observe(document.getElementById('log'),"
        "  {subtree: true, childList: true, characterData: true});"
    )
    box = browser.find_element(By.ID, "text")
    box.send_keys("Hello", Keys.ENTER)
    done = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".assistant.done"))
    assert done[-1].text == PARROT["Hello"]
    seen = [s for s in browser.execute_script("return window.seen") if s]
    assert len(set(seen)) > 1 and seen[0] != PARROT["Hello"]  # streamed, not all at once

    browser.refresh()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".msg")) == 2)
    texts = [
        (e.get_attribute("class"), e.text) for e in browser.find_elements(By.CSS_SELECTOR, ".msg")
    ]
    assert texts == [("msg user", "Hello"), ("msg assistant", PARROT["Hello"])]

    browser.find_element(By.ID, "reset").click()
    wait.until(lambda b: not b.find_elements(By.CSS_SELECTOR, ".msg"))
    wait.until(
        lambda b: (
            b.execute_script("return localStorage.getItem('rejoinder.session')") != first_session
        )
    )
    import httpx

    assert httpx.get(f"{server.url}/v1/sessions/{first_session}").status_code == 404
