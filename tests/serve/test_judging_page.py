"""The judging page in headless Chromium: onboarding and items by keyboard, reload, escaping."""

from __future__ import annotations

from rejoinder.stores.judgments import JudgeStore
from rejoinder.stores.runs import Item, RunConfig
from tests.serve.test_page import browser  # noqa: F401  (the fixture)

HOSTILE = '<img src=x onerror="window.pwned=1">'


def make_run(db: str) -> None:
    config = RunConfig(
        name="kb", mode="turn", systems=["sysalpha", "sysbeta"],
        criteria=["relevance", "humanlike"],
        questions={"relevance": "More relevant?", "humanlike": "More human?"},
        judgments_per_item=1, quota=3, check_criterion="relevance",
    )  # fmt: skip
    real = [
        Item(f"i{k}", ("sysalpha", "sysbeta"),
             {"context": [f"question {k}", HOSTILE], "replies": {"sysalpha": f"alpha {k}",
              "sysbeta": f"beta {k} {HOSTILE}"}})
        for k in range(3)
    ]  # fmt: skip
    known = Item(
        "o0", ("real", "other"),
        {"context": ["Hello"], "replies": {"real": "Hi there", "other": "Bananas are yellow"}},
        onboarding=True, answer="real",
    )  # fmt: skip
    store = JudgeStore(db)
    store.create_run(config, [known, *real])
    store.close()


def test_a_judge_works_by_keyboard_and_a_reload_resumes(browser, start, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    db = f"sqlite:///{tmp_path / 'sessions.db'}"
    make_run(db)
    server = start(db=db)
    wait = WebDriverWait(browser, 30)
    browser.get(f"{server.url}/judge/kb?judge=kim")

    def read():
        """(A's reply, B's reply, the progress line), read in one go (the page re-renders
        between separate reads), or None while no item is shown."""
        return browser.execute_script(
            "const a = document.querySelector('#side-A .reply'),"
            "      b = document.querySelector('#side-B .reply');"
            "return a && b ? [a.textContent, b.textContent,"
            "  document.getElementById('progress').textContent] : null;"
        )

    def shown() -> tuple[str, str, str]:
        """(A's reply, B's reply, the progress line) once an item is on the page."""
        return tuple(wait.until(lambda b: read()))

    def press(*keys) -> None:
        body = browser.find_element(By.TAG_NAME, "body")
        for key in keys:
            body.send_keys(key)

    def answer(first: str, second: str) -> None:
        before = shown()
        press(first, second)
        wait.until(lambda b: not b.find_element(By.ID, "submit").get_attribute("disabled"))
        press(Keys.ENTER)
        wait.until(lambda b: b.find_element(By.ID, "status").text or shown() != before)

    a, b, progress = shown()
    assert progress == "item 1 of 4" and {a, b} == {"Hi there", "Bananas are yellow"}
    answer("a" if a == "Hi there" else "b", "t")  # onboarding: the real reply
    a, b, progress = shown()
    assert progress == "item 2 of 4"
    assert HOSTILE in (a + b) and not browser.find_elements(By.CSS_SELECTOR, "#task img")
    answer("1", "3")
    first_pending = shown()
    press("b")  # half answered, then the judge reloads
    browser.refresh()
    assert shown() == first_pending  # the same item, the same sides
    pressed = browser.find_elements(By.CSS_SELECTOR, "button[aria-pressed=true]")
    assert not pressed  # the half answer was not sent
    answer("b", "b")
    answer("a", "a")
    wait.until(lambda b: "nothing more" in b.find_element(By.ID, "status").text)
    assert browser.execute_script("return window.pwned") is None

    store = JudgeStore(db)
    run, items, judgments = store.export("kb")
    store.close()
    assert run["judges"]["kept"] == 1 and len(judgments) == 3
    for j, keys in zip(judgments, [("A", "B"), ("B", "B"), ("A", "A")], strict=True):
        right = next(s for s in ("sysalpha", "sysbeta") if s != j["left"])
        position = {"A": j["left"], "B": right}
        assert j["choices"] == {"relevance": position[keys[0]], "humanlike": position[keys[1]]}


def test_a_conversation_is_judged_with_a_reason(browser, start, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    def talk(last):
        return [{"speaker": "Speaker 1", "text": "hi"}, {"speaker": "Speaker 2", "text": last}]

    db = f"sqlite:///{tmp_path / 'sessions.db'}"
    config = RunConfig(
        name="talks", mode="conversation", systems=["sysalpha", "sysbeta"],
        criteria=["engaging"], questions={"engaging": "Who would you talk to for long?"},
        judgments_per_item=1, quota=2, check_criterion="engaging",
    )  # fmt: skip
    items = [
        Item(f"c{k}", ("sysalpha", "sysbeta"),
             {"conversations": {"sysalpha": talk(f"alpha {k}"), "sysbeta": talk(f"beta {k}")},
              "speaker": {"sysalpha": "Speaker 2", "sysbeta": "Speaker 2"}})
        for k in range(2)
    ]  # fmt: skip
    store = JudgeStore(db)
    store.create_run(config, items)
    store.close()
    server = start(db=db)
    wait = WebDriverWait(browser, 30)
    browser.get(f"{server.url}/judge/talks?judge=lee")
    for reason in ("more to say", "asks back"):
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#side-A .turn.judged"))
        judged = browser.find_elements(By.CSS_SELECTOR, ".turn.judged")
        assert [e.text.splitlines()[0] for e in judged] == ["Speaker 2", "Speaker 2"]
        assert not browser.find_elements(By.XPATH, "//button[text()='Tie']")  # forced choice
        before = browser.find_element(By.CSS_SELECTOR, "#side-A").text
        browser.find_element(By.TAG_NAME, "body").send_keys("a")
        assert browser.find_element(By.ID, "submit").get_attribute("disabled")  # no reason yet
        wait.until(lambda b: b.switch_to.active_element == b.find_element(By.ID, "reason"))
        browser.switch_to.active_element.send_keys(reason, Keys.ENTER)
        wait.until(
            lambda b, before=before: (
                b.find_element(By.ID, "status").text
                or b.find_element(By.CSS_SELECTOR, "#side-A").text != before
            )
        )
    wait.until(lambda b: "nothing more" in b.find_element(By.ID, "status").text)
    store = JudgeStore(db)
    _, _, judgments = store.export("talks")
    store.close()
    assert sorted(j["reason"] for j in judgments) == ["asks back", "more to say"]
    assert all(j["choices"]["engaging"] == j["left"] for j in judgments)
