"""A step chosen by the local policy carries its version (issue 11); other steps are unchanged bytes."""

from __future__ import annotations

import orjson

from agents_bar_stream.protocol import StepEncoder, validate_step


def test_the_version_is_a_field_only_when_given():
    enc = StepEncoder()
    plain = enc.encode([0.1, 0.2], 1, 1.0, [0.2, 0.3], False)
    tagged = enc.encode([0.1, 0.2], 1, 1.0, [0.2, 0.3], False, "0a1b2c3d4e5f60718293a4b5")
    assert b"policy_version" not in plain
    step = orjson.loads(tagged)
    assert step.pop("policy_version") == "0a1b2c3d4e5f60718293a4b5"
    assert step == orjson.loads(plain)
    validate_step(orjson.loads(tagged), obs_size=2, action_size=3, discrete=True)  # servers ignore it


def test_a_version_is_not_taken_for_a_number():
    # "null" and "e+" in a version must not look like a non-finite number to the step's check.
    step = orjson.loads(StepEncoder().encode([1.0], [0.5], 0.0, [1.0], True, "null-e+1"))
    assert step["policy_version"] == "null-e+1"
