"""The routes of the server, one router per area; ``app.create_app`` includes them in this order.

- ``auth``: ``POST /login/access-token``.
- ``agents``: the agents themselves (list, create, get, delete), ``act``, ``step``, ``loss`` and
  the accepted log (``GET /agents/{name}/steps``).
- ``snapshots``: ``GET`` and ``POST /snapshots/{name}``.
- ``stream``: Part 2 of the protocol (``/stream/info``, ``POST /agents/{name}/steps``, producers);
  included only when the server streams.
- ``policy``: Part 3's ``GET /agents/{name}/policy`` (the ONNX policy, ETag/304); included only
  when the server streams, like ``stream``.
- ``dashboard``: the page at ``/``, its assets (``/static/...``, from ``server/static/``) and
  ``GET /dashboard``, the JSON it polls; always included (``dashboard.install``).

``deps`` holds what routes depend on (the state, the current user, the current agent) and
``inputs`` the readers of request bodies and query parameters.
"""

from __future__ import annotations
