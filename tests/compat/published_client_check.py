"""Drive a server with the published ``agents-bar==0.4.2`` client, unchanged; exit non-zero on any failure.

Run it with an interpreter that has ``agents_bar`` installed (and not this project)::

    AGENTS_BAR_USER=alice AGENTS_BAR_PASS=secret python published_client_check.py --url http://127.0.0.1:8080

It imports nothing but the published client and the standard library, so that it checks the
wire format exactly as old programs speak it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
import uuid


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def run(url: str, model: str, obs_size: int, action_size: int) -> None:
    import agents_bar
    from agents_bar import Client, RemoteAgent
    from agents_bar.utils import wait_until_agent_exists

    print(f"agents_bar {agents_bar.__version__} against {url}, model {model}")
    client = Client(base_url=url)  # credentials from AGENTS_BAR_USER / AGENTS_BAR_PASS
    print("login: ok")

    name = f"compat-{model}-{uuid.uuid4().hex[:8]}"
    agent = RemoteAgent(client, agent_name=name)
    created = agent.create_agent(obs_size=obs_size, action_size=action_size, agent_model=model, description=None)
    _check(created["name"] == name, f"create_agent answered {created!r}")
    print("create_agent: ok")
    _check(wait_until_agent_exists(agent, max_seconds=20, verbose=False), "the agent never appeared")
    _check(agent.is_active, "the agent is not active")
    print("wait: ok")

    discrete = model.lower() in ("dqn", "rainbow")
    obs = [0.01 * (i + 1) for i in range(obs_size)]
    for noise in (0.0, 0.5):
        action = agent.act(obs, noise=noise)
        if discrete:
            _check(isinstance(action, int) and 0 <= action < action_size, f"discrete act returned {action!r}")
        else:
            _check(
                isinstance(action, list) and len(action) == action_size and all(math.isfinite(a) for a in action),
                f"continuous act returned {action!r}",
            )
    print("act: ok")

    for t in range(5):
        next_obs = [o + 0.01 for o in obs]
        _check(agent.step(obs, action, 1.0, next_obs, t == 4) is True, "step did not return True")
        obs = next_obs
    print("step: ok")

    info = agent.info()
    _check(info["name"] == name and info["model"].lower() == model.lower(), f"info answered {info!r}")
    _check(agent.obs_size == obs_size and agent.action_size == action_size, "sizes not read back from config")
    if "steps_received" in info:
        _check(info["steps_received"] == 5, f"steps_received is {info['steps_received']}, expected 5")
    print("info: ok")

    state = agent.get_state()  # builds the published EncodedAgentState dataclass: fails on any extra field
    _check(state.model.lower() == model.lower(), f"snapshot model {state.model!r}")
    _check(state.obs_size == obs_size and state.action_size == action_size, "snapshot sizes")
    for field in ("encoded_config", "encoded_network", "encoded_buffer"):
        _check(isinstance(getattr(state, field), str), f"snapshot {field} is not a string")
    print("get_state: ok")
    _check(agent.upload_state(state) is True, "upload_state did not return True")
    print("upload_state: ok")

    _check(agent.remove(agent_name=name) is True, "remove did not return True")
    _check(not agent.exists, "the agent still exists after remove")
    print("remove: ok")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--models", default="dqn,ppo", help="comma-separated models to check (default: %(default)s)")
    args = parser.parse_args(argv)
    for key in ("AGENTS_BAR_USER", "AGENTS_BAR_PASS"):
        if not os.environ.get(key):
            print(f"{key} is not set", file=sys.stderr)
            return 2
    started = time.monotonic()
    try:
        for model in args.models.split(","):
            run(args.url.rstrip("/"), model.strip(), obs_size=4, action_size=2)
    except Exception:  # noqa: BLE001 - any failure is the result: report it and exit non-zero
        traceback.print_exc()
        print("FAILED", file=sys.stderr)
        return 1
    print(f"all checks passed in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
