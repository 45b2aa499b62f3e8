"""Take the README's dashboard screenshot (docs/dashboard.png) from a live server.

    python bench/dashboard_screenshot.py [--seconds 60] [--out docs/dashboard.png]

Starts a local server (learning on) in a temporary directory, streams CartPole through the real
client (a DQN agent, acting epsilon-greedily with act() and sending every transition with
step()), lets a second agent receive a few batches from two producers, then logs in through the
page in headless chromium (tests/support/browser.py: Debian's chromium and chromium-driver) while
the stream goes on, and saves the page once it shows rates, a loss curve and episode returns.
Needs the server extra, gymnasium and selenium.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from support.api import Api, login, make_steps  # noqa: E402
from support.browser import missing, start_chromium  # noqa: E402

from agents_bar_stream import Client, RemoteAgent, StreamOptions  # noqa: E402
from agents_bar_stream.server.process import LocalServer  # noqa: E402

USER = ("demo", "demo-password-1")


def stream_cartpole(client: Client, queue_dir: Path, stop: threading.Event) -> None:
    import gymnasium

    env = gymnasium.make("CartPole-v1")
    rng = random.Random(1)
    with RemoteAgent(client, "cartpole-dqn", stream=StreamOptions(queue_dir=queue_dir)) as agent:
        agent.create_agent(obs_size=4, action_size=2, agent_model="dqn")
        episode, eps = 0, 1.0
        while not stop.is_set():
            obs, _ = env.reset(seed=episode)
            done = False
            while not done and not stop.is_set():
                action = rng.randrange(2) if rng.random() < eps else int(agent.act(list(map(float, obs))))
                next_obs, reward, terminated, truncated, _ = env.step(action)
                done = terminated or truncated
                agent.step(list(map(float, obs)), [action], float(reward), list(map(float, next_obs)), terminated)
                obs = next_obs
            episode += 1
            eps = max(0.05, eps * 0.97)
        agent.flush(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to stream before the screenshot")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args()
    reason = missing()
    if reason:
        print(f"cannot take the screenshot: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="dashboard-shot-") as tmp:
        work = Path(tmp)
        with LocalServer(work / "server", users=[USER]) as server:
            client = Client(base_url=server.url, username=USER[0], password=USER[1])
            stop = threading.Event()
            streamer = threading.Thread(target=stream_cartpole, args=(client, work / "queue", stop), daemon=True)
            streamer.start()
            # A second agent with two producers, fed by hand: a table with more than one row.
            api = Api(server.url, login(server.url, *USER))
            api.create_agent("pendulum-ddpg", model="ddpg", obs_size=3, action_size=1)
            for producer, first in (("worker-0", 0), ("worker-1", 5000)):
                steps = make_steps(first, 400, obs_size=3, discrete=False)
                assert api.send_steps("pendulum-ddpg", producer, 0, steps).status_code == 200
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline and streamer.is_alive():
                time.sleep(1)
            driver = start_chromium(work / "chromium-profile", width=1280, height=860)
            try:
                shoot(driver, server.url, args.out)
            finally:
                driver.quit()
                stop.set()
                streamer.join(30)
                client.close()
    print(f"wrote {args.out}")
    return 0


def shoot(driver, url: str, out: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "login").is_displayed())
    driver.find_element(By.ID, "username").send_keys(USER[0])
    driver.find_element(By.ID, "password").send_keys(USER[1])
    driver.find_element(By.ID, "login-submit").click()

    # One script reads it all: the page rebuilds its tables at every poll, so an element found by
    # one WebDriver call can be gone (stale) by the next.
    ready_js = """
        const rate = document.querySelector('#agents tr[data-agent="cartpole-dqn"] td[data-field="ingest_rate"]');
        return rate !== null && !["", "\u2013"].includes(rate.textContent)
            && document.querySelector("#loss-chart polyline") !== null
            && document.querySelector("#return-chart polyline") !== null;
    """

    def ready(d) -> bool:
        return bool(d.execute_script(ready_js))

    WebDriverWait(driver, 60, poll_frequency=0.2).until(ready, "live numbers, a loss curve and episode returns")
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))


if __name__ == "__main__":
    sys.exit(main())
