"""The dashboard in a real browser: Debian's headless chromium, driven by Selenium (``support/browser.py``).

The page logs in through its own form, then must show the server's numbers as they change, and
say so when it cannot get them (the server stopped, the token refused). Every wait is a
``WebDriverWait`` on a condition, with a deadline; none is a sleep.

Without chromium the tests are skipped, except on CI (``CI=true``), where they must run: .ci/run
installs the browser, and a missing one is a failure there, not a silent skip.
"""

from __future__ import annotations

import os

import pytest
from support.api import make_steps
from support.browser import missing, start_chromium

pytestmark = pytest.mark.timeout(240)

#: Seconds the page has to show a change (it polls every 1.5 s; the machine is shared and slow).
SHOWN_WITHIN = 30


@pytest.fixture
def browser(tmp_path):
    reason = missing()
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"the browser test must run on CI: {reason}")
        pytest.skip(reason)
    driver = start_chromium(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, message: str, timeout: float = SHOWN_WITHIN):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message)


# The page rebuilds its tables at every poll: elements found in one call may be gone by the
# next (a stale reference). Tables are therefore read by one script, atomically.
_CELL = """
const td = document.querySelector(`#agents tr[data-agent="${arguments[0]}"] td[data-field="${arguments[1]}"]`);
return td === null ? "" : td.textContent;
"""
_PRODUCERS = """
return Array.from(document.querySelectorAll("#producers tbody tr"),
                  (tr) => [tr.dataset.producer, tr.querySelector('td[data-field="acked_seq"]').textContent]);
"""


def _cell(driver, agent: str, field: str) -> str:
    """The text of one cell of the agents table ("" while the row is not there)."""
    return driver.execute_script(_CELL, agent, field)


def _number(text: str) -> int | None:
    digits = text.replace(",", "")
    return int(digits) if digits.isdigit() else None


def _log_in(driver, url: str, user: tuple[str, str]) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    _wait(driver, lambda d: d.find_element(By.ID, "login").is_displayed(), "the login form")
    driver.find_element(By.ID, "username").send_keys(user[0])
    driver.find_element(By.ID, "password").send_keys(user[1])
    driver.find_element(By.ID, "login-submit").click()
    _wait(driver, lambda d: d.find_element(By.ID, "board").is_displayed(), "the board after logging in")


def _status(driver) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    el = driver.find_element(By.ID, "status")
    return el.get_attribute("data-state"), el.text


def test_the_page_shows_live_numbers_and_an_error_when_the_server_stops(browser, server_factory, user, agent_name):
    from selenium.webdriver.common.by import By
    from support.api import Api, login

    server = server_factory(name="dashboard")
    api = Api(server.url, login(server.url, *user))
    api.create_agent(agent_name)
    assert api.send_steps(agent_name, "producer-1", 0, make_steps(0, 120)).status_code == 200

    _log_in(browser, server.url, user)
    received = api.agent(agent_name)["steps_received"]
    assert received == 120
    _wait(browser, lambda d: _number(_cell(d, agent_name, "steps_received")) == received,
          f"the page to show {received} steps received")
    assert _status(browser)[0] == "live"
    assert _cell(browser, agent_name, "model") == "dqn"

    # More steps: the page follows without being reloaded.
    assert api.send_steps(agent_name, "producer-1", 120, make_steps(120, 80)).status_code == 200
    assert api.send_steps(agent_name, "producer-2", 0, make_steps(500, 50)).status_code == 200
    received = api.agent(agent_name)["steps_received"]
    assert received == 250
    _wait(browser, lambda d: _number(_cell(d, agent_name, "steps_received")) == received,
          f"the page to show {received} steps received after more were sent")
    _wait(browser, lambda d: _number(_cell(d, agent_name, "steps_learned")) == received, "all steps learned")
    assert dict(browser.execute_script(_PRODUCERS)) == {"producer-1": "199", "producer-2": "49"}
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#loss-chart polyline"), "the learning curve")

    # The data route breaks: the page must say so, not keep showing old numbers as if live.
    server.stop()
    state, text = _wait(browser, lambda d: _status(d)[0] == "error" and _status(d), "an error state")
    assert "cannot get data" in text
    assert _number(_cell(browser, agent_name, "steps_received")) == received  # the last numbers stay

    # And it recovers by itself once the server is back.
    server.start(timeout=120)
    _wait(browser, lambda d: _status(d)[0] == "live", "the page to be live again", timeout=60)


def test_an_invalid_token_is_an_error_and_brings_back_the_login(browser, server, user, api, agent_name):
    from selenium.webdriver.common.by import By

    api.create_agent(agent_name)
    _log_in(browser, server.url, user)
    _wait(browser, lambda d: _cell(d, agent_name, "steps_received") == "0", "the agent's row")
    browser.execute_script("sessionStorage.setItem('agents-bar-token', 'not.a-valid-token')")
    _wait(browser, lambda d: d.find_element(By.ID, "login").is_displayed(), "the login form after a refused token")
    state, text = _status(browser)
    assert state == "error" and "not logged in" in text
    assert "invalid" in browser.find_element(By.ID, "login-error").text
    assert not browser.find_element(By.ID, "board").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('agents-bar-token')") is None

    # A wrong password is refused with the server's words, and the right one gets back in.
    browser.find_element(By.ID, "username").clear()
    browser.find_element(By.ID, "username").send_keys(user[0])
    browser.find_element(By.ID, "password").send_keys("wrong password")
    browser.find_element(By.ID, "login-submit").click()
    _wait(browser, lambda d: "incorrect" in d.find_element(By.ID, "login-error").text, "the refusal")
    browser.find_element(By.ID, "password").clear()
    browser.find_element(By.ID, "password").send_keys(user[1])
    browser.find_element(By.ID, "login-submit").click()
    _wait(browser, lambda d: _cell(d, agent_name, "steps_received") == "0" and _status(d)[0] == "live", "live again")
