"""Hostile snapshots: nothing a client uploads is ever unpickled."""

from __future__ import annotations

import base64
import io
import os
import pickle

import pytest
from support.api import Api

pytestmark = pytest.mark.timeout(120)


class _Payload:
    """Unpickling this runs ``os.system('touch <marker>')``."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def torch_zip_with_pickle_payload(marker) -> bytes:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"net": _Payload(marker)}, buf)  # a real torch.save() archive whose pickle runs code
    return buf.getvalue()


@pytest.fixture
def snapshot(api: Api, agent_name) -> dict:
    api.create_agent(agent_name, "dqn", obs_size=4, action_size=2)
    snap = api.get(f"/snapshots/{agent_name}").json()
    snap["_name"] = agent_name
    return snap


@pytest.mark.parametrize("field", ["encoded_network", "encoded_config", "encoded_buffer"])
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_raw_pickle_refused_and_not_run(api: Api, snapshot, tmp_path, field, protocol):
    marker = tmp_path / "pwned"
    name = snapshot.pop("_name")
    evil = {**snapshot, field: b64(pickle.dumps(_Payload(marker), protocol=protocol))}
    resp = api.post(f"/snapshots/{name}", json=evil)
    assert 400 <= resp.status_code < 500, resp.text
    assert isinstance(resp.json()["detail"], str)
    assert not marker.exists(), "the server executed a client's pickle"


def test_torch_archive_with_code_refused_and_not_run(api: Api, snapshot, tmp_path):
    marker = tmp_path / "pwned-torch"
    name = snapshot.pop("_name")
    evil = {**snapshot, "encoded_network": b64(torch_zip_with_pickle_payload(marker))}
    resp = api.post(f"/snapshots/{name}", json=evil)
    assert resp.status_code == 422, resp.text
    assert not marker.exists(), "the server executed the pickle inside a torch archive"
    # The agent still works with its own weights.
    assert api.post(f"/agents/{name}/act", json=[0.0, 0.0, 0.0, 0.0]).status_code == 200


def test_snapshot_parts_are_safe_formats(api: Api, snapshot):
    snapshot.pop("_name")
    config = base64.b64decode(snapshot["encoded_config"])
    buffer = base64.b64decode(snapshot["encoded_buffer"])
    network = base64.b64decode(snapshot["encoded_network"])
    assert config.startswith(b"{") and buffer.startswith(b"{")  # JSON
    assert network.startswith(b"PK\x03\x04")  # torch zip, readable with weights_only=True
    torch = pytest.importorskip("torch")
    state = torch.load(io.BytesIO(network), weights_only=True)
    assert set(state) == {"net", "target_net"}
