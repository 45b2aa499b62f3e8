"""Every StreamOptions field falls back to AGENTS_BAR_STREAM_<FIELD> (issue 15); an argument wins, a
bad value is a ConfigurationError naming the variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agents_bar_stream import ConfigurationError, RemoteAgent, RetryPolicy, StreamOptions

# (field, what the variable says, what the field becomes)
CASES = [
    ("queue_dir", "/tmp/somewhere", "/tmp/somewhere"),
    ("durability", "step", "step"),
    ("batch_size", "500", 500),
    ("flush_interval", "250ms", 0.25),
    ("commit_interval", "0.01", 0.01),
    ("max_pending_bytes", "2GiB", 2 * 2**30),
    ("max_pending_bytes", "500MB", 500 * 10**6),
    ("on_full", "drop_oldest", "drop_oldest"),
    ("block_timeout", "5m", 300.0),
    ("close_timeout", "0", 0.0),
    ("retry_policy", "0.2,10", RetryPolicy(0.2, 10.0)),
    ("error_interval", "2h", 7200.0),
]


def test_every_field_has_a_case():
    assert {f.name for f in dataclasses.fields(StreamOptions)} == {name for name, _, _ in CASES}


@pytest.mark.parametrize("name,text,expected", CASES)
def test_variable_is_the_fallback_and_an_argument_wins(clean_env, name, text, expected):
    var = f"AGENTS_BAR_STREAM_{name.upper()}"
    default = getattr(StreamOptions(), name)
    clean_env.setenv(var, text)
    assert getattr(StreamOptions(), name) == expected
    assert getattr(StreamOptions(**{name: default}), name) == default  # the argument wins
    clean_env.setenv(var, "")
    assert getattr(StreamOptions(), name) == default  # empty: unset


@pytest.mark.parametrize("name,text", [
    ("durability", "sometimes"), ("batch_size", "ten"), ("batch_size", "0"), ("flush_interval", "-1"),
    ("flush_interval", "1 fortnight"), ("max_pending_bytes", "1.5GB"), ("max_pending_bytes", "12 parsecs"),
    ("on_full", "explode"), ("commit_interval", "0"), ("retry_policy", "5"), ("retry_policy", "10,1"),
    ("error_interval", "0"),
])
def test_bad_values_name_the_variable(clean_env, name, text):
    var = f"AGENTS_BAR_STREAM_{name.upper()}"
    clean_env.setenv(var, text)
    with pytest.raises(ConfigurationError) as err:
        StreamOptions()
    assert var in str(err.value) and repr(text) in str(err.value)


@pytest.mark.timeout(60)
def test_remote_agent_takes_its_options_from_the_environment(clean_env, client, agent_name, tmp_path):
    queue_dir = tmp_path / "from-env"
    clean_env.setenv("AGENTS_BAR_STREAM_QUEUE_DIR", str(queue_dir))
    clean_env.setenv("AGENTS_BAR_STREAM_DURABILITY", "step")
    clean_env.setenv("AGENTS_BAR_STREAM_BATCH_SIZE", "3")
    agent = RemoteAgent(client, agent_name)
    try:
        agent.create_agent(4, 2, "dqn")
        for i in range(7):
            agent.step([0.1 * i, 0, 0, 0], 1, 1.0, [0, 0, 0, 0.1 * i], False)
        stats = agent.stats
        assert stats["durability"] == "step" and Path(stats["queue_dir"]) == queue_dir
        assert agent.flush(timeout=30) and agent.stats["delivered"] == 7
        assert (queue_dir / "data").is_dir()
        # A bad variable is refused when the RemoteAgent is built, naming it.
        clean_env.setenv("AGENTS_BAR_STREAM_ON_FULL", "maybe")
        with pytest.raises(ConfigurationError, match="AGENTS_BAR_STREAM_ON_FULL"):
            RemoteAgent(client, agent_name)
        # ... unless the argument is given: it wins.
        other = RemoteAgent(client, agent_name + "-x", stream=StreamOptions(on_full="raise", queue_dir=tmp_path / "x"))
        assert other._stream_options.on_full == "raise"
        other.close(timeout=0)
    finally:
        agent.remove(agent_name=agent_name)
        agent.close(timeout=0)
