"""The chat page in real headless Chromium: type, see the reply stream in, reload, reset;
rate a reply, write a better one, regenerate."""

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
        "  const b = [...document.querySelectorAll('.msg.assistant')].pop();"
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


def test_feedback_and_regenerate_on_the_page(browser, server):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(server.url + "/")
    wait.until(lambda b: b.execute_script("return localStorage.getItem('rejoinder.session')"))
    sid = browser.execute_script("return localStorage.getItem('rejoinder.session')")
    browser.find_element(By.ID, "temperature").send_keys("0")
    browser.find_element(By.ID, "text").send_keys("Hello", Keys.ENTER)
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".assistant.done"))

    def pressed(name):
        return browser.find_element(By.CSS_SELECTOR, f".turn .{name}").get_attribute("aria-pressed")

    browser.find_element(By.CSS_SELECTOR, ".turn .up").click()
    wait.until(lambda b: pressed("up") == "true")
    # A better reply holding markup: saved and shown as text, no element made of it.
    tricky = '<img src=x onerror="window.pwned=1"><b>bold</b>'
    browser.find_element(By.CSS_SELECTOR, ".turn .write").click()
    browser.find_element(By.CSS_SELECTOR, ".turn .better textarea").send_keys(tricky)
    browser.find_element(By.CSS_SELECTOR, ".turn .save").click()
    wait.until(lambda b: b.find_element(By.CSS_SELECTOR, ".better-text").text)

    browser.refresh()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".turn"))
    assert (pressed("up"), pressed("down")) == ("true", "false")
    assert browser.find_element(By.CSS_SELECTOR, ".better-text").text == "better: " + tricky
    assert not browser.find_elements(By.CSS_SELECTOR, "#log img, #log b")
    assert browser.execute_script("return window.pwned") is None
    bot = httpx.get(f"{server.url}/v1/sessions/{sid}").json()["messages"][1]
    assert (bot["rating"], bot["better"]) == ("up", tricky)

    browser.find_element(By.CSS_SELECTOR, ".turn .regenerate").click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".earlier .old"))
    wait.until(lambda b: b.find_element(By.CSS_SELECTOR, ".msg.assistant").text)
    assert pressed("up") == "false"  # the new reply is not rated yet
    browser.refresh()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".turn"))
    old = browser.find_element(By.CSS_SELECTOR, ".earlier .old")
    assert old.get_attribute("textContent") == PARROT["Hello"]  # folded away, still there
    assert browser.find_element(By.CSS_SELECTOR, ".msg.assistant").text == PARROT["Hello"]
    assert len(browser.find_elements(By.CSS_SELECTOR, ".msg")) == 2
    bot = httpx.get(f"{server.url}/v1/sessions/{sid}").json()["messages"][1]
    assert (bot["earlier"], bot["rating"]) == ([PARROT["Hello"]], None)

    # Only the last reply can be regenerated.
    browser.find_element(By.ID, "text").send_keys("How are you?", Keys.ENTER)
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".assistant.done")) == 1)
    shown = [e.is_displayed() for e in browser.find_elements(By.CSS_SELECTOR, ".regenerate")]
    assert shown == [False, True]
