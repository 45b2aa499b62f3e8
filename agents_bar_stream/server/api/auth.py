"""``POST /login/access-token``: a bearer token for a user name and password (Part 1)."""

from __future__ import annotations

import math
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import Response

from agents_bar_stream.protocol import API_PREFIX
from agents_bar_stream.server.api.deps import State
from agents_bar_stream.server.api.inputs import form_fields, read_body
from agents_bar_stream.server.errors import HTTPProblem, json_response
from agents_bar_stream.server.limits import MAX_LOGIN_BODY, MAX_LOGINS_WAITING
from agents_bar_stream.server.security import verify_password

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX)


@router.post("/login/access-token")
async def login(request: Request, state: State) -> Response:
    username, password = await _credentials(request)
    address = request.client.host if request.client else "unknown"
    limiter = state.login_limiter
    wait = limiter.try_acquire(username, address)
    if wait > 0:
        retry = max(1, math.ceil(wait))
        raise HTTPProblem(429, f"too many failed logins for this account or from this address; try again in {retry} s",
                          headers={"Retry-After": str(retry)})
    stored = state.store.password_hash(username)
    if state.hashing.waiting >= MAX_LOGINS_WAITING:
        limiter.release(username, address)  # not judged: no failure to count
        raise HTTPProblem(429, "too many logins at once; try again in a second", headers={"Retry-After": "1"})
    ok = await state.hashing.run(verify_password, password, stored or state.dummy_hash)
    if ok and stored:
        limiter.release(username, address)
    else:
        raise HTTPProblem(400, "incorrect username or password")
    return json_response({"access_token": state.signer.issue(username), "token_type": "bearer"})


async def _credentials(request: Request) -> tuple[str, str]:
    """The ``username`` and ``password`` of a form-encoded (or multipart) login body; a 422 otherwise."""
    body = await read_body(request, MAX_LOGIN_BODY)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        fields = await form_fields(request, body)
    else:
        try:
            fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise HTTPProblem(422, "the form is not valid UTF-8") from None
    username, password = fields.get("username"), fields.get("password")
    if not username or password is None:
        raise HTTPProblem(422, "form fields 'username' and 'password' are required (application/x-www-form-urlencoded)")
    if not isinstance(username, str) or not isinstance(password, str):
        raise HTTPProblem(422, "username and password must be text fields")
    return username, password
