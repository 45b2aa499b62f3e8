"""A thin HTTP helper over the server's API for tests: plain ``requests``, no client library."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import requests

API = "/api/v1"


def login(base_url: str, username: str, password: str) -> str:
    """An access token, through the form-encoded login the published client uses."""
    resp = requests.post(
        f"{base_url}{API}/login/access-token", data={"username": username, "password": password}, timeout=30
    )
    resp.raise_for_status()
    return resp.json()["access_token"]


class Api:
    """``requests`` calls relative to ``{base_url}/api/v1`` with a bearer token (when given)."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.timeout = timeout
        self.created: list = []  # names of the agents this helper created, for cleanup()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return self.session.request(method, f"{self.base_url}{API}{path}", **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def create_agent(
        self, name: str, model: str = "dqn", obs_size: int = 4, action_size: int = 2, **config: Any
    ) -> dict:
        body = {
            "name": name,
            "model": model,
            "description": None,
            "config": {"obs_size": obs_size, "action_size": action_size, **config},
            "is_active": True,
        }
        resp = self.post("/agents/", json=body)
        assert resp.status_code == 201, resp.text
        self.created.append(name)
        return resp.json()

    def cleanup(self) -> None:
        """Delete the agents this helper created (so that their learners stop using the CPU)."""
        for name in self.created:
            try:
                self.delete(f"/agents/{name}")
            except requests.RequestException:
                pass
        self.created.clear()
        self.session.close()

    def send_steps(self, name: str, producer_id: str, first_seq: int, steps: list) -> requests.Response:
        return self.post(
            f"/agents/{name}/steps", json={"producer_id": producer_id, "first_seq": first_seq, "steps": steps}
        )

    def log(self, name: str, *, page: int = 5000) -> list:
        """The agent's whole accepted log, following ``next``."""
        out: list = []
        start: int | None = 0
        while start is not None:
            resp = self.get(f"/agents/{name}/steps", params={"start": start, "limit": page})
            assert resp.status_code == 200, resp.text
            doc = resp.json()
            out.extend(doc["steps"])
            start = doc["next"]
        return out

    def agent(self, name: str) -> dict:
        resp = self.get(f"/agents/{name}")
        assert resp.status_code == 200, resp.text
        return resp.json()


def make_step(i: int = 0, *, obs_size: int = 4, action: Any = None, discrete: bool = True, done: bool = False) -> dict:
    """A valid wire step; ``i`` is written into ``obs[0]`` so that steps can be told apart."""
    rng = random.Random(i)
    obs = [float(i)] + [rng.uniform(-1, 1) for _ in range(obs_size - 1)]
    next_obs = [float(i + 1)] + [rng.uniform(-1, 1) for _ in range(obs_size - 1)]
    if action is None:
        action = [i % 2] if discrete else [rng.uniform(-1, 1)]
    return {"obs": obs, "action": action, "reward": rng.uniform(-1, 1), "next_obs": next_obs, "done": done}


def make_steps(first: int, count: int, **kwargs: Any) -> list:
    return [make_step(first + k, **kwargs) for k in range(count)]


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)
