"""A user's program written for the published client, ``agents-bar==0.4.2``, as its docs show.

It imports the module named by ``$AGENTS_BAR_MODULE`` (default ``agents_bar``) so that the very
same program runs on the published client and on ``agents_bar_stream``. Configuration comes from
the environment, as the published client expects: ``AGENTS_BAR_URL`` (the service),
``AGENTS_BAR_USER`` / ``AGENTS_BAR_PASS`` (its credentials' names) and ``AGENTS_BAR_AGENT_NAME``.

Exits 0 when every call behaved as the published client documents; else prints what did not
and exits 1. Not a test module: tests/client/test_client_published.py runs it in a subprocess.
"""

import dataclasses
import importlib
import os
import random
import sys

module = importlib.import_module(os.environ.get("AGENTS_BAR_MODULE", "agents_bar"))
# As in the docs: ``from agents_bar import Client, RemoteAgent, wait_until_agent_exists``.
Client = module.Client
RemoteAgent = module.RemoteAgent
wait_until_agent_exists = module.wait_until_agent_exists

STEPS = int(os.environ.get("AGENTS_BAR_STEPS", "50"))


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def main():
    base_url = os.environ["AGENTS_BAR_URL"]
    name = os.environ["AGENTS_BAR_AGENT_NAME"]

    check("dqn" in module.SUPPORTED_MODELS and "ppo" in module.SUPPORTED_MODELS, "SUPPORTED_MODELS")

    # Credentials from $AGENTS_BAR_USER / $AGENTS_BAR_PASS; base_url as a keyword argument.
    client = Client(base_url=base_url)
    # The same account through keyword arguments.
    same = Client(username=os.environ["AGENTS_BAR_USER"], password=os.environ["AGENTS_BAR_PASS"], base_url=base_url)

    agent = RemoteAgent(client, agent_name=name)
    details = agent.create_agent(obs_size=4, action_size=2, agent_model="dqn")
    check(isinstance(details, dict) and details["name"] == name, f"create_agent returned {details!r}")
    check(wait_until_agent_exists(agent, max_seconds=20), "wait_until_agent_exists")
    check(agent.exists is True, "exists after create")
    check(RemoteAgent(same, agent_name=name).exists is True, "exists through a second client")

    rng = random.Random(0)
    obs = [rng.uniform(-0.1, 0.1) for _ in range(4)]
    for t in range(STEPS):
        action = agent.act(obs, noise=0.1)
        check(isinstance(action, int) and action in (0, 1), f"act returned {action!r}")
        next_obs = [o + rng.uniform(-0.05, 0.05) for o in obs]
        done = t % 10 == 9
        check(agent.step(obs, action, 1.0, next_obs, done) is True, "step returned True")
        obs = [rng.uniform(-0.1, 0.1) for _ in range(4)] if done else next_obs

    # agents_bar_stream queues steps; the published client sent each one already.
    flush = getattr(agent, "flush", None)
    if flush is not None:
        check(flush(timeout=30) is True, "flush in time")

    info = agent.info()
    check(info["name"] == name and info["model"] == "dqn", f"info returned {info!r}")
    check(info["config"]["obs_size"] == 4 and info["config"]["action_size"] == 2, "info config sizes")
    if "steps_received" in info:  # our server counts them: each step arrived exactly once
        check(info["steps_received"] == STEPS, f"steps_received {info['steps_received']} != {STEPS}")

    fresh = RemoteAgent(client, agent_name=name)
    fresh.sync()
    check((fresh.obs_size, fresh.action_size, fresh.agent_model) == (4, 2, "dqn"), "sync")
    check(fresh.discrete is True, "discrete")
    check(all(isinstance(v, (int, float, str)) for v in agent.hparams.values()), f"hparams {agent.hparams!r}")

    state = agent.get_state()
    fields = {f.name for f in dataclasses.fields(state)}
    check(fields == {"model", "obs_size", "action_size", "encoded_config", "encoded_network", "encoded_buffer"},
          f"snapshot fields {fields}")
    check(state.obs_size == 4 and state.action_size == 2, "snapshot sizes")
    check(agent.upload_state(state) is True, "upload_state")
    check(agent.act(obs) in (0, 1), "act after upload_state")

    check(agent.remove(agent_name="not-" + name) is False, "remove with a wrong name is ignored")
    check(agent.exists is True, "still exists after a wrong remove")
    try:
        agent.remove(agent_name="not-" + name, quite=False)
    except ValueError:
        pass
    else:
        check(False, "remove(quite=False) with a wrong name raises ValueError")
    check(agent.remove(agent_name=name) is True, "remove")
    check(agent.exists is False, "gone after remove")

    close = getattr(agent, "close", None)
    if close is not None:
        close()
    print("OK", module.__name__)


if __name__ == "__main__":
    main()
